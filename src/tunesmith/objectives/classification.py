"""Sequence classification: batch shape, summed loss, predictions and metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.errors import DataError


def handle_overlength(records: list[dict], over: list[int], policy: str, max_length: int, objective) -> list[int]:
    """Apply the over-length policy; returns the indices of the rows to keep.

    Raises:
        DataError: ``policy == "raise"`` and some rows are longer than ``max_length`` tokens.
    """
    where = [records[i].get("_where", f"row {i + 1}") for i in over]
    objective.overlength_report = {"policy": policy, "rows": len(over), "max_length": max_length,
                                   "examples": where[:5]}
    if over and policy == "raise":
        raise DataError(
            f"{len(over)} rows are longer than data.max_length={max_length} tokens ({'; '.join(where[:5])}).",
            "Raise data.max_length, or set data.on_overlength to truncate or drop.",
        )
    dropped = set(over) if policy == "drop" else set()
    return [i for i in range(len(records)) if i not in dropped]


class ClassificationObjective:
    """Turns ``{"text", "label"}`` records into padded batches and scores a classifier."""

    task = "classification"

    def __init__(self, tokenizer, labels: list[str], max_length: int, overlength: str = "truncate",
                 label_smoothing: float = 0.0):
        self.tokenizer = tokenizer
        self.label_smoothing = label_smoothing  # training only: evaluation scores plain CE
        self.labels = labels
        self.label2id = {label: i for i, label in enumerate(labels)}
        self.max_length = max_length
        self.overlength = overlength
        self.overlength_report: dict = {}

    def encode(self, records: list[dict]) -> list[dict]:
        """Tokenize all records in one batched call (fast tokenizers parallelise it).

        Rows longer than ``max_length`` tokens are truncated, dropped or an error, as
        ``overlength`` says; ``overlength_report`` counts them.
        """
        encoded = self._tokenize(records, self.max_length + 1)  # one token of headroom marks the too-long rows
        over = [i for i, row in enumerate(encoded) if len(row["input_ids"]) > self.max_length]
        keep = handle_overlength(records, over, self.overlength, self.max_length, self)
        if over and self.overlength == "truncate":
            for i, row in zip(over, self._tokenize([records[i] for i in over], self.max_length)):
                encoded[i] = row
        return [dict(encoded[i], label=self.label2id[records[i]["label"]]) for i in keep]

    def _tokenize(self, records: list[dict], max_length: int) -> list[dict]:
        """``{"input_ids"}`` per record; rows with a ``text_pair`` are encoded as sentence
        pairs ([CLS] a [SEP] b [SEP], longer side truncated first) with their segment ids."""
        out: list[dict] = [{} for _ in records]
        for has_pair in (False, True):
            idx = [i for i, r in enumerate(records) if ("text_pair" in r) == has_pair]
            if not idx:
                continue
            texts = [records[i]["text"] for i in idx]
            pairs = [records[i]["text_pair"] for i in idx] if has_pair else None
            enc = self.tokenizer(texts, pairs, truncation="longest_first" if has_pair else True, max_length=max_length)
            segments = enc.get("token_type_ids") if has_pair else None
            for k, i in enumerate(idx):
                out[i] = {"input_ids": list(enc["input_ids"][k])}
                if segments is not None:
                    out[i]["token_type_ids"] = list(segments[k])
        return out

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of the batch (not to max_length: most sentences are short)."""
        width = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        segments = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
            if "token_type_ids" in f:
                segments[i, : len(f["input_ids"])] = torch.tensor(f["token_type_ids"])
        labels = torch.tensor([f["label"] for f in features], dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if any("token_type_ids" in f for f in features):  # sentence pairs: which side each token is on
            batch["token_type_ids"] = segments
        return batch

    @staticmethod
    def model_inputs(batch: dict) -> dict:
        return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}

    def count_targets(self, batch) -> int:
        """Examples in the batch: the unit the loss is averaged over."""
        return int(batch["labels"].numel())

    def loss_sum(self, model, batch) -> torch.Tensor:
        """Summed cross-entropy over the batch.

        A sum (not a mean) lets the loop divide by the example count of the whole
        accumulation window, so batch 8 x accum 1 and batch 2 x accum 4 match exactly.
        """
        logits = model(**self.model_inputs(batch)).logits
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum",
                               label_smoothing=self.label_smoothing if getattr(model, "training", False) else 0.0)

    @torch.inference_mode()
    def predict(self, model, features: list[dict], batch_size: int, device) -> torch.Tensor:
        """Class probabilities for ``features`` (in order)."""
        model.eval()
        probs = []
        # Sorting by length keeps padding small; the order is restored afterwards.
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.collate([features[i] for i in idx])
            logits = model(**{k: v.to(device) for k, v in self.model_inputs(batch).items()}).logits
            probs.append(torch.softmax(logits.float(), -1).cpu())
        out = torch.cat(probs)
        restored = torch.empty_like(out)
        restored[torch.tensor(order)] = out
        return restored

    def outputs(self, model, features: list[dict], batch_size: int, device) -> dict:
        """What the metrics are computed from: class probabilities, predicted and gold label
        ids, and the mean cross-entropy (``tunesmith.eval.evaluate`` turns them into metrics)."""
        probs = self.predict(model, features, batch_size, device)
        gold = torch.tensor([f["label"] for f in features])
        return {"probs": probs, "pred": probs.argmax(-1).tolist(), "gold": gold.tolist(),
                "num_labels": len(self.labels),
                "loss": float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), gold))}
