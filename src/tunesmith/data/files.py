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
document per line or per delimiter) and ``preference`` (``prompt``/``chosen``/``rejected``,
each a string or a message list).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from tunesmith.data.progress import progress
from tunesmith.errors import DataError

ROLES = ("system", "user", "assistant")
SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
MAX_REPORTED_ERRORS = 10
# sharegpt speakers -> chat roles (unknown speakers are reported as unknown roles)
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "system": "system"}

def reason_code(message: str) -> str:
    """A short category for a row problem, for counts by reason."""
    for needle, code in (("not valid JSON", "invalid_json"), ("UTF-8", "invalid_utf8"),
                         ("cells but the header", "bad_csv_row"), ("unknown role", "unknown_role"),
                         ("in a row", "repeated_turn"), ("no assistant turn", "no_assistant_turn"),
                         ("outside the label set", "unknown_label"), ("is missing", "missing_field"),
                         ("is empty", "empty_field"), ("must be", "wrong_type"), ("expected an object", "wrong_type")):
        if needle in message:
            return code
    return "invalid"


class _RowErrors:
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

    def close_row(self, row: "_Row") -> bool:
        """Finish checking ``row``; True (and a reject recorded) when it had problems."""
        if not self.pending:
            return False
        raw = row.value.raw if isinstance(row.value, _BadRow) else row.value
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


class _Row(NamedTuple):
    where: str  # "line 3" / "index 2": what the user looks for in their editor
    value: Any


class _BadRow(NamedTuple):
    """A row that could not even be parsed; carries the reason to report and its raw text."""

    reason: str
    raw: str = ""


def reject_record(source: str, where: str, reasons: list[str], raw: Any) -> dict:
    """What ``rejects.jsonl`` holds for one rejected row."""
    fields = sorted({m.group(1) for r in reasons for m in [re.search(r"field '([^']+)'", r)] if m})
    line = int(where.split()[-1]) if where.split()[-1].isdigit() else None
    return {"source": source, "where": where, "line": line, "fields": fields, "reasons": list(reasons),
            "codes": sorted({reason_code(r) for r in reasons}), "row": raw}


def _read_text(path: Path, display: str) -> str:
    try:
        # utf-8-sig: files saved by Excel/Notepad often start with a BOM, which would
        # otherwise end up glued to the first column name.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{display} is not UTF-8 text (line {line}, byte {exc.start}: {exc.reason}).",
            "Re-save the file with UTF-8 encoding.",
        ) from exc
    except OSError as exc:
        raise DataError(f"{display} cannot be read ({exc.strerror or exc}).") from exc


def _iter_jsonl(data: bytes) -> Iterator[_Row]:
    # Decoded line by line, so one line with bad bytes is one bad row, not a bad file.
    data = data.removeprefix(b"\xef\xbb\xbf")
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _Row(f"line {lineno}", _BadRow(f"not valid UTF-8 (byte {exc.start + 1} of the line: {exc.reason})",
                                                 raw.decode("utf-8", errors="replace")))
            continue
        if not line.strip():
            continue  # blank lines (often a trailing one) are not rows
        try:
            yield _Row(f"line {lineno}", json.loads(line))
        except json.JSONDecodeError as exc:
            # Kept as a row so it is reported in line order with the other problems.
            yield _Row(f"line {lineno}", _BadRow(f"not valid JSON ({exc.msg} at column {exc.colno})", line))


def _iter_json(text: str, display: str) -> Iterator[_Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{display} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
            "Fix the JSON, or store one object per line in a .jsonl file.",
        ) from exc
    if not isinstance(data, list):
        raise DataError(
            f"{display} must hold a JSON list of row objects, but its top level is a "
            f"{type(data).__name__}.",
            "Wrap the rows in [...], or store one object per line in a .jsonl file.",
        )
    for i, item in enumerate(data):
        yield _Row(f"index {i}", item)


def _iter_csv(text: str, delimiter: str, display: str) -> tuple[list[str], list[_Row]]:
    # StringIO(newline="") splits only on \n/\r, as the csv module expects; str.splitlines
    # would also split on U+2028 and friends inside a cell.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[_Row] = []
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        for values in reader:
            # Report the physical line where the row starts (header is line 1), so a
            # quoted multi-line cell does not shift the numbers.
            where = f"line {start}"
            start = reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                rows.append(_Row(where, _BadRow(
                    f"has {len(values)} cells but the header has {len(header)} columns "
                    "(unquoted delimiter in a value?)", delimiter.join(values))))
                continue
            rows.append(_Row(where, dict(zip(header, values))))
    except csv.Error as exc:
        raise DataError(
            f"{display}: cannot parse line {reader.line_num} ({exc}).",
            "Check the quoting around that line (a cell with the delimiter or a newline "
            "must be wrapped in double quotes).",
        ) from exc
    return header, rows


