"""Continued pretraining on raw text: next-token loss on every token of every document.

Documents end with the tokenizer's EOS (so the model learns where text stops) and long
ones are cut into ``max_length`` chunks. With ``data.packing`` the chunks are packed into
rows with restarting position ids, so documents never attend to each other.
"""

from __future__ import annotations

import torch

from tunesmith.objectives.causal_lm import CausalLMObjective


class PretrainObjective(CausalLMObjective):
    """Raw ``{"text"}`` records; batching, loss and evaluation are the causal-LM ones."""

    task = "pretrain"

    def encode(self, records: list[dict]) -> list[dict]:
        """Token ids of each document + EOS, in chunks of at most ``max_length`` tokens.

        ``overlength_report`` counts the documents that needed more than one chunk
        (nothing is truncated away in pretraining).
        """
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        ids = self.tokenizer([r["text"] for r in records], add_special_tokens=True)["input_ids"]
        features, split = [], 0
        for row in ids:
            row = list(row) + eos
            split += len(row) > self.max_length
            for start in range(0, len(row), self.max_length):
                chunk = row[start : start + self.max_length]
                if len(chunk) > 1:  # a one-token chunk predicts nothing
                    features.append({"input_ids": chunk, "labels": chunk})
        self.overlength_report = {"policy": "chunk", "rows": split, "max_length": self.max_length, "examples": []}
        return features

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """Raw text prompts are continued as they are (no chat template)."""
        return self.tokenizer(prompt, return_tensors="pt")["input_ids"]
