"""Tiny synthetic datasets for smoke runs, tests and benchmarks (no files, no downloads).

Each is learnable in seconds by a tiny model, so a falling loss or a rising metric is a
real signal rather than noise.
"""

from __future__ import annotations

import random
from pathlib import Path


POSITIVE = ["good", "great", "wonderful", "excellent", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor"]
FILLER = ["the", "movie", "film", "plot", "was", "really", "quite", "acting", "story", "and"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """Classification rows whose label is decided by one cue word among four fillers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def preference_rows(n: int, seed: int) -> list[dict]:
    """Preference pairs to one prompt: the chosen review carries a positive cue word, the
    rejected one a negative cue, amid the same kind of fillers (separable by the cue)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        chosen, rejected = (rng.sample(FILLER, 4) + [rng.choice(cues)] for cues in (POSITIVE, NEGATIVE))
        rng.shuffle(chosen)
        rng.shuffle(rejected)
        rows.append({"prompt": "write a one-sentence movie review.", "chosen": " ".join(chosen),
                     "rejected": " ".join(rejected)})
    return rows


def chat_rows(n: int) -> list[dict]:
    """Identity chats with one fixed answer, so the loss on answers must fall."""
    questions = ["who are you?", "what is your name?", "who made you?", "introduce yourself.", "tell me your name."]
    return [
        {"messages": [{"role": "user", "content": questions[i % len(questions)]},
                      {"role": "assistant", "content": "i am quill, made by the tunesmith team."}]}
        for i in range(n)
    ]


def poisoned_classification(*args, poison: dict[int, str]):
    """A ClassificationObjective whose loss is poisoned on chosen calls (see :func:`poison_losses`)."""
    from tunesmith.objectives.classification import ClassificationObjective

    return poison_losses(ClassificationObjective(*args), poison)


def poison_losses(objective, poison: dict[int, str]):
    """``objective`` with its loss x50 ("spike") or NaN ("nan") on chosen calls of ``loss_sum``.

    ``poison`` maps the 1-based call number to the fault; each fires once, so data
    replayed after a rollback is clean. Used to exercise the numerical-health guard.
    """
    clean, pending, calls = objective.loss_sum, dict(poison), [0]

    def loss_sum(model, batch):
        loss = clean(model, batch)
        calls[0] += 1
        kind = pending.pop(calls[0], None)
        return loss * 50 if kind == "spike" else loss * float("nan") if kind == "nan" else loss

    objective.loss_sum = loss_sum
    return objective


def make_lora_run(run_dir: Path, base: str | Path, task: str, seed: int, *, labels: list[str] | None = None,
                  system_prompt: str | None = None, r: int = 4, peft_config=None, method: str = "lora") -> Path:
    """A finished-looking run whose final/ holds a LoRA adapter with random (non-zero) weights.

    Different seeds give adapters that answer differently, in a second instead of a
    training run: serving and export tests and benchmarks need a real adapter in the
    real format, not a trained one. ``peft_config`` + ``method`` make another PEFT
    method's run instead (e.g. prefix tuning), with PEFT's own random init.
    """
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from tunesmith.methods.saved import save_trained
    from tunesmith.models.load import load_model
    from tunesmith.rundir import write_model_meta

    torch.manual_seed(seed)
    id2label = dict(enumerate(labels)) if labels else None
    model, tokenizer = load_model(str(base), task, id2label=id2label)
    classification = task == "classification"
    config = LoraConfig(task_type=TaskType.SEQ_CLS if classification else TaskType.CAUSAL_LM, r=r, lora_alpha=8 * r,
                        target_modules=["query", "value"] if classification else ["q_proj", "v_proj"],
                        init_lora_weights=False)
    if peft_config is not None:
        from tunesmith.methods.prompt import accept_past_key_values

        config = peft_config
        accept_past_key_values(model, method, task)
    model = get_peft_model(model, config)
    final = Path(run_dir) / "final"
    save_trained(model, final)
    tokenizer.save_pretrained(final)
    meta = {"task": task, "method": method, "method_config": {"type": method}, "quantization": None,
            "base_model": str(base), "base_model_path": str(base), "labels": labels,
            "system_prompt": system_prompt, "max_length": 64}
    if not classification and tokenizer.chat_template:  # as training leaves it (serve and export check it)
        from tunesmith.data.template_check import write_template_probes

        write_template_probes(final, tokenizer, system_prompt)
    write_model_meta(final, meta)  # last, as training writes it: it records the other files' hashes
    return Path(run_dir)
