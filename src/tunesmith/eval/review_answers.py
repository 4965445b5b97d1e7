"""``tunesmith eval review-export A B``: both models answer the same prompts, then the blind page is written.

Kept apart from :mod:`tunesmith.eval.review` (pure file formats, no model) so the page,
the CSV and the import can be tested and used without torch.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import DataError
from tunesmith.eval.decode import DecodeSettings, generate_answers
from tunesmith.eval.generation import chat_items
from tunesmith.eval.review import export_review
from tunesmith.eval.targets import load_target


def export_review_of_models(a: str, b: str, data: str, out: Path, settings: DecodeSettings,
                            limit: int | None = None, title: str | None = None) -> dict:
    """Answer the prompts of ``data`` with models ``a`` and ``b`` (each prompted its own
    way: its template and system prompt) and write the blind review to ``out``.

    A model is unloaded before the next loads, so two large models need not fit together.
    """
    import torch

    from tunesmith.data.sources import load_records

    items = chat_items(load_records(data, "prompt"), limit)
    if not items:
        raise DataError(f"{data} has no chat with a user turn to answer.", "Pass chat rows with --data.")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    answers = []
    for spec in (a, b):
        target = load_target(spec, device)
        if target.task != "causal_lm":
            raise DataError(f"{spec} is a {target.task} model: it cannot answer prompts.",
                            "Review chat models (runs of task causal_lm, or a base model).")
        objective = target.objective()
        prompts = [objective.prompt_ids(item["messages"])[0].tolist() for item in items]
        answers.append([x["text"] for x in generate_answers(target.model, target.tokenizer, prompts, settings, device)])
        del target
    rows = [{"id": item["id"], "prompt": item["prompt"], "answer_a": x, "answer_b": y, "reference": item["reference"]}
            for item, x, y in zip(items, *answers)]
    manifest = export_review(rows, out, (a, b), seed=None, title=title)
    return dict(manifest, items=manifest["n_items"])
