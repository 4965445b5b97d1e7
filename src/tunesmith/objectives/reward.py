"""Reward model: a one-output sequence classifier trained on preference pairs.

Each pair is rendered twice -- the prompt followed by the chosen answer, and by the
rejected one -- and the model's single output is the reward of the whole text. The
Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)`` (InstructGPT's
reward model; the optional margin as in Llama 2's) pushes chosen above rejected.
Chat models see the conversation through their chat template, as in SFT; encoder
models see ``[CLS] prompt [SEP] answer [SEP]``. When a pair is too long the prompt is
cut from its start, so the answer being judged is kept whole.

With ``padding_free`` a decoder reward model reads each pair as one row: the part the
two texts share (the prompt) once, then each answer attending to it and to itself
(:mod:`tunesmith.objectives.shared_prompt`); each reward is the score head's output at
its answer's last token, as the separate row's would be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from transformers.modeling_layers import GenericForSequenceClassification

from tunesmith.data.preference_rows import require_pairs
from tunesmith.data.template import answer_ids, fit_answer
from tunesmith.objectives.classification import handle_overlength
from tunesmith.objectives.shared_prompt import MASK_KINDS, attention_kind, attention_mask_for, pair_rows


class RewardObjective:
    """Turns ``{"prompt", "chosen", "rejected"}`` records into paired batches and scores a reward model."""

    task = "reward"
    labels = ["reward"]  # the head's single output

    def __init__(self, tokenizer, max_length: int, system_prompt: str | None = None, overlength: str = "truncate",
                 margin: float = 0.0, padding_free: bool = False):
        self.tokenizer = tokenizer
        self.padding_free = padding_free  # batches also carry the pairs as shared-prompt rows
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

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Chosen rows first, then the rejected rows in the same order, right-padded: row
        ``i`` and row ``i + pairs`` are one pair."""
        chosen, rejected = [f["chosen_ids"] for f in features], [f["rejected_ids"] for f in features]
        ids, mask = self._padded(chosen + rejected)
        batch = {"input_ids": ids, "attention_mask": mask, "num_examples": torch.tensor(len(features))}
        if self.padding_free:  # used where the model can read them (see rewards)
            batch.update({f"shared_{k}": v for k, v in pair_rows(chosen, rejected, self._pad_id()).items()})
        return batch

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True,
                           padding_value=self._pad_id())
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
        head = shared_score_head(model) if "shared_input_ids" in batch else None
        if head is not None:
            scores = _scores_at_answer_ends(model, head, batch)
            return scores[0::2], scores[1::2]
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



def shared_score_head(model):
    """The score head of ``model`` (PEFT- or DDP-wrapped or not) when it can read
    shared-prompt rows, else None: a causal decoder's sequence classifier (transformers'
    generic one scores every token, then pools the last) whose attention takes a 4-D mask,
    without virtual prompt tokens."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    if config is not None and getattr(config, "is_prompt_learning", False):
        return None
    base = model
    while not isinstance(base, GenericForSequenceClassification):
        inner = getattr(base, "module", None) or getattr(base, "_orig_mod", None)
        if inner is None and hasattr(base, "get_base_model"):
            inner = base.get_base_model()
        if inner is None or inner is base:
            return None
        base = inner
    return base.score if attention_kind(base) in MASK_KINDS else None


def _scores_at_answer_ends(model, head, batch) -> torch.Tensor:
    """Each answer's reward from one pass over shared-prompt rows: the head's output at
    the answer's last token (read by a hook; the model's own pooling is for padded rows)."""
    seen = []
    handle = head.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        model(input_ids=batch["shared_input_ids"], position_ids=batch["shared_position_ids"],
              attention_mask=attention_mask_for(model, batch["shared_attention_mask"]))
    finally:
        handle.remove()
    ends = batch["shared_answer_ends"]
    return seen[-1][ends[:, 0], ends[:, 1], 0].float()
