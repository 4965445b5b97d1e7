"""Local dataset files (.jsonl, .json, .csv, .tsv, .parquet, .txt, a saved ``datasets``
folder) read into validated records.

Every row is checked; a bad row becomes a *reject* that names the file, the line, the
field and the reason. With ``on_error="raise"`` (the default) one DataError lists them
all, so a file is fixed in one pass; with ``"drop"``/``"quarantine"`` the valid rows go
on and the rejects are handed back to be counted (and written to ``rejects.jsonl``).

Shapes: ``classification`` (text, optional text_pair, label), ``chat`` (OpenAI
``messages``, sharegpt ``conversations`` with ``from``/``value``, or alpaca
``instruction``/``input``/``output`` with optional ``system`` and ``history``), ``text``
(raw documents for continued pretraining: a ``text`` column, or a .txt file with one
document per line or per delimiter) and ``preference`` (pairs, thumbs-up/down rows, ranked
lists or ratings: :mod:`tunesmith.data.preference_rows`).

Reading each file format into rows is :mod:`tunesmith.data.formats`; the chat dialects
are checked in :mod:`tunesmith.data.dialects`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tunesmith.data.formats import BadRow, Row, read_rows
from tunesmith.data.progress import progress
from tunesmith.errors import DataError

MAX_REPORTED_ERRORS = 10


def reason_code(message: str) -> str:
    """A short category for a row problem, for counts by reason."""
    for needle, code in (("not valid JSON", "invalid_json"), ("UTF-8", "invalid_utf8"),
                         ("cells but the header", "bad_csv_row"), ("unknown role", "unknown_role"),
                         ("in a row", "repeated_turn"), ("no assistant turn", "no_assistant_turn"),
                         ("outside the label set", "unknown_label"), ("is missing", "missing_field"),
                         ("is empty", "empty_field"), ("the same as 'chosen'", "same_answers"), ("must be", "wrong_type"), ("expected an object", "wrong_type")):
        if needle in message:
            return code
    return "invalid"


class RowErrors:
    """Collects per-row problems: one DataError can report them all, or they become rejects."""

    def __init__(self, display: str):
        self.display = display
        self.messages: list[str] = []
        self.count = 0
        self.pending: list[str] = []  # problems of the row being checked
        self.rejects: list[dict] = []

    def add(self, where: str, message: str) -> None:
        self.count += 1
        self.pending.append(message)
        if len(self.messages) < MAX_REPORTED_ERRORS:
            self.messages.append(f"{where}: {message}")

    def close_row(self, row: Row) -> bool:
        """Finish checking ``row``; True (and a reject recorded) when it had problems."""
        if not self.pending:
            return False
        raw = row.value.raw if isinstance(row.value, BadRow) else row.value
        self.rejects.append(reject_record(self.display, row.where, self.pending, raw))
        self.pending = []
        return True

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.messages)
        lines = [f"  {m}" for m in self.messages] + ([f"  ... and {more} more"] if more else [])
        rows = "row" if self.count == 1 else "rows"
        # One problem per line: easier to scan, and the CLI prints the fix below it.
        raise DataError(
            f"{self.display}: {self.count} invalid {rows}:\n" + "\n".join(lines),
            "Fix or remove these rows and run again.",
        )


def reject_record(source: str, where: str, reasons: list[str], raw: Any) -> dict:
    """What ``rejects.jsonl`` holds for one rejected row."""
    fields = sorted({m.group(1) for r in reasons for m in [re.search(r"field '([^']+)'", r)] if m})
    line = int(where.split()[-1]) if where.split()[-1].isdigit() else None
    return {"source": source, "where": where, "line": line, "fields": fields, "reasons": list(reasons),
            "codes": sorted({reason_code(r) for r in reasons}), "row": raw}


def type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type for a message ("null", "str", "list", ...)."""
    return "null" if value is None else type(value).__name__


def field_list(names) -> str:
    """``names`` quoted and comma-separated, or "(none)", to list the fields a row has."""
    names = list(names)
    return ", ".join(repr(n) for n in names) if names else "(none)"


def _looks_like(rows: list[Row]) -> str | None:
    """Which shape the rows seem to be, to explain a shape mismatch in one sentence."""
    dicts = [r.value for r in rows if isinstance(r.value, dict)]
    if dicts and all("messages" in d or ("instruction" in d and "output" in d) for d in dicts):
        return "chat"
    return None


def _check_columns(rows: list[Row], header: list[str] | None, shape: str, display: str,
                   text_field: str, label_field: str) -> None:
    """When a field is missing from *every* row, say so once (with the columns that do
    exist) instead of repeating it for each row."""
    if shape in ("text", "preference"):
        return
    if shape != "classification":
        dicts = [r.value for r in rows if isinstance(r.value, dict)]
        if dicts and all("text" in d and "label" in d and "messages" not in d
                         and "instruction" not in d for d in dicts):
            raise DataError(
                f"{display} looks like classification data (text/label rows), but a chat "
                "dataset was asked for.",
                "Use it with the classification task, or give chat rows with a 'messages' "
                "list (or alpaca 'instruction'/'output' fields).",
            )
        return
    if header is not None:
        available = header
        present = set(header)
    else:
        dicts = [r.value for r in rows if isinstance(r.value, dict)]
        if not dicts:
            return
        available = list(dict.fromkeys(k for d in dicts[:50] for k in d))
        present = set().union(*(d.keys() for d in dicts))
    kind = "column" if header is not None else "field"
    if _looks_like(rows) == "chat" and text_field not in present:
        raise DataError(
            f"{display} looks like chat data (messages/instruction rows), but a "
            "classification dataset was asked for.",
            f"Use it with the chat task, or give rows with {text_field!r} and {label_field!r} fields.",
        )
    for name, option in ((text_field, "text_field"), (label_field, "label_field")):
        if name not in present:
            raise DataError(
                f"{display}: no row has the {kind} {name!r}; the {kind}s are: "
                f"{field_list(available)}.",
                f"Set {option} to the {kind} that holds the "
                f"{'text' if option == 'text_field' else 'labels'}, or rename it to {name!r}.",
            )


