"""Online RL with GRPO (Shao et al. 2024): sample, score, push up what beat its group.

For each prompt of a micro-batch the policy samples ``num_generations`` answers (batched,
with the KV cache); the reward registry (:mod:`tunesmith.objectives.rewards`) scores them;
each answer's advantage is its reward minus its group's mean, over the group's standard
deviation. The loss is the clipped surrogate ``-min(rho A, clip(rho, 1-eps, 1+eps) A)``
per answer token, plus ``kl_beta`` x the k3 estimate of the KL to the reference, summed
over answer tokens; the loop divides by the answer tokens of the whole window (TRL's
default "dapo" aggregation). With one update per sample, ``rho`` is 1 in value and the
gradient is the policy gradient, as in TRL's default ``num_iterations=1``.

Sampling happens in :meth:`GrpoObjective.rollout`, which the loop calls on each
micro-batch before it counts the targets; it uses the global torch generator, which
checkpoints save, so a resumed run samples what the uninterrupted one did.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from tunesmith.data.template import render_prompt, with_system_prompt
from tunesmith.eval.generate import stop_token_ids
from tunesmith.objectives.classification import handle_overlength
from tunesmith.objectives.step_stats import StepStats
from tunesmith.objectives.preference import adapters_disabled, answer_token_logps
from tunesmith.objectives.rewards import build_rewards, total_rewards
from tunesmith.objectives.shared_prompt import pack_shared_prompts, shared_prompt_logps, supports_shared_prompts


def until_stop(answers: torch.Tensor, stops: list[int]) -> torch.Tensor:
    """1 for each answer token up to and including its first stop token (kept: the model
    learns to stop), 0 after it (generate's padding of rows that finished early)."""
    is_stop = torch.isin(answers, torch.tensor(stops, device=answers.device))
    return ((is_stop.cumsum(1) - is_stop.long()) == 0).long()


class GrpoObjective:
    """Prompt rows in; sampled answers, their rewards and the GRPO loss out."""

    task = "grpo"
    # The surrogate's value swings around zero with each sample's advantages: the guard
    # judges only non-finite losses and gradients, not spikes.
    loss_spikes_are_trouble = False

    def __init__(self, tokenizer, max_length: int, settings, system_prompt: str | None = None,
                 overlength: str = "truncate", padding_free: bool = False):
        self.tokenizer = tokenizer
        # Each group trains as one row: its prompt once, then its answers (objectives/shared_prompt.py).
        self.padding_free = padding_free
        self.max_length = max_length  # of the prompt; answers add up to settings.max_new_tokens
        self.settings = settings
        self.system_prompt = system_prompt
        self.overlength = overlength
        self.overlength_report: dict = {}
        self.reference_model = None  # a frozen copy for full/freeze runs with kl_beta > 0
        self._scorers = None
        self.step_stats = StepStats()

    @property
    def uses_reference(self) -> bool:
        return self.settings.kl_beta > 0

    @property
    def scorers(self):
        if self._scorers is None:  # model-based rewards load on first use, not when data is prepared
            self._scorers = build_rewards(self.settings.rewards)
        return self._scorers

    # ------------------------------------------------------------------ encoding

    def encode(self, records: list[dict]) -> list[dict]:
        """Per row: the prompt's token ids (through the chat template, up to the last user
        turn, cut from its start to ``max_length``), the question (that last user turn) and
        the reference answer when the row has one, as token ids."""
        rendered = []
        for r in records:
            messages = r["messages"]
            reference = messages[-1]["content"] if messages[-1]["role"] == "assistant" else None
            prompt = messages[:-1] if reference is not None else messages
            text = render_prompt(self.tokenizer, with_system_prompt(prompt, self.system_prompt))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            rendered.append((ids, prompt[-1]["content"], reference))
        over = [i for i, (ids, _, _) in enumerate(rendered) if len(ids) > self.max_length]
        keep = handle_overlength(records, over, self.overlength, self.max_length, self)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        return [{"input_ids": rendered[i][0][-self.max_length :], "question_ids": encode(rendered[i][1]),
                 "reference_ids": encode(rendered[i][2]) if rendered[i][2] is not None else [],
                 "has_reference": int(rendered[i][2] is not None)} for i in keep]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Left-padded prompts (ready to generate from), and the questions and references as padded ids."""
        pad = self._pad()
        prompts = [torch.tensor(f["input_ids"]) for f in features]
        ids = pad_sequence(prompts, batch_first=True, padding_value=pad, padding_side="left")
        mask = pad_sequence([torch.ones(len(p), dtype=torch.long) for p in prompts], batch_first=True,
                            padding_side="left")
        batch = {"input_ids": ids, "attention_mask": mask, "num_examples": torch.tensor(len(features)),
                 "has_reference": torch.tensor([f["has_reference"] for f in features])}
        for key in ("question_ids", "reference_ids"):
            batch[key] = pad_sequence([torch.tensor(f[key] or [pad], dtype=torch.long) for f in features],
                                      batch_first=True, padding_value=-1)
        return batch

    def _pad(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def count_targets(self, batch) -> int:
        """Answer tokens of the sampled answers (after :meth:`rollout`)."""
        return len(batch["target_ids"]) if "target_ids" in batch else int(batch["answer_mask"].sum())

    # ------------------------------------------------------------------ sampling and rewards

    @torch.no_grad()
    def sample(self, model, batch, generations: int, greedy: bool = False) -> dict:
        """``generations`` answers per prompt of ``batch``: prompt + answer rows with
        ``answer_mask`` (answer tokens up to and including the stop token), ``position_ids``
        and the decoded answers."""
        was_training = model.training
        model.eval()
        s = self.settings
        prompts = batch["input_ids"].repeat_interleave(generations, 0)
        mask = batch["attention_mask"].repeat_interleave(generations, 0)
        stops = sorted(stop_token_ids(model, self.tokenizer))
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": s.temperature,
                                                        "top_k": 0, "top_p": 1.0}
        out = model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=s.max_new_tokens,
                             eos_token_id=stops, pad_token_id=self._pad(), **sampling)
        model.train(was_training)
        answers = out[:, prompts.shape[1] :]
        answer_mask = until_stop(answers, stops)
        texts = self.tokenizer.batch_decode(answers.masked_fill(answer_mask == 0, self._pad()),
                                            skip_special_tokens=True)
        full_mask = torch.cat([mask, answer_mask], 1)
        return {"input_ids": out, "attention_mask": full_mask,
                "answer_mask": torch.cat([torch.zeros_like(mask), answer_mask], 1),
                "position_ids": (full_mask.cumsum(1) - 1).clamp(min=0),
                "answers": [t.strip() for t in texts]}

    def score(self, batch, answers: list[str], generations: int) -> tuple[torch.Tensor, dict]:
        """The reward of each answer (in the order of :meth:`sample`) and each entry's mean."""
        def text(row: torch.Tensor) -> str:
            return self.tokenizer.decode(row[row >= 0].tolist(), skip_special_tokens=True)

        questions = [text(q) for q in batch["question_ids"]]
        references = [text(r) if has else None for r, has in zip(batch["reference_ids"], batch["has_reference"])]
        expand = lambda values: [v for v in values for _ in range(generations)]  # noqa: E731
        return total_rewards(self.scorers, expand(questions), answers, expand(references))

    def rollout(self, model, batch) -> dict:
        """Sample each prompt's group, score it and attach the group-normalised advantages:
        the micro-batch the loss is computed on."""
        k = self.settings.num_generations
        device = next(model.parameters()).device
        batch = {key: v.to(device) for key, v in batch.items()}
        sampled = self.sample(model, batch, k)
        rewards, means = self.score(batch, sampled.pop("answers"), k)
        groups = rewards.view(-1, k)
        advantages = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
        self.step_stats.note("reward", rewards.tolist())
        self.step_stats.note("reward_std", groups.std(1).tolist())
        self.step_stats.note("completion_length", sampled["answer_mask"].sum(1).float().tolist())
        for name, value in means.items():
            self.step_stats.note(name, [value])
        if self.padding_free and supports_shared_prompts(model):
            sampled = self.shared_prompt_rows(batch, sampled, k)
        return {**sampled, "advantages": advantages.view(-1).float().to(device),
                "num_examples": torch.tensor(groups.numel())}

    def shared_prompt_rows(self, batch, sampled: dict, generations: int) -> dict:
        """The sampled rows repacked: per prompt one row, the prompt once and then its
        group's answers (up to and including their stop token), each answer attending to
        the prompt and itself -- the padded rows' loss for a fraction of the tokens."""
        width = batch["input_ids"].shape[1]
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"].cpu(),
                                                                    batch["attention_mask"].cpu())]
        answers = [row[width:][keep.bool()].tolist() for row, keep in zip(sampled["input_ids"].cpu(),
                                                                           sampled["answer_mask"][:, width:].cpu())]
        return pack_shared_prompts([[(prompt, answers[i * generations : (i + 1) * generations])]
                                    for i, prompt in enumerate(prompts)], self._pad())

    # ------------------------------------------------------------------ loss

    def loss_sum(self, model, batch) -> torch.Tensor:
        """The clipped surrogate (+ KL) summed over the answer tokens of the sampled rows."""
        s = self.settings
        logps, mask = _token_logps(model, batch)
        ratio = torch.exp(logps - logps.detach())  # 1: one update per sample (the old policy is this one)
        if "target_answers" in batch:  # shared-prompt rows: one value per answer token
            advantages = batch["advantages"][batch["target_answers"]]
        else:
            advantages = batch["advantages"].unsqueeze(1)
        per_token = -torch.min(ratio * advantages, ratio.clamp(1 - s.epsilon, 1 + s.epsilon) * advantages)
        if self.uses_reference:
            with torch.no_grad():
                if self.reference_model is not None:
                    ref, _ = _token_logps(self.reference_model, batch)
                else:
                    with adapters_disabled(model):
                        ref, _ = _token_logps(model, batch)
            # k3 estimator of KL(policy || reference), per token (Schulman 2020), with its plain
            # gradient: TRL 1.16's default bias correction (KL x ratio) changes the gradient only.
            kl = torch.exp(ref - logps) - (ref - logps) - 1
            per_token = per_token + s.kl_beta * kl
            self.step_stats.note("kl", [float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))])
        return (per_token * mask).sum()

    def drain_stats(self) -> dict:
        """Means of the sampled rewards, their group spread, answer lengths and KL since the last call."""
        return self.step_stats.drain()

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def outputs(self, model, features: list[dict], batch_size: int, device) -> dict:
        """Greedy answers to the held-out prompts and their rewards: what ``mean_reward`` reads."""
        rewards, lengths = [], []
        for start in range(0, len(features), batch_size):
            batch = {k: v.to(device) for k, v in self.collate(features[start : start + batch_size]).items()}
            sampled = self.sample(model, batch, 1, greedy=True)
            values, _ = self.score(batch, sampled["answers"], 1)
            rewards += values.tolist()
            lengths += sampled["answer_mask"].sum(1).tolist()
        model.eval()
        return {"rewards": rewards, "lengths": lengths}

    def answer(self, model, prompts: list, max_new_tokens: int, device) -> list[str]:
        """Greedy answers to the probes, rendered as in training."""
        from tunesmith.objectives.causal_lm import CausalLMObjective

        return CausalLMObjective(self.tokenizer, self.max_length, self.system_prompt).answer(
            model, prompts, max_new_tokens, device)


def _token_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of each answer token and the mask of those that count: per
    padded row and position, or flat over a shared-prompt batch's answer tokens (all count)."""
    if "target_ids" in batch:
        logps = shared_prompt_logps(model, batch)
        return logps, torch.ones_like(logps)
    logps, mask, _ = answer_token_logps(model, batch)
    return logps, mask
