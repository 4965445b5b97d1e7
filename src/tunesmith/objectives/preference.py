"""Preference tuning of a causal LM: DPO, IPO, ORPO, SimPO (pairs) and KTO (unpaired).

A pair is rendered as SFT renders a chat -- the prompt through the chat template, then
each answer -- and the policy's log-probability of each answer is summed over the
answer's tokens only (averaged per token for the losses that length-normalise). A batch
holds the chosen rows, then the rejected rows (KTO: each answer, then its mismatched
"KL" answer), so one forward pass scores both.

The reference model (DPO, IPO, KTO) is, in order of preference:

- log-probs computed once before training (``precompute_reference``, or a run that
  continues an adapter: its reference is that starting policy), carried in the batch;
- the policy itself with its adapters disabled (PEFT methods: no second copy in memory);
- a frozen copy of the starting model (``reference_model``: full and freeze runs).

The losses themselves are :mod:`tunesmith.objectives.preference_losses`.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from tunesmith.data.template import answer_ids
from tunesmith.data.preference_rows import require_pairs
from tunesmith.objectives import preference_losses as losses
from tunesmith.objectives.causal_lm import supports_logits_to_keep
from tunesmith.objectives.classification import handle_overlength
from tunesmith.objectives.shared_prompt import pack_shared_prompts, per_answer_sums, shared_prompt_logps
from tunesmith.objectives.step_stats import StepStats


# Above this many tokens a batch is right-padded rather than packed (see collate).
PACKED_TOKENS_MAX = 2048


class PreferenceObjective:
    """Turns preference records into batches of answers and computes the chosen loss."""

    task = "preference"

    def __init__(self, tokenizer, max_length: int, settings, system_prompt: str | None = None,
                 overlength: str = "truncate", padding_free: bool = False):
        self.tokenizer = tokenizer
        # Each micro-batch as one row of its answers back to back (see ``collate``).
        self.padding_free = padding_free
        self.max_length = max_length
        self.settings = settings  # the recipe's preference section
        self.loss = settings.loss
        self.system_prompt = system_prompt
        self.overlength = overlength
        self.overlength_report: dict = {}
        self.reference_model = None  # a frozen copy, when the policy cannot switch its adapters off
        self.step_stats = StepStats()

    @property
    def uses_reference(self) -> bool:
        return losses.USES_REFERENCE[self.loss]

    @property
    def paired(self) -> bool:
        return self.loss != "kto"

    # ------------------------------------------------------------------ encoding

    def encode(self, records: list[dict]) -> list[dict]:
        """Token ids per example: ``{"prompt", "chosen", "rejected"}`` for the paired losses,
        ``{"prompt", "completion", "kl_completion", "desirable"}`` for KTO (a pair gives a
        desirable and an undesirable example; each answer's KL partner is another row's
        answer). An answer that leaves no room for its prompt follows the over-length
        policy; a long prompt loses its start.

        Raises:
            DataError: a paired loss given unpaired rows (the row is named).
        """
        if self.paired:
            require_pairs(records, f"preference.loss {self.loss}")
            items = [(r, [self._render(r["prompt"], r["chosen"]), self._render(r["prompt"], r["rejected"])])
                     for r in records]
        else:
            rows = unpair(records)
            rendered = [self._render(r["prompt"], r["completion"]) for r in rows]
            # The KL partner: the next row's answer (chosen answers come first, then rejected
            # ones, so the neighbour answers another prompt wherever there are several).
            items = [(r, [rendered[i], (rendered[i][0], rendered[(i + 1) % len(rows)][1])])
                     for i, r in enumerate(rows)]
        over = [i for i, (_, parts) in enumerate(items) if any(len(a) >= self.max_length for _, a in parts)]
        keep = handle_overlength([r for r, _ in items], over, self.overlength, self.max_length, self)
        return [self._feature(*items[i]) for i in keep]

    def _render(self, prompt, answer) -> tuple[list[int], list[int]]:
        return answer_ids(self.tokenizer, prompt, answer, self.system_prompt)

    def _feature(self, record: dict, parts: list[tuple[list[int], list[int]]]) -> dict:
        # At least one prompt token stays: the first answer token is predicted from it.
        answers = [a[: self.max_length - 1] for _, a in parts]
        room = self.max_length - max(len(a) for a in answers)
        prompt = parts[0][0][-room:] if parts[0][0] else [self._bos()]
        if self.paired:
            return {"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}
        return {"prompt": prompt, "completion": answers[0], "kl_completion": answers[1],
                "desirable": int(record["label"])}

    def _bos(self) -> int:
        tok = self.tokenizer
        return next(t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, 0) if t is not None)

    # ------------------------------------------------------------------ batches

    def answer_keys(self) -> tuple[str, str]:
        """The two answers of a feature that share one batch: chosen/rejected, or KTO's answer and its KL partner."""
        return ("chosen", "rejected") if self.paired else ("completion", "kl_completion")

    @property
    def pads_batches(self) -> bool:
        """Whether batches are padded (so grouping examples by length saves compute)."""
        return not self.padding_free

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Prompt + first answer for every feature, then prompt + second answer, right-padded;
        ``answer_mask`` marks the answer tokens. Precomputed reference log-probs ride along.

        ``padding_free``: the micro-batch is one row holding each feature's prompt once and
        then its two answers, each answer attending to its prompt and itself
        (:mod:`tunesmith.objectives.shared_prompt`): no compute on padding or on a second
        copy of the prompt, and the LM head runs on answer tokens only. Only up to
        ``PACKED_TOKENS_MAX`` tokens: the row's attention is masked but still computed over
        the whole row, which outgrows what it saves on large (evaluation, reference) batches.
        """
        first, second = self.answer_keys()
        n = len(features)
        if self.padding_free and sum(map(_row_tokens, features)) <= PACKED_TOKENS_MAX:
            batch = pack_shared_prompts([[(f["prompt"], [f[first], f[second]]) for f in features]], self._pad())
            # Answers are numbered first_0, second_0, first_1, ...: all first answers first, as padded.
            number = batch["target_answers"]
            batch["target_answers"] = torch.where(number % 2 == 0, number // 2, n + number // 2)
        else:
            rows = [f["prompt"] + f[first] for f in features] + [f["prompt"] + f[second] for f in features]
            ids = pad_sequence([torch.tensor(r) for r in rows], batch_first=True, padding_value=self._pad())
            mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True)
            answer = mask.clone()
            for i, start in enumerate([len(f["prompt"]) for f in features] * 2):
                answer[i, :start] = 0
            # Positions whose next token is an answer token, found on the host (see answer_logps).
            batch = {"input_ids": ids, "attention_mask": mask, "answer_mask": answer,
                     "target_positions": answer[:, 1:].any(0).nonzero().squeeze(1)}
        batch["num_examples"] = torch.tensor(n)
        if not self.paired:
            batch["desirable"] = torch.tensor([bool(f["desirable"]) for f in features])
        if "ref" in features[0]:
            batch["ref"] = torch.tensor([f["ref"][0] for f in features] + [f["ref"][1] for f in features],
                                        dtype=torch.float64)
        return batch

    def _pad(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @staticmethod
    def feature_length(feature: dict) -> int:
        """Tokens of one feature's two rows (the loop groups features of similar length)."""
        second = "rejected" if "rejected" in feature else "kl_completion"
        first = "chosen" if "chosen" in feature else "completion"
        return 2 * len(feature["prompt"]) + len(feature[first]) + len(feature[second])

    def count_targets(self, batch) -> int:
        """Pairs (KTO: examples) in the batch: the unit the loss is averaged over."""
        return int(batch["num_examples"])

    # ------------------------------------------------------------------ log-probs and losses

    @staticmethod
    def answer_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the summed log-probability of its answer tokens and their count (:func:`answer_logps`)."""
        return answer_logps(model, batch)

    def reference_logps(self, model, batch) -> torch.Tensor:
        """Per row, the reference model's summed answer log-probability (no gradient)."""
        if "ref" in batch:
            return batch["ref"].float()
        with torch.no_grad():
            if self.reference_model is not None:
                return self.answer_logps(self.reference_model, batch)[0]
            with adapters_disabled(model):
                return self.answer_logps(model, batch)[0]

    def loss_terms(self, model, batch) -> tuple[torch.Tensor, dict]:
        """The summed loss over the batch's pairs (KTO: examples) and the implicit rewards
        (``beta`` x log-ratio, or x the length-averaged log-prob without a reference) the
        logs and metrics read."""
        s = self.settings
        sums, counts = self.answer_logps(model, batch)
        n = int(batch["num_examples"])
        # The log-ratio over the reference where the loss has one, else the policy's log-prob.
        logps = sums - self.reference_logps(model, batch) if self.uses_reference else sums
        scores = logps / counts.clamp(min=1) if losses.LENGTH_AVERAGED[self.loss] else logps
        first, second = scores[:n], scores[n:]
        stats: dict = {"lengths": counts[:n].detach()}
        if self.loss == "dpo":
            per = losses.dpo(first, second, s.beta, s.label_smoothing)
        elif self.loss == "ipo":
            per = losses.ipo(first, second, s.beta)
        elif self.loss == "simpo":
            per = losses.simpo(first, second, s.beta, s.simpo_gamma, s.label_smoothing)
        elif self.loss == "orpo":
            # ORPO's NLL is the token mean over the batch's chosen answers, as in TRL.
            nll = -sums[:n].sum() / counts[:n].sum().clamp(min=1)
            per = nll - s.orpo_lambda * losses.orpo_odds_term(first, second)
        else:
            kl = losses.kl_estimate(second)
            per = losses.kto(first, batch["desirable"], kl, s.beta, s.desirable_weight, s.undesirable_weight)
            stats["kl"] = float(kl)
        rewards = s.beta * first.detach()
        if self.paired:
            stats["rewards"] = (rewards, s.beta * second.detach())
        else:
            stats["rewards"] = (rewards[batch["desirable"]], rewards[~batch["desirable"]])
        return per.sum(), stats

    def loss_sum(self, model, batch) -> torch.Tensor:
        """Summed loss over the batch (the loop divides by the pairs of the window); the
        implicit rewards are kept for the next metrics line."""
        total, stats = self.loss_terms(model, batch)
        chosen, rejected = stats["rewards"]
        self.step_stats.note("rewards/chosen", chosen)
        self.step_stats.note("rewards/rejected", rejected)
        if self.paired:
            self.step_stats.note("rewards/margin", chosen - rejected)
            self.step_stats.note("rewards/accuracy", (chosen > rejected).float())
        if "kl" in stats:
            self.step_stats.note("kl", torch.tensor([stats["kl"]]))
        self.step_stats.note("completion_length", stats["lengths"])
        return total

    def drain_stats(self) -> dict:
        """Means of the training batches' rewards, margins and accuracy since the last call."""
        return self.step_stats.drain()

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def outputs(self, model, features: list[dict], batch_size: int, device) -> dict:
        """The implicit rewards of the chosen and rejected answers (KTO: of the desirable and
        the undesirable ones, ``unpaired``) and the mean loss -- what ``pairwise_accuracy``,
        ``mean_margin`` and ``eval_loss`` read."""
        model.eval()
        chosen, rejected, total = [], [], 0.0
        for part in self.packable_parts(features, batch_size):
            batch = {k: v.to(device) for k, v in self.collate(part).items()}
            loss, stats = self.loss_terms(model, batch)
            total += float(loss)
            chosen += stats["rewards"][0].cpu().tolist()
            rejected += stats["rewards"][1].cpu().tolist()
        return {"chosen": chosen, "rejected": rejected, "unpaired": not self.paired,
                "loss": total / len(features) if features else float("nan")}

    def packable_parts(self, features: list[dict], batch_size: int):
        """``features`` in order, in parts of at most ``batch_size`` whose shared-prompt row
        holds at most ``PACKED_TOKENS_MAX`` tokens (a single feature may exceed it):
        evaluation batches then stay packed, with the LM head on answer tokens only."""
        part, tokens = [], 0
        for feature in features:
            size = _row_tokens(feature)
            if part and (len(part) == batch_size or tokens + size > PACKED_TOKENS_MAX):
                yield part
                part, tokens = [], 0
            part.append(feature)
            tokens += size
        if part:
            yield part

    @torch.inference_mode()
    def precompute_reference(self, model, features: list[dict], batch_size: int, device) -> list[list[float]]:
        """Each feature's two reference log-probs, computed once with ``model`` (the starting policy)."""
        model.eval()
        out = []
        for part in self.packable_parts(features, batch_size):
            batch = {k: v.to(device) for k, v in self.collate([{k: v for k, v in f.items() if k != "ref"}
                                                               for f in part]).items()}
            logps = self.answer_logps(model, batch)[0].double().cpu().tolist()
            out += [[logps[i], logps[i + len(part)]] for i in range(len(part))]
        return out


    def answer(self, model, prompts: list, max_new_tokens: int, device) -> list[str]:
        """Greedy answers to the probes, rendered as in training (see ``CausalLMObjective.answer``)."""
        from tunesmith.objectives.causal_lm import CausalLMObjective

        return CausalLMObjective(self.tokenizer, self.max_length, self.system_prompt).answer(
            model, prompts, max_new_tokens, device)


