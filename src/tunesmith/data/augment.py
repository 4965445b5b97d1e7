"""Data augmentation, opt-in and marked: every generated row carries ``augmented`` (which
operations made it) and ``augmented_from`` (the index of its original training row).

- EDA (Wei & Zou, 2019): synonym replacement, random swap, random deletion. Words are
  split on spaces; Chinese text, which has none, is handled character by character.
- Synonyms come from WordNet when Debian's ``wordnet`` data is installed
  (``/usr/share/wordnet``), else from a bundled English list.
- Back-translation: a registered back-translator, picked by name (see
  ``tunesmith.data.paraphrase``: built-in OPUS-MT round trips, ``--plugin`` entry points,
  ``register_back_translator``). A recipe never names code to import.

Only training rows are augmented (after the split, so no augmented copy of an eval row
leaks into training); for chats only user turns change, the answers stay as they are.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

from tunesmith.data.paraphrase import get_back_translator
from tunesmith.errors import ConfigError

WORDNET_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/wordnet/dict"))
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"^([^\w]*)(\w[\w'-]*)([^\w]*)$")


@lru_cache(maxsize=1)
def synonym_table() -> dict[str, list[str]]:
    """word -> synonyms: WordNet's synsets when installed, else the bundled list."""
    for folder in WORDNET_DIRS:
        files = [folder / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
        if all(f.is_file() for f in files):
            return _read_wordnet(files)
    bundled = Path(__file__).resolve().parent.parent / "assets" / "synonyms_en.json"
    return json.loads(bundled.read_text(encoding="utf-8"))


def _read_wordnet(files: list[Path]) -> dict[str, list[str]]:
    table: dict[str, set[str]] = {}
    for file in files:
        with file.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                parts = line.split()
                count = int(parts[3], 16)
                words = [parts[4 + 2 * i].replace("_", " ").lower() for i in range(count)]
                words = [w for w in words if " " not in w]
                for w in words:
                    table.setdefault(w, set()).update(x for x in words if x != w)
    return {w: sorted(s) for w, s in table.items() if s}


def _tokens(text: str) -> tuple[list[str], str]:
    if _CJK.search(text) and " " not in text.strip():
        return list(text), ""
    return text.split(), " "


def synonym_replace(text: str, rate: float, rng: random.Random) -> str:
    """Replace about ``rate`` of the words that have synonyms (at least one)."""
    words, sep = _tokens(text)
    table = synonym_table()
    candidates = []
    for i, word in enumerate(words):
        match = _WORD.match(word)
        if match and match.group(2).lower() in table:
            candidates.append(i)
    if not candidates:
        return text
    for i in rng.sample(candidates, max(1, round(rate * len(candidates)))):
        pre, core, post = _WORD.match(words[i]).groups()
        choice = rng.choice(table[core.lower()])
        words[i] = pre + (choice.capitalize() if core[0].isupper() else choice) + post
    return sep.join(words)


def random_swap(text: str, rate: float, rng: random.Random) -> str:
    words, sep = _tokens(text)
    if len(words) < 2:
        return text
    for _ in range(max(1, round(rate * len(words)))):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return sep.join(words)


def random_delete(text: str, rate: float, rng: random.Random) -> str:
    words, sep = _tokens(text)
    if len(words) < 2:
        return text
    kept = [w for w in words if rng.random() >= rate]
    return sep.join(kept or [rng.choice(words)])


def _texts_of(row: dict) -> list[str]:
    """The texts augmentation may change: user turns of a chat, a preference row's prompt
    (answers, chosen and rejected alike, stay as they are), or the text."""
    if "messages" in row:
        return [m["content"] for m in row["messages"] if m["role"] == "user"]
    if "chosen" in row:
        prompt = row["prompt"]
        return [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt if m["role"] == "user"]
    return [row["text"]]


def _with_user_turns(messages: list[dict], texts) -> list[dict]:
    it = iter(texts)
    return [dict(m, content=next(it)) if m["role"] == "user" else m for m in messages]


def _with_texts(row: dict, texts: list[str]) -> dict:
    if "messages" in row:
        return dict(row, messages=_with_user_turns(row["messages"], texts))
    if "chosen" in row:
        prompt = row["prompt"]
        return dict(row, prompt=texts[0] if isinstance(prompt, str) else _with_user_turns(prompt, texts))
    return dict(row, text=texts[0])


def augment_rows(rows: list[dict], cfg, seed: int) -> tuple[list[dict], dict]:
    """The original rows plus ``cfg.copies`` augmented copies of each; returns ``(rows, report)``."""
    rng = random.Random(seed)
    ops = [(name, fn, rate) for name, fn, rate in (("synonym", synonym_replace, cfg.synonym_rate),
                                                     ("swap", random_swap, cfg.swap_rate),
                                                     ("delete", random_delete, cfg.delete_rate)) if rate]
    back_translate = get_back_translator(cfg.back_translation) if cfg.back_translation else None
    out = list(rows)
    counts: dict[str, int] = {}
    for copy in range(cfg.copies):
        texts = [_texts_of(r) for r in rows]
        if back_translate is not None:
            flat = [t for ts in texts for t in ts]
            translated = list(back_translate(flat))
            if len(translated) != len(flat) or not all(isinstance(t, str) for t in translated):
                raise ConfigError(f"The back-translator {cfg.back_translation!r} must return one string per "
                                  "input text.")
            it = iter(translated)
            texts = [[next(it) for _ in ts] for ts in texts]
        for i, (row, row_texts) in enumerate(zip(rows, texts)):
            applied = ["back_translation"] if back_translate is not None else []
            new = []
            for text in row_texts:
                for name, fn, rate in ops:
                    text = fn(text, rate, rng)
                new.append(text)
            applied += [name for name, _, _ in ops]
            if new == _texts_of(row):
                continue  # nothing changed (no synonyms, one-word text): not a new example
            label = "+".join(applied)
            counts[label] = counts.get(label, 0) + 1
            out.append(dict(_with_texts(row, new), augmented=label, augmented_from=i))
    return out, {"original_rows": len(rows), "augmented_rows": len(out) - len(rows), "by_operation": counts}