def _iter_parquet(path: Path, display: str) -> list[_Row]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{display} is not a readable Parquet file ({exc}).") from exc
    return [_Row(f"row {i + 1}", row) for i, row in enumerate(table.to_pylist())]


def _iter_dataset_folder(path: Path, display: str, split: str | None) -> list[_Row]:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset, or a DatasetDict's split)."""
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{display} is not a readable datasets folder ({exc}).") from exc
    if isinstance(data, DatasetDict):
        name = split or ("train" if "train" in data else None)
        if name not in data:
            raise DataError(f"{display} holds the splits {sorted(data)}; which one?",
                            f"Write the path as {path}:{sorted(data)[0]}.")
        data = data[name]
    return [_Row(f"row {i + 1}", row) for i, row in enumerate(data)]


def _iter_txt(text: str, delimiter: str | None) -> list[_Row]:
    """One document per line, or per ``delimiter`` (e.g. a blank line, or "%" for fortune files)."""
    if delimiter is None:
        return [_Row(f"line {n}", {"text": line}) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    rows, line = [], 1
    for chunk in text.split(delimiter):
        if chunk.strip():
            rows.append(_Row(f"line {line + len(chunk) - len(chunk.lstrip(chr(10)))}", {"text": chunk.strip()}))
        line += chunk.count("\n") + delimiter.count("\n")
    return rows


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _field_list(names) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names) if names else "(none)"


def _looks_like(rows: list[_Row]) -> str | None:
    """Which shape the rows seem to be, to explain a shape mismatch in one sentence."""
    dicts = [r.value for r in rows if isinstance(r.value, dict)]
    if dicts and all("messages" in d or ("instruction" in d and "output" in d) for d in dicts):
        return "chat"
    return None


def _check_columns(rows: list[_Row], header: list[str] | None, shape: str, display: str,
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
                f"{_field_list(available)}.",
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


def _required_text(obj: dict, key: str, row: _Row, errors: _RowErrors) -> str | None:
    """``obj[key]`` stripped, or None with the problem reported (missing, not a string, empty)."""
    value = obj.get(key)
    if key not in obj:
        errors.add(row.where, f"field {key!r} is missing")
    elif not isinstance(value, str):
        errors.add(row.where, f"field {key!r} must be a string, got {_type_name(value)}")
    elif not value.strip():
        errors.add(row.where, f"field {key!r} is empty")
    else:
        return value.strip()
    return None


def _classification_record(row: _Row, errors: _RowErrors, text_field: str,
                           label_field: str, pair_field: str | None = "text_pair") -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with {text_field!r} and {label_field!r}, "
                              f"got {_type_name(obj)}")
        return None
    text = _required_text(obj, text_field, row, errors)
    ok = text is not None
    label = None
    if label_field not in obj:
        errors.add(row.where, f"field {label_field!r} is missing"); ok = False
    else:
        label = _normalise_label(obj[label_field])
        if label is None:
            errors.add(row.where, f"field {label_field!r} must be a string or integer, "
                                  f"got {_type_name(obj[label_field])}"); ok = False
        elif not label:
            errors.add(row.where, f"field {label_field!r} is empty"); ok = False
    if not ok:
        return None
    record = {"text": text, "label": label}
    pair = obj.get(pair_field) if pair_field else None
    if pair is not None and pair != "":
        if not isinstance(pair, str):
            errors.add(row.where, f"field {pair_field!r} must be a string, got {_type_name(pair)}")
            return None
        record["text_pair"] = pair.strip()
    return record


def _text_record(row: _Row, errors: _RowErrors, text_field: str) -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with {text_field!r}, got {_type_name(obj)}")
        return None
    text = _required_text(obj, text_field, row, errors)
    return {"text": text} if text is not None else None


def _preference_record(row: _Row, errors: _RowErrors) -> dict | None:
    """``prompt``/``chosen``/``rejected``: strings, or message lists (chosen/rejected end with
    the assistant answers being compared)."""
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with 'prompt', 'chosen' and 'rejected', got {_type_name(obj)}")
        return None
    out = {}
    for key in ("prompt", "chosen", "rejected"):
        value = obj.get(key)
        if key not in obj:
            errors.add(row.where, f"field {key!r} is missing")
        elif isinstance(value, str):
            if value.strip():
                out[key] = value.strip()
            else:
                errors.add(row.where, f"field {key!r} is empty")
        elif isinstance(value, list):
            checked = _validate_messages(value, row, errors, name=key, require_assistant=key != "prompt")
            if checked is not None:
                out[key] = checked["messages"]
        else:
            errors.add(row.where, f"field {key!r} must be a string or a message list, got {_type_name(value)}")
    if len(out) == 3 and out["chosen"] == out["rejected"]:
        errors.add(row.where, "field 'rejected' is the same as 'chosen', so the pair teaches nothing")
        return None
    return out if len(out) == 3 else None