def answer_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per answer of ``batch`` (all first answers, then all second ones), the summed
    log-probability of its tokens and their count: over ``answer_mask`` of padded rows
    (see :func:`answer_token_logps`), or over a shared-prompt row's answer tokens."""
    if "target_answers" in batch:
        return per_answer_sums(shared_prompt_logps(model, batch), batch, 2 * int(batch["num_examples"]))
    token_logps, answer, _ = answer_token_logps(model, batch)
    return (token_logps * answer).sum(1), answer.sum(1)


def answer_token_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The log-probability of each next token, the mask of those that are answer tokens,
    and the positions kept (None: all), over the positions where some row predicts an
    answer token.

    The LM head runs only where some row's next token is an answer token
    (``logits_to_keep``), as in SFT; prompt-learning models predict from every position
    after their virtual tokens. ``position_ids``, when the batch has them (left-padded
    prompts), are passed on."""
    ids, answer = batch["input_ids"], batch["answer_mask"][:, 1:]
    targets = ids[:, 1:]
    inputs = {"input_ids": ids, "attention_mask": batch["attention_mask"], "use_cache": False}
    if "position_ids" in batch:
        inputs["position_ids"] = batch["position_ids"]
    keep = None
    if supports_logits_to_keep(model):
        keep = batch.get("target_positions")
        if keep is None:
            keep = answer.any(0).nonzero().squeeze(1)
        logits = model(**inputs, logits_to_keep=keep).logits
        targets, answer = targets[:, keep], answer[:, keep]
    else:
        logits = model(**inputs).logits
        logits = logits[:, -ids.shape[1] :][:, :-1]
    token_logps = -F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   reduction="none").view_as(targets)
    return token_logps, answer, keep


def _row_tokens(feature: dict) -> int:
    """Tokens of one feature in a shared-prompt row: its prompt once and both answers."""
    answers = ("chosen", "rejected") if "chosen" in feature else ("completion", "kl_completion")
    return len(feature["prompt"]) + sum(len(feature[key]) for key in answers)


def unpair(records: list[dict]) -> list[dict]:
    """KTO's rows: unpaired rows as they are; each pair as a desirable chosen answer and an
    undesirable rejected one (all chosen answers first, then all rejected ones)."""
    single = [r for r in records if "completion" in r]
    pairs = [r for r in records if "chosen" in r]
    return (single + [dict(r, completion=r["chosen"], label=True) for r in pairs]
            + [dict(r, completion=r["rejected"], label=False) for r in pairs])


@contextlib.contextmanager
def adapters_disabled(model):
    """The PEFT model inside ``model`` (compiled or wrapped for DDP) with its adapters off.

    A model without adapters is left as it is: that is the base before the method wraps it
    (the "before" evaluation), its own reference. Full and freeze runs never get here: they
    have a ``reference_model``."""
    inner = model
    while inner is not None and not hasattr(inner, "disable_adapter"):
        inner = getattr(inner, "_orig_mod", None) or getattr(inner, "module", None)
    if inner is None:
        yield
        return
    with inner.disable_adapter():
        yield
