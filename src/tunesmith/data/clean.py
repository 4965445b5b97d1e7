"""Text cleaning steps, each switchable: Unicode NFKC, whitespace, control characters,
HTML, filler words (English and Chinese), masking of e-mails / phone numbers / ID-card
numbers, and a length filter. Applied to every text of a row, whatever its shape: a
classification text (and its pair), every chat turn, a raw document, a preference
row's prompt and both answers.
"""

from __future__ import annotations

import html
import re
import unicodedata

from tunesmith.data.progress import progress

# Control characters except tab/newline (kept: they carry structure in chats and code).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_TAG = re.compile(r"<\s*/?\s*[A-Za-z][A-Za-z0-9-]*(\s[^<>]*)?/?\s*>")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"[ \t\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Chinese resident ID (18 characters, last may be X) before phones, so its digits are not a phone.
_CN_ID = re.compile(r"(?<!\d)[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])")
_PHONE = re.compile(r"(?<![\w+])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]?\d{3,4}[ .-]?\d{0,4}(?![\w])")
_EN_FILLERS = re.compile(r"\b(?:um+|uh+|erm+|hmm+|uh-huh)\b[,.]?\s*", re.IGNORECASE)
# Chinese fillers as separate tokens (followed by punctuation or standing alone), so
# "啊" inside a word is kept; "那个" only when it opens a clause.
_ZH_FILLERS = re.compile(r"(?:(?<=^)|(?<=[，。！？、,.!?\s]))(?:嗯+|呃+|啊+|那个|就是说)[，、,]?\s*")


def clean_text(text: str, cfg) -> str:
    """``text`` after the steps ``cfg`` (a CleanConfig) switches on, in a fixed order."""
    if cfg.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.control_chars:
        text = _CONTROL.sub("", text)
    if cfg.html:
        text = _TAG.sub(" ", _SCRIPT.sub(" ", text))
        text = html.unescape(text)
    if cfg.fillers:
        text = _ZH_FILLERS.sub("", _EN_FILLERS.sub("", text))
    if cfg.mask_pii:
        text = _EMAIL.sub("[EMAIL]", text)
        text = _CN_ID.sub("[ID]", text)
        text = _PHONE.sub(lambda m: "[PHONE]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
    if cfg.whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
        text = _BLANK_LINES.sub("\n\n", text).strip()
    return text


# The text fields of each row shape: preference rows hold a prompt and two answers, each
# a string or a message list (see data/validate.py).
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("completion",)  # a thumbs-up/down row (KTO): a prompt and one answer


def _map_value(value, fn):
    if isinstance(value, list):  # a message list
        return [dict(m, content=fn(m["content"])) for m in value]
    return fn(value)


def map_texts(row: dict, fn) -> dict:
    """A copy of ``row`` with ``fn`` applied to every text it holds, whatever its shape
    (classification text and pair, chat turns, raw text, preference prompt and answers)."""
    new = dict(row)
    if "messages" in row:
        new["messages"] = _map_value(row["messages"], fn)
    elif "chosen" in row or "completion" in row:
        for key in PREFERENCE_FIELDS + UNPAIRED_FIELDS:
            if key in row:
                new[key] = _map_value(row[key], fn)
    else:
        new["text"] = fn(row["text"])
        if "text_pair" in row:
            new["text_pair"] = fn(row["text_pair"])
    return new


def row_texts(row: dict) -> list[str]:
    """Every text of a record, in order (see :func:`map_texts`)."""
    texts: list[str] = []
    map_texts(row, lambda t: texts.append(t) or t)
    return texts


def row_text(row: dict) -> str:
    """All the text of a record of any shape, one piece per line."""
    return "\n".join(row_texts(row))


def clean_rows(rows: list[dict], cfg) -> tuple[list[dict], dict]:
    """Clean every row; drop rows outside the length limits or emptied by cleaning.

    Returns ``(kept rows, report)``: rows changed, and rows dropped with the reason.
    """
    kept, changed = [], 0
    dropped = {"too_short": 0, "too_long": 0, "empty_after_cleaning": 0}
    for row in progress(rows, "clean"):
        new = map_texts(row, lambda text: clean_text(text, cfg))
        empty = any(not text for text in row_texts(new))
        changed += row_text(new) != row_text(row)
        length = len(row_text(new))
        if empty:
            dropped["empty_after_cleaning"] += 1
        elif cfg.min_chars is not None and length < cfg.min_chars:
            dropped["too_short"] += 1
        elif cfg.max_chars is not None and length > cfg.max_chars:
            dropped["too_long"] += 1
        else:
            kept.append(new)
    return kept, {"rows_in": len(rows), "changed": changed, "dropped": {k: v for k, v in dropped.items() if v},
                  "rows_out": len(kept)}
