"""Sequence classification: batch shape, summed loss, predictions and metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.eval.metrics import classification_metrics


class ClassificationObjective:
    """Turns ``{"text", "label"}`` records into padded batches and scores a classifier."""

    task = "classification"

    def __init__(self, tokenizer, labels: list[str], max_length: int):
        self.tokenizer = tokenizer
        self.labels = labels
        self.label2id = {label: i for i, label in enumerate(labels)}
        self.max_length = max_length

    def encode(self, records: list[dict]) -> list[dict]:
        """Tokenize all records in one batched call (fast tokenizers parallelise it)."""
        enc = self.tokenizer(
            [r["text"] for r in records], truncation=True, max_length=self.max_length
        )
        return [
            {"input_ids": ids, "label": self.label2id[r["label"]]}
            for ids, r in zip(enc["input_ids"], records)
        ]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of the batch (not to max_length: most sentences are short)."""
        width = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        labels = torch.tensor([f["label"] for f in features], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def count_targets(self, batch) -> int:
        """Examples in the batch: the unit the loss is averaged over."""
        return int(batch["labels"].numel())

    def loss_sum(self, model, batch) -> torch.Tensor:
        """Summed cross-entropy over the batch.

        A sum (not a mean) lets the loop divide by the example count of the whole
        accumulation window, so batch 8 x accum 1 and batch 2 x accum 4 match exactly.
        """
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum")

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
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            probs.append(torch.softmax(logits.float(), -1).cpu())
        out = torch.cat(probs)
        restored = torch.empty_like(out)
        restored[torch.tensor(order)] = out
        return restored

    def evaluate(self, model, features: list[dict], batch_size: int, device) -> dict:
        """Accuracy, macro-F1 and eval loss, plus the raw predictions for the report."""
        probs = self.predict(model, features, batch_size, device)
        gold = torch.tensor([f["label"] for f in features])
        metrics = classification_metrics(gold.tolist(), probs.argmax(-1).tolist(), len(self.labels))
        metrics["eval_loss"] = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), gold))
        metrics["_probs"] = probs.tolist()
        return metrics
