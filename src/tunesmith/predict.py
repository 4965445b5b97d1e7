"""``tunesmith predict``: batch inference over a file, for chat models and classifiers.

A chat model answers each row's conversation (any chat form the data stage reads:
``messages``, ShareGPT ``conversations``, Alpaca ``instruction``/``input``; a final
assistant turn is kept as the row's ``reference``, as in evaluation files), rendered as in
training and serving, decoded with the evaluation decoder (continuous batching, packed
weights). A classifier labels each row's ``text`` with every label's probability. Rows are
validated first, and a bad row is named by its line before anything runs; output rows
keep the input's order and are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import ConfigError

ID_FIELD = "id"


def predict_file(spec: str, input_path: str | Path, output_path: str | Path, settings, device="cpu",
                 text_field: str = "text", show_progress: bool = True) -> dict:
    """Answer or label every row of ``input_path`` with the model ``spec`` names; writes
    ``output_path`` (JSON lines) and returns a summary (rows, task, seconds)."""
    import time

    from tqdm.auto import tqdm

    from tunesmith.data.sources import load_records
    from tunesmith.eval.targets import load_target, target_task
    from tunesmith.storage import atomic_write_text

    task = target_task(spec)
    if task == "reward":
        raise ConfigError("A reward model scores pairs of answers, which predict does not take.",
                          "Score pairs with 'tunesmith eval RUN --data PAIRS', or serve it (/v1/rewards).")
    shape = "prompt" if task == "causal_lm" else "text"
    records = load_records(str(input_path), shape, text_field=text_field, keep_fields=())
    target = load_target(spec, device)
    started = time.perf_counter()
    with tqdm(total=len(records), desc="predict", unit="row", disable=not show_progress) as bar:
        if task == "causal_lm":
            rows = _answers(target, records, settings, device, bar.update)
        else:
            rows = _labels(target, records, settings.batch_size, device, bar.update)
    atomic_write_text(Path(output_path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return {"rows": len(rows), "task": task, "model": spec, "output": str(output_path),
            "seconds": round(time.perf_counter() - started, 2)}


def _answers(target, records: list[dict], settings, device, progress) -> list[dict]:
    from tunesmith.eval.decode import generate_answers

    objective = target.objective()
    rows = []
    for number, record in enumerate(records):
        messages = record["messages"]
        row = {ID_FIELD: number, "messages": messages}
        if messages[-1]["role"] == "assistant":  # a final answer is the reference, as in eval files
            row["messages"], row["reference"] = messages[:-1], messages[-1]["content"]
        rows.append(row)
    prompts = [objective.prompt_ids(row["messages"])[0].tolist() for row in rows]
    answers = generate_answers(target.model, target.tokenizer, prompts, settings, device, progress=progress)
    for row, answer in zip(rows, answers):
        row.update(prediction=answer["text"], finish=answer["finish"], tokens=answer["tokens"])
    return rows


def _labels(target, records: list[dict], batch_size: int, device, progress) -> list[dict]:
    objective = target.objective()
    # encode() wants a label; any known one will do: only the text is read.
    features = objective.encode([{"text": r["text"], "label": target.labels[0]} for r in records])
    rows = []
    for start in range(0, len(features), batch_size):
        probs = objective.predict(target.model, features[start : start + batch_size], batch_size, device)
        for offset, p in enumerate(probs):
            best = int(p.argmax())
            rows.append({ID_FIELD: start + offset, "text": records[start + offset]["text"],
                         "label": target.labels[best], "probability": round(float(p[best]), 6),
                         "probabilities": {label: round(float(x), 6) for label, x in zip(target.labels, p)}})
        progress(len(probs))
    return rows