def _normalise_label(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 from a pandas export means class "1"
    if isinstance(value, str):
        return value.strip()
    return None


def required_text(obj: dict, key: str, row: Row, errors: RowErrors) -> str | None:
    """``obj[key]`` stripped, or None with the problem reported (missing, not a string, empty)."""
    value = obj.get(key)
    if key not in obj:
        errors.add(row.where, f"field {key!r} is missing")
    elif not isinstance(value, str):
        errors.add(row.where, f"field {key!r} must be a string, got {type_name(value)}")
    elif not value.strip():
        errors.add(row.where, f"field {key!r} is empty")
    else:
        return value.strip()
    return None


def _classification_record(row: Row, errors: RowErrors, text_field: str,
                           label_field: str, pair_field: str | None = "text_pair") -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with {text_field!r} and {label_field!r}, "
                              f"got {type_name(obj)}")
        return None
    text = required_text(obj, text_field, row, errors)
    ok = text is not None
    label = None
    if label_field not in obj:
        errors.add(row.where, f"field {label_field!r} is missing"); ok = False
    else:
        label = _normalise_label(obj[label_field])
        if label is None:
            errors.add(row.where, f"field {label_field!r} must be a string or integer, "
                                  f"got {type_name(obj[label_field])}"); ok = False
        elif not label:
            errors.add(row.where, f"field {label_field!r} is empty"); ok = False
    if not ok:
        return None
    record = {"text": text, "label": label}
    pair = obj.get(pair_field) if pair_field else None
    if pair is not None and pair != "":
        if not isinstance(pair, str):
            errors.add(row.where, f"field {pair_field!r} must be a string, got {type_name(pair)}")
            return None
        record["text_pair"] = pair.strip()
    return record


def _text_record(row: Row, errors: RowErrors, text_field: str) -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with {text_field!r}, got {type_name(obj)}")
        return None
    text = required_text(obj, text_field, row, errors)
    return {"text": text} if text is not None else None


def _keep_fields(rec: dict, row: Row, names: tuple[str, ...], errors: RowErrors) -> None:
    """Carry extra columns (a timestamp or group id for splitting) into the record."""
    for name in names:
        value = row.value.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.add(row.where, f"field {name!r} is missing" if name not in row.value else f"field {name!r} is empty")
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            errors.add(row.where, f"field {name!r} must be a string or number, got {type_name(value)}")
        else:
            rec[name] = value


def load_file(path: Path, display: str, shape: str, text_field: str = "text", label_field: str = "label",
              on_error: str = "raise", keep_fields: tuple[str, ...] = (), text_delimiter: str | None = None,
              split: str | None = None, messages_field: str = "messages",
              rejected_optional: bool = False) -> tuple[list[dict], list[dict]]:
    """Read and validate one local file: returns ``(records, rejects)``. ``rejected_optional``:
    preference pairs may leave out their rejected answer (``data.generate_rejected``).

    Raises:
        DataError: an unreadable or empty file, columns missing from every row, or (with
            ``on_error="raise"``) any invalid row, listed with line, field and reason.
    """
    # Imported here, not at the top: dialects builds on this module's RowErrors helpers.
    from tunesmith.data.dialects import chat_record
    from tunesmith.data.preference_rows import preference_record

    header, rows = read_rows(path, display, shape, text_delimiter, split)
    if not rows:
        raise DataError(f"{display} has no data rows.", "Add rows to the file, or point to another dataset.")

    _check_columns(rows, header, shape, display, text_field, label_field)

    errors = RowErrors(display)
    records = []
    for row in progress(rows, f"validate {path.name}"):
        if isinstance(row.value, BadRow):
            errors.add(row.where, row.value.reason)
            rec = None
        elif shape == "classification":
            rec = _classification_record(row, errors, text_field, label_field)
        elif shape == "text":
            rec = _text_record(row, errors, text_field)
        elif shape == "preference":
            rec = preference_record(row, errors, rejected_optional)
        else:  # chat, or prompt: chat rows whose answer (the reference) may be missing
            rec = chat_record(row, errors, from_csv=header is not None, messages_field=messages_field,
                              require_assistant=shape != "prompt")
        if rec is not None and keep_fields:
            _keep_fields(rec, row, keep_fields, errors)
        if not errors.close_row(row) and rec is not None:
            # Provenance travels with the row so later checks (labels, length) can name it.
            rec["_where"] = f"{display} {row.where}"
            records.append(rec)
    if on_error == "raise":
        errors.raise_if_any()
    return records, errors.rejects