def _optional_str(obj: dict, key: str, row: _Row, errors: _RowErrors) -> tuple[str, bool]:
    value = obj.get(key)
    if value is None:
        return "", True
    if not isinstance(value, str):
        errors.add(row.where, f"field {key!r} must be a string, got {_type_name(value)}")
        return "", False
    return value.strip(), True


def _chat_record(row: _Row, errors: _RowErrors, from_csv: bool, messages_field: str = "messages") -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with 'messages' (or alpaca 'instruction'/"
                              f"'output'), got {_type_name(obj)}")
        return None
    if messages_field != "messages" and messages_field in obj:
        turns = obj[messages_field]
        # A renamed column holds either OpenAI messages or sharegpt turns; the keys tell which.
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
            return _sharegpt_record(turns, row, errors)
        obj = {"messages": turns}
    if "messages" in obj:
        messages = obj["messages"]
        if from_csv and isinstance(messages, str):
            # A CSV cell can only hold text, so accept the messages list as JSON there.
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as exc:
                errors.add(row.where, f"field 'messages' is not a valid JSON list ({exc.msg})")
                return None
        return _validate_messages(messages, row, errors)
    if "conversations" in obj:
        return _sharegpt_record(obj["conversations"], row, errors)
    if "instruction" in obj or "output" in obj:
        return _alpaca_record(obj, row, errors)
    errors.add(row.where, "field 'messages' is missing (and no sharegpt 'conversations' or alpaca "
                          f"'instruction'/'output' either); fields are: {_field_list(obj)}")
    return None


def _sharegpt_record(turns: Any, row: _Row, errors: _RowErrors) -> dict | None:
    """sharegpt ``conversations: [{"from": "human"|"gpt"|"system", "value": ...}]`` as messages."""
    if not isinstance(turns, list):
        errors.add(row.where, f"field 'conversations' must be a list, got {_type_name(turns)}")
        return None
    messages = []
    for turn in turns:
        if isinstance(turn, dict) and ("from" in turn or "value" in turn):
            speaker = turn.get("from")
            role = SHAREGPT_ROLES.get(speaker.lower(), speaker) if isinstance(speaker, str) else speaker
            message = {"content": turn["value"]} if "value" in turn else {}
            messages.append({"role": role, **message} if "from" in turn else message)
        else:
            messages.append(turn)
    return _validate_messages(messages, row, errors, name="conversations", role_key="from", content_key="value")


def _validate_messages(messages: Any, row: _Row, errors: _RowErrors, name: str = "messages",
                       role_key: str = "role", content_key: str = "content",
                       require_assistant: bool = True) -> dict | None:
    if not isinstance(messages, list):
        errors.add(row.where, f"field {name!r} must be a list, got {_type_name(messages)}")
        return None
    if not messages:
        errors.add(row.where, f"field {name!r} is empty")
        return None
    ok = True
    out = []
    for i, msg in enumerate(messages):
        field = f"{name}[{i}]"
        if not isinstance(msg, dict):
            errors.add(row.where, f"field {field!r} must be an object with {role_key!r} and {content_key!r}, "
                                  f"got {_type_name(msg)}"); ok = False
            continue
        role, content = msg.get("role"), msg.get("content")
        if "role" not in msg:
            errors.add(row.where, f"field '{field}.{role_key}' is missing"); ok = False
        elif role not in ROLES:
            errors.add(row.where, f"field '{field}.{role_key}' has unknown role {role!r} "
                                  f"(allowed: {', '.join(ROLES)})"); ok = False
        if "content" not in msg:
            errors.add(row.where, f"field '{field}.{content_key}' is missing"); ok = False
        elif not isinstance(content, str):
            errors.add(row.where, f"field '{field}.{content_key}' must be a string, "
                                  f"got {_type_name(content)}"); ok = False
        elif not content.strip():
            errors.add(row.where, f"field '{field}.{content_key}' is empty"); ok = False
        if ok:
            out.append({"role": role, "content": content})
    for i in range(1, len(out) if ok else 0):
        if out[i]["role"] == out[i - 1]["role"] and out[i]["role"] != "system":
            # Two user (or assistant) turns in a row: usually a lost turn, and templates reject it.
            errors.add(row.where, f"field '{name}[{i}].{role_key}' is a second {out[i]['role']!r} turn in a row")
            ok = False
    if ok and require_assistant and not any(m["role"] == "assistant" for m in out):
        # Chat training learns from assistant turns only; without one the row teaches nothing.
        errors.add(row.where, f"field {name!r} has no assistant turn")
        ok = False
    return {"messages": out} if ok else None


