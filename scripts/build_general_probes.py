"""Build src/tunesmith/assets/general_probes.jsonl: the forgetting check's general questions.

General-knowledge questions with reference answers, English and Chinese, taken from the
factual categories of chatterbot-corpus 1.3.3 (installed by scripts/setup.sh). The rows
are held out of every builtin:chatterbot dataset (data/builtins.py filters them), so no
shipped recipe trains on them. Rerun after changing the selection; a test checks that the
shipped file equals this script's output.

    .venv/bin/python scripts/build_general_probes.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent.parent / "src" / "tunesmith" / "assets" / "general_probes.jsonl"
# (language folder, category, how many) -- questions with one checkable answer.
PLAN = {"en": [("english", "trivia", 50), ("english", "science", 10)],
        "zh": [("chinese", "trivia", 10), ("chinese", "science", 12), ("chinese", "money", 10),
               ("chinese", "politics", 8)]}
QUESTION = {"en": re.compile(r"(what|who|which|where|when|how many|how much|how far|how long)\b", re.I),
            "zh": re.compile(r"(谁|什么|哪|几|多少|多远|多长)")}


def build(root: Path) -> list[dict]:
    """The probe rows, in a fixed order (seeded choice within each category)."""
    rows = []
    for lang, parts in PLAN.items():
        for folder, category, count in parts:
            pairs = []
            for conv in yaml.safe_load((root / folder / f"{category}.yml").read_text(encoding="utf-8"))["conversations"]:
                if not isinstance(conv, list) or len(conv) != 2:
                    continue
                question, answer = (str(t).strip() for t in conv)
                if QUESTION[lang].search(question) and answer and (question, answer) not in pairs:
                    pairs.append((question, answer))
            chosen = random.Random(f"{lang}-{category}").sample(pairs, min(count, len(pairs)))
            for k, (question, answer) in enumerate(chosen):
                rows.append({"id": f"{lang}-{category}-{k:02d}", "lang": lang,
                             "source": f"chatterbot-corpus 1.3.3 {folder}/{category}.yml",
                             "messages": [{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}]})
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


if __name__ == "__main__":
    import chatterbot_corpus

    rows = build(Path(chatterbot_corpus.__file__).parent / "data")
    OUT.write_text(render(rows), encoding="utf-8")
    print(f"{len(rows)} rows written to {OUT}")
