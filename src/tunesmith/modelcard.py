"""The model card of a run's ``final/``: what was trained, on what, how well, and how to load it.

PEFT writes a blank template (``[More Information Needed]`` dozens of times) whose
``base_model`` is a path inside this machine's cache. Tunesmith replaces it with a card
built from the run's own facts, and makes ``adapter_config.json`` name the base the way
the user did (``builtin:smollm2-135m``, a hub id, or the path they gave), which means
something on another machine; ``tunesmith.json`` keeps the resolved local path next to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PIPELINES = {"classification": "text-classification", "causal_lm": "text-generation"}


def portable_adapter_config(final_dir: Path, base_model: str) -> None:
    """Point ``adapter_config.json`` (if any) at the portable base id instead of a cache path."""
    path = Path(final_dir) / "adapter_config.json"
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_model
        path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _front_matter(meta: dict) -> list[str]:
    peft = (Path(meta["final_dir"]) / "adapter_config.json").is_file()
    lines = ["---", f"library_name: {'peft' if peft else 'transformers'}",
             f"pipeline_tag: {PIPELINES.get(meta['task'], 'text-generation')}"]
    if _HUB_ID.match(meta["base_model"]):
        lines.append(f"base_model: {meta['base_model']}")
    lines += ["tags:", "- tunesmith", f"- {meta['method']}", f"- {meta['stage']}", "---", ""]
    return lines


def _results(summary: dict) -> list[str]:
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    lines = ["| metric | base model | fine-tuned |", "|---|---|---|"]
    lines += [f"| {name} | {_fmt(before.get(name))} | {_fmt(value)} |" for name, value in after.items()]
    return lines


def _data(summary: dict) -> list[str]:
    data = summary.get("data") or {}
    lines = [f"- training sources: {', '.join(f'`{s}` ({n} rows)' for s, n in (data.get('sources') or {}).items())}",
             f"- rows: {data.get('train_rows')} train, {data.get('eval_rows')} held out for evaluation"]
    if data.get("mix"):
        lines.append("- mix: " + ", ".join(f"`{s}` {n}" for s, n in data["mix"].items()))
    leak = data.get("leakage") or {}
    if leak:
        lines.append(f"- held-out rows also in training: {leak.get('exact', 0)} exact, {leak.get('near', 0)} near"
                     f"{' (removed)' if leak.get('removed') else ''}")
    if summary.get("labels"):
        lines.append(f"- labels: {', '.join(summary['labels'])}")
    return lines


def _how_to_load(meta: dict) -> list[str]:
    head = ("AutoModelForSequenceClassification" if meta["task"] == "classification" else "AutoModelForCausalLM")
    extra = f", num_labels={len(meta['labels'])}" if meta.get("labels") else ""
    peft = (Path(meta["final_dir"]) / "adapter_config.json").is_file()
    lines = ["With Tunesmith (any method):", "", "```python", "from tunesmith.methods.saved import load_trained",
             'model, tokenizer, meta = load_trained("final")', "```", ""]
    if peft:
        lines += ["With transformers + PEFT only (the base as recorded in `tunesmith.json`, `base_model_path`):", "",
                  "```python", "import json", "from peft import PeftModel",
                  f"from transformers import AutoTokenizer, {head}", "",
                  'meta = json.load(open("final/tunesmith.json"))',
                  f'base = {head}.from_pretrained(meta["base_model_path"]{extra})',
                  'model = PeftModel.from_pretrained(base, "final").eval()',
                  'tokenizer = AutoTokenizer.from_pretrained("final")', "```"]
    elif meta.get("weights") == "delta":
        from tunesmith.methods.delta import loader_snippet

        lines += loader_snippet(head, extra)
    return lines


def write_model_card(final_dir: Path, meta: dict, summary: dict, config: dict) -> Path:
    """Write ``final/README.md`` from the run's metadata, summary and resolved config."""
    meta = dict(meta, final_dir=str(final_dir))
    train = summary.get("train") or {}
    method = {k: v for k, v in (meta.get("method_config") or {}).items() if v is not None}
    lines = _front_matter(meta) + [
        f"# {summary.get('name', 'model')}", "",
        f"`{meta['base_model']}` fine-tuned by [Tunesmith](https://pypi.org/project/tunesmith/) "
        f"{meta.get('tunesmith_version', '')} for **{meta['stage']}** with **{meta['method']}**.", "",
        "## Training", "",
        f"- method: `{json.dumps(method)}`",
        f"- {train.get('steps')} optimizer steps at peak learning rate {train.get('lr')}, batch size "
        f"{config['train']['batch_size']} x {config['train']['grad_accum']} accumulation, "
        f"{config['train']['scheduler']} schedule, seed {config['seed']}, "
        f"precision {meta.get('precision') or config['train']['precision']}",
        f"- {summary.get('trainable_params', 0):,} trainable of {summary.get('total_params', 0):,} parameters",
        f"- {train.get('wall_s', 0):.1f} s of training, {train.get('samples_per_s', 0):.1f} samples/s, "
        f"peak RSS {train.get('peak_rss_mb', 0):.0f} MB", "",
        "## Data", "", *_data(summary), "",
        "## Evaluation (held-out rows)", "", *_results(summary), "",
        "## Limitations", "",
        "- The numbers above come from held-out rows of the same sources as the training data; they say "
        "little about other domains or phrasings.",
        f"- Trained on {(summary.get('data') or {}).get('train_rows', '?')} rows: behaviour outside what they "
        "show is the base model's, and may have degraded.",
    ]
    if meta.get("system_prompt"):
        lines.append(f"- Chats were trained with the system prompt {meta['system_prompt']!r}; use it when serving.")
    lines += ["", "## How to load", "", *_how_to_load(meta), ""]
    path = Path(final_dir) / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
