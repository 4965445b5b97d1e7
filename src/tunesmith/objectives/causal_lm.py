"""Causal-LM SFT on chats: loss only on assistant answers, eval loss/perplexity, probe answers."""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from tunesmith.data.history import history_report, shorten_history
from tunesmith.data.packing import concatenate
from tunesmith.data.template import IGNORE_INDEX, render_prompt, tokenize_chat, with_system_prompt
from tunesmith.eval.generate import greedy_without_cache, stop_token_ids, uses_deep_prompts
from tunesmith.objectives.classification import handle_overlength


class CausalLMObjective:
    """Turns ``{"messages"}`` records into padded batches with assistant-only labels."""

    task = "causal_lm"

    def __init__(self, tokenizer, max_length: int, system_prompt: str | None = None, overlength: str = "truncate",
                 last_turn_only: bool = False, head_on_targets: bool = True, padding_free: bool = False,
                 label_smoothing: float = 0.0, history="keep"):
        self.tokenizer = tokenizer
        self.history = history  # data.history: how over-long chats lose old exchanges
        self.history_report: dict = {}
        self.label_smoothing = label_smoothing  # training only: evaluation (model.eval()) scores plain CE
        self.head_on_targets = head_on_targets
        # Each micro-batch as one row of its examples back to back (see ``collate``).
        self.padding_free = padding_free
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.last_turn_only = last_turn_only
        self.overlength = overlength
        self.overlength_report: dict = {}

    def encode(self, records: list[dict]) -> list[dict]:
        """Render each chat with the tokenizer's template; drop chats whose answers were truncated away.

        ``history`` first shortens chats by dropping old exchanges (``history_report`` counts
        them); chats still longer than ``max_length`` tokens are truncated (on the right),
        dropped or an error, as ``overlength`` says; ``overlength_report`` counts them.
        """
        def tokenize(messages):
            return tokenize_chat(self.tokenizer, messages, self.max_length + 1, self.last_turn_only)

        def fits(messages) -> bool:
            return len(tokenize(messages)["input_ids"]) <= self.max_length

        chats = [with_system_prompt(r["messages"], self.system_prompt) for r in records]
        full = [tokenize(chat) for chat in chats]
        if self.history != "keep":
            dropped = []
            for i, chat in enumerate(chats):
                if self.history != "drop_oldest" or len(full[i]["input_ids"]) > self.max_length:
                    shorter, n = shorten_history(chat, self.history, fits)
                    if n:
                        full[i] = tokenize(shorter)
                    dropped.append(n)
            self.history_report = history_report(self.history, dropped)
        over = [i for i, f in enumerate(full) if len(f["input_ids"]) > self.max_length]
        features = []
        for i in handle_overlength(records, over, self.overlength, self.max_length, self):
            feature = {k: v[: self.max_length] for k, v in full[i].items()}
            if any(label != IGNORE_INDEX for label in feature["labels"]):
                features.append(feature)
        return features

    @property
    def pads_batches(self) -> bool:
        """Whether batches are padded (so grouping examples by length saves compute)."""
        return not self.padding_free

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest row. Packed rows (from ``pack_features``) also carry
        ``position_ids``; their padding gets positions of its own segment, which no real
        token can attend to (it comes last, and attention is causal).

        ``padding_free``: the examples are concatenated into one row with restarting
        position ids instead, so attention stays within each example (as for packed rows)
        and no compute is spent on padding; the loss is the padded batch's loss.
        """
        if self.padding_free and len(features) > 1:
            features = [concatenate(features)]
        width = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        packed = "position_ids" in features[0]
        positions = torch.arange(width).repeat(len(features), 1) if packed else None
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
            if packed:
                positions[i, :n] = torch.tensor(f["position_ids"])
                positions[i, n:] = torch.arange(width - n)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                 # Positions whose next token is trained, shared by the batch's rows; found here on
                 # the host, because nonzero() on a GPU would wait for the device.
                 "target_positions": (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(1)}
        if packed:
            batch["position_ids"] = positions
            batch["num_examples"] = torch.tensor(sum(f["num_examples"] for f in features))
        return batch

    def count_targets(self, batch) -> int:
        """Answer tokens that are predicted (labels shifted by one): the unit the loss is averaged over."""
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def loss_sum(self, model, batch) -> torch.Tensor:
        """Summed next-token loss over answer tokens.

        The loop divides by the token count of the whole accumulation window, so every
        answer token weighs the same however the examples are split into micro-batches.

        With ``head_on_targets`` the LM head runs only at positions whose next token is
        trained (``logits_to_keep``): prompts, system prompts and padding never reach the
        vocabulary projection, which on a small model is a fifth of the forward pass and
        most of its memory (batch x length x vocab floats, three times over with the
        fp32 copy and the softmax).
        """
        targets = batch["labels"][:, 1:]
        extra = {}
        keep = None
        if self.head_on_targets and supports_logits_to_keep(model):
            keep = batch.get("target_positions")
            if keep is None:
                keep = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(1)
            extra = {"logits_to_keep": keep, "use_cache": False}  # training builds no cache
        if "position_ids" in batch:
            # Packed rows: no attention mask, so transformers derives the per-example
            # block-diagonal mask from the restarting position ids (needs no cache).
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                           **{"use_cache": False, **extra}).logits
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
        if keep is not None:
            targets = targets[:, keep]
        else:
            # Prompt tuning and P-tuning prepend virtual tokens: their logits predict nothing.
            logits = logits[:, -batch["input_ids"].shape[1] :][:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum",
                               label_smoothing=self.label_smoothing if getattr(model, "training", False) else 0.0)

    @torch.inference_mode()
    def outputs(self, model, features: list[dict], batch_size: int, device) -> dict:
        """The token-weighted mean loss over answer tokens (every answer token weighs the same)."""
        model.eval()
        total, count = 0.0, 0
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        for start in range(0, len(order), batch_size):
            batch = self.collate([features[i] for i in order[start : start + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            total += float(self.loss_sum(model, batch))
            count += self.count_targets(batch)
        return {"loss": total / max(count, 1), "tokens": count}

    def prompt_ids(self, prompt: str | list[dict]) -> torch.Tensor:
        """Token ids of a prompt (a single user turn, or a conversation ending with a user
        turn), rendered with the training chat template and system prompt."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        messages = with_system_prompt(messages, self.system_prompt)
        return self.tokenizer(render_prompt(self.tokenizer, messages), add_special_tokens=False,
                              return_tensors="pt")["input_ids"]

    @torch.inference_mode()
    def answer(self, model, prompts: list, max_new_tokens: int, device) -> list[str]:
        """Greedy answers to prompts: strings, or conversations ending with a user turn (see ``prompt_ids``)."""
        model.eval()
        answers = []
        for prompt in prompts:
            ids = self.prompt_ids(prompt).to(device)
            if uses_deep_prompts(model):
                out = greedy_without_cache(model, ids, max_new_tokens, stop_token_ids(model, self.tokenizer))
            else:
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
            answers.append(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
        return answers


def supports_logits_to_keep(model) -> bool:
    """Whether ``model``'s forward takes ``logits_to_keep`` positions of its own input.

    PEFT prompt-learning models are excluded: prompt tuning shifts every position by its
    virtual tokens, and prefix tuning takes a forward path of its own.
    """
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    if config is not None and getattr(config, "is_prompt_learning", False):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(base))


@functools.lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(model_type: type) -> bool:
    # Once per model class: loss_sum asks on every micro-batch.
    forward = getattr(model_type, "forward", None)  # e.g. an onnxruntime session wrapper has none
    return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters
