"""Reward model: a one-output sequence classifier trained on preference pairs.

Each pair is rendered twice -- the prompt followed by the chosen answer, and by the
rejected one -- and the model's single output is the reward of the whole text. The
Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)`` (InstructGPT's
reward model; the optional margin as in Llama 2's) pushes chosen above rejected.
Chat models see the conversation through their chat template, as in SFT; encoder
models see ``[CLS] prompt [SEP] answer [SEP]``. When a pair is too long the prompt is
cut from its start, so the answer being judged is kept whole.

Decoder reward models (a ``score`` head reading each row's last token) can train padding
free, as SFT and DPO do: a micro-batch's rows go back to back in one row with restarting
position ids (transformers keeps attention within each row), the head runs at every
position, and each row's reward is read at its own last token. No compute goes to
padding, and the rewards are the padded batch's (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from tunesmith.data.preference_rows import require_pairs
from tunesmith.data.template import answer_ids, fit_answer
from tunesmith.objectives.classification import handle_overlength
from tunesmith.objectives.preference import PACKED_TOKENS_MAX


class RewardObjective:
    """Turns ``{"prompt", "chosen", "rejected"}`` records into paired batches and scores a reward model."""

    task = "reward"
    labels = ["reward"]  # the head's single output

    def __init__(self, tokenizer, max_length: int, system_prompt: str | None = None, overlength: str = "truncate",
                 margin: float = 0.0, padding_free: bool = False):
        self.tokenizer = tokenizer
        # Only chat models (read through their template, as decoders) are packed: encoders read
        # [CLS] and attend both ways. (A model without a score head falls back to padding in rewards().)
        self.padding_free = padding_free and bool(getattr(tokenizer, "chat_template", None))
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.overlength = overlength
        self.margin = margin
        self.overlength_report: dict = {}

    def encode(self, records: list[dict]) -> list[dict]:
        """``{"chosen_ids", "rejected_ids"}`` per pair. A pair whose answer alone does not fit
        in ``max_length`` tokens follows the over-length policy (``overlength_report``
        counts them); a long prompt is cut from its start."""
        require_pairs(records, "A reward model")
        rendered = [(self.render(r["prompt"], r["chosen"]), self.render(r["prompt"], r["rejected"])) for r in records]
        over = [i for i, pair in enumerate(rendered) if any(len(answer) > self.max_length for _, answer in pair)]
        keep = handle_overlength(records, over, self.overlength, self.max_length, self)
        return [{"chosen_ids": self._fit(*rendered[i][0]), "rejected_ids": self._fit(*rendered[i][1])} for i in keep]

    def render(self, prompt, answer) -> tuple[list[int], list[int]]:
        """Token ids of the prompt part and of the answer part of one conversation
        (strings or message lists, as the preference validator returns them)."""
        return answer_ids(self.tokenizer, prompt, answer, self.system_prompt)

    def _fit(self, prompt_ids: list[int], answer: list[int]) -> list[int]:
        return fit_answer(prompt_ids, answer, self.max_length)

    @property
    def pads_batches(self) -> bool:
        """Whether batches are padded (so grouping pairs by length saves compute)."""
        return not self.padding_free

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Chosen rows first, then the rejected rows in the same order, right-padded: row
        ``i`` and row ``i + pairs`` are one pair. ``padding_free`` (up to
        ``PACKED_TOKENS_MAX`` tokens) adds the rows back to back (``packed_ids``,
        ``packed_positions``) and where each row's reward is read (``reward_positions``)."""
        rows = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
        ids, mask = self._padded(rows)
        batch = {"input_ids": ids, "attention_mask": mask, "num_examples": torch.tensor(len(features))}
        if self.padding_free and sum(map(len, rows)) <= PACKED_TOKENS_MAX:
            batch.update(self._packed(rows))
        return batch

    def _packed(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        ids, positions, reads = [], [], []
        for row in rows:
            # Where a padded batch's head reads the row (transformers' sequence classifiers):
            # its last token that is not the pad token, so both ways give the same reward
            # even when the pad token is the EOS that ends each row.
            last = max((i for i, token in enumerate(row) if token != pad), default=0) if pad is not None else len(row) - 1
            reads.append(len(ids) + last)
            ids += row
            positions += range(len(row))
        return {"packed_ids": torch.tensor([ids]), "packed_positions": torch.tensor([positions]),
                "reward_positions": torch.tensor(reads)}

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=pad)
        mask = pad_sequence([torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True)
        return ids, mask

    @staticmethod
    def feature_length(feature: dict) -> int:
        """Tokens of one pair (the loop groups pairs of similar length into batches)."""
        return len(feature["chosen_ids"]) + len(feature["rejected_ids"])

    @staticmethod
    def model_inputs(batch: dict) -> dict:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def count_targets(self, batch) -> int:
        """Pairs in the batch: the unit the loss is averaged over."""
        return int(batch["num_examples"])

    def rewards(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The rewards of the chosen and of the rejected answers of ``batch``."""
        head = score_head(model) if "packed_ids" in batch else None
        if head is not None:
            scores = _packed_scores(model, head, batch)
        else:
            scores = model(**self.model_inputs(batch)).logits[:, 0].float()
        pairs = int(batch["num_examples"])
        return scores[:pairs], scores[pairs:]

    def loss_sum(self, model, batch) -> torch.Tensor:
        """Summed Bradley-Terry loss over the batch's pairs (the loop divides by the pairs
        of the whole accumulation window)."""
        chosen, rejected = self.rewards(model, batch)
        return -F.logsigmoid(chosen - rejected - self.margin).sum()

    @torch.inference_mode()
    def outputs(self, model, features: list[dict], batch_size: int, device) -> dict:
        """Per pair, the chosen and rejected rewards (in order), and the mean loss: what the
        reward metrics (``pairwise_accuracy``, ``mean_margin``, ``eval_loss``) read."""
        model.eval()
        chosen, rejected = [], []
        for start in range(0, len(features), batch_size):
            batch = self.collate(features[start : start + batch_size])
            c, r = self.rewards(model, {k: v.to(device) for k, v in batch.items()})
            chosen += c.cpu().tolist()
            rejected += r.cpu().tolist()
        margins = torch.tensor(chosen) - torch.tensor(rejected)
        return {"chosen": chosen, "rejected": rejected,
                "loss": float(-F.logsigmoid(margins - self.margin).mean()) if chosen else float("nan")}

    @torch.inference_mode()
    def score(self, model, prompt, answers: list, device="cpu") -> list[float]:
        """The reward of each answer to ``prompt``."""
        model.eval()
        ids, mask = self._padded([self._fit(*self.render(prompt, answer)) for answer in answers])
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu().tolist()


def score_head(model) -> torch.nn.Module | None:
    """The ``score`` head of a decoder sequence classifier (through PEFT's wrappers: the
    outermost module of that name), or None for other models (encoders pool [CLS])."""
    heads = [(name.count("."), module) for name, module in model.named_modules() if name.split(".")[-1] == "score"]
    return min(heads, key=lambda pair: pair[0])[1] if heads else None


def _packed_scores(model, head: torch.nn.Module, batch: dict) -> torch.Tensor:
    # The head's output at every position of the packed row (the model's own pooled output
    # reads only the row's end); no attention mask, so the restarting positions separate rows.
    outputs = []
    hook = head.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        model(input_ids=batch["packed_ids"], position_ids=batch["packed_positions"], use_cache=False)
    finally:
        hook.remove()
    return outputs[-1][0, batch["reward_positions"], 0].float()