def _alpaca_record(obj: dict, row: _Row, errors: _RowErrors) -> dict | None:
    instruction, output = (_required_text(obj, key, row, errors) for key in ("instruction", "output"))
    ok = instruction is not None and output is not None
    extra, ok_input = _optional_str(obj, "input", row, errors)
    system, ok_system = _optional_str(obj, "system", row, errors)
    history, ok_history = _alpaca_history(obj.get("history"), row, errors)
    if not (ok and ok_input and ok_system and ok_history):
        return None
    user = instruction + (f"\n\n{extra}" if extra else "")
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages += [{"role": "user", "content": user},
                 {"role": "assistant", "content": output}]
    return {"messages": messages}


def _alpaca_history(history: Any, row: _Row, errors: _RowErrors) -> tuple[list[tuple[str, str]], bool]:
    """Alpaca's optional ``history``: earlier ``[instruction, output]`` pairs of the same chat."""
    if history is None:
        return [], True
    pairs = history if isinstance(history, list) else None
    ok = pairs is not None and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p) for p in pairs)
    if not ok:
        errors.add(row.where, "field 'history' must be a list of [instruction, output] string pairs")
        return [], False
    return [(q.strip(), a.strip()) for q, a in pairs], True


def _keep_fields(rec: dict, row: _Row, names: tuple[str, ...], errors: _RowErrors) -> None:
    """Carry extra columns (a timestamp or group id for splitting) into the record."""
    for name in names:
        value = row.value.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.add(row.where, f"field {name!r} is missing" if name not in row.value else f"field {name!r} is empty")
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            errors.add(row.where, f"field {name!r} must be a string or number, got {_type_name(value)}")
        else:
            rec[name] = value


def load_file(path: Path, display: str, shape: str, text_field: str = "text", label_field: str = "label",
              on_error: str = "raise", keep_fields: tuple[str, ...] = (), text_delimiter: str | None = None,
              split: str | None = None, messages_field: str = "messages") -> tuple[list[dict], list[dict]]:
    """Read and validate one local file: returns ``(records, rejects)``.

    Raises:
        DataError: an unreadable or empty file, columns missing from every row, or (with
            ``on_error="raise"``) any invalid row, listed with line, field and reason.
    """
    ext = "(datasets folder)" if path.is_dir() else path.suffix.lower()
    if ext == ".txt" and shape != "text":
        raise DataError(f"{display}: a .txt file holds raw text, but a {shape} dataset was asked for.",
                        "Use .txt files for continued pretraining (task: pretrain), or give .jsonl/.csv rows.")
    if ext not in SUPPORTED_EXTENSIONS + ("(datasets folder)",):
        raise DataError(
            f"{display}: unsupported file type {ext or '(no extension)'!r}.",
            f"Use one of: {', '.join(SUPPORTED_EXTENSIONS)}.",
        )
    errors = _RowErrors(display)
    header: list[str] | None = None
    if ext == ".jsonl":
        try:
            rows = list(_iter_jsonl(path.read_bytes()))
        except OSError as exc:
            raise DataError(f"{display} cannot be read ({exc.strerror or exc}).") from exc
    elif ext == ".json":
        rows = list(_iter_json(_read_text(path, display), display))
    elif ext == ".parquet":
        rows = _iter_parquet(path, display)
    elif ext == ".txt":
        rows = _iter_txt(_read_text(path, display), text_delimiter)
    elif ext == "(datasets folder)":
        rows = _iter_dataset_folder(path, display, split)
    else:
        header, rows = _iter_csv(_read_text(path, display), "," if ext == ".csv" else "\t", display)

    if not rows:
        raise DataError(f"{display} has no data rows.", "Add rows to the file, or point to another dataset.")

    _check_columns(rows, header, shape, display, text_field, label_field)

    records = []
    for row in progress(rows, f"validate {path.name}"):
        if isinstance(row.value, _BadRow):
            errors.add(row.where, row.value.reason)
            rec = None
        elif shape == "classification":
            rec = _classification_record(row, errors, text_field, label_field)
        elif shape == "text":
            rec = _text_record(row, errors, text_field)
        elif shape == "preference":
            rec = _preference_record(row, errors)
        else:
            rec = _chat_record(row, errors, from_csv=header is not None, messages_field=messages_field)
        if rec is not None and keep_fields:
            _keep_fields(rec, row, keep_fields, errors)
        if not errors.close_row(row) and rec is not None:
            # Provenance travels with the row so later checks (labels, length) can name it.
            rec["_where"] = f"{display} {row.where}"
            records.append(rec)
    if on_error == "raise":
        errors.raise_if_any()
    return records, errors.rejects
