"""Reading local dataset files into rows, before any validation.

Each supported format (.jsonl, .json, .csv, .tsv, .parquet, .txt, a saved ``datasets``
folder) becomes a list of :class:`Row`: where the row is (what the user looks for in
their editor) and its value, normally a dict. A row that cannot even be parsed (bad
JSON, bad UTF-8, too many CSV cells) is kept as a :class:`BadRow` so it is reported in
order with the other problems; a file that cannot be read at all raises DataError.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from tunesmith.errors import DataError

SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
DATASET_FOLDER = "(datasets folder)"  # the "extension" of a save_to_disk folder


class Row(NamedTuple):
    """One row as read from a file, before validation."""

    where: str  # "line 3" / "index 2": what the user looks for in their editor
    value: Any


class BadRow(NamedTuple):
    """A row that could not even be parsed; carries the reason to report and its raw text."""

    reason: str
    raw: str = ""


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


def _bad_text(value) -> str | None:
    """Why a parsed value cannot be used as text (a lone surrogate, which no tokenizer can
    encode), or None. Iterative: a deeply nested row must not exhaust the stack here."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"holds a lone surrogate (\\u{ord(item[exc.start]):04x}), which is not a character"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


# Bytes that are not UTF-8, kept by the "surrogateescape" decoding of a table as U+DC80..U+DCFF,
# so the row holding them is rejected instead of the whole file.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _read_table_text(path: Path, display: str) -> str:
    try:
        return path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise DataError(f"{display} cannot be read ({exc.strerror or exc}).") from exc


def _iter_jsonl(data: bytes) -> Iterator[Row]:
    # Decoded line by line, so one line with bad bytes is one bad row, not a bad file.
    data = data.removeprefix(b"\xef\xbb\xbf")
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Row(f"line {lineno}", BadRow(f"not valid UTF-8 (byte {exc.start + 1} of the line: {exc.reason})",
                                               raw.decode("utf-8", errors="replace")))
            continue
        if not line.strip():
            continue  # blank lines (often a trailing one) are not rows
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            # Kept as a row so it is reported in line order with the other problems.
            yield Row(f"line {lineno}", BadRow(f"not valid JSON ({exc.msg} at column {exc.colno})", line[:200]))
            continue
        except RecursionError:
            yield Row(f"line {lineno}", BadRow("nested too deeply to read", line[:200]))
            continue
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            yield Row(f"line {lineno}", BadRow(f"not readable JSON ({exc})", line[:200]))
            continue
        problem = _bad_text(value)
        yield Row(f"line {lineno}", BadRow(problem, line[:200]) if problem else value)


def _iter_json(text: str, display: str) -> Iterator[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{display} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
            "Fix the JSON, or store one object per line in a .jsonl file.",
        ) from exc
    except (RecursionError, ValueError) as exc:
        raise DataError(f"{display} cannot be read as JSON ({'nested too deeply' if isinstance(exc, RecursionError) else exc}).",
                        "Store one object per line in a .jsonl file, so one bad row is one reject.") from None
    if not isinstance(data, list):
        raise DataError(
            f"{display} must hold a JSON list of row objects, but its top level is a "
            f"{type(data).__name__}.",
            "Wrap the rows in [...], or store one object per line in a .jsonl file.",
        )
    for i, item in enumerate(data):
        problem = _bad_text(item)
        yield Row(f"index {i}", BadRow(problem) if problem else item)


def _unclosed_quote_line(text: str, delimiter: str) -> int | None:
    """The line of a row whose opening double quote never closes (the lenient reader would
    silently make the rest of the file one cell), or None."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as exc:
        return start if "unexpected end of data" in str(exc) else None
    return None


def _iter_csv(text: str, delimiter: str, display: str) -> tuple[list[str], list[Row]]:
    # StringIO(newline="") splits only on \n/\r, as the csv module expects; str.splitlines
    # would also split on U+2028 and friends inside a cell.
    unclosed = _unclosed_quote_line(text, delimiter)
    if unclosed is not None:
        raise DataError(f"{display}: line {unclosed} opens a double quote that is never closed, so every line "
                        "after it would be read as one cell.", "Close the quote (or double it: \"\" inside a "
                        "quoted cell), or remove it.")
    csv.field_size_limit(max(len(text), 131_072))  # a long cell is a long text, not a reason to refuse the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[Row] = []
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
            undecodable = next((v for v in values if _UNDECODED.search(v)), None)
            if undecodable is not None:
                byte = _UNDECODED.search(undecodable).group()
                rows.append(Row(where, BadRow(f"not valid UTF-8 (byte 0x{ord(byte) - 0xDC00:02x})",
                                              delimiter.join(values).encode("utf-8", "replace").decode())))
                continue
            if len(values) > len(header):
                rows.append(Row(where, BadRow(
                    f"has {len(values)} cells but the header has {len(header)} columns "
                    "(unquoted delimiter in a value?)", delimiter.join(values))))
                continue
            rows.append(Row(where, dict(zip(header, values))))
    except csv.Error as exc:
        raise DataError(
            f"{display}: cannot parse line {reader.line_num} ({exc}).",
            "Check the quoting around that line (a cell with the delimiter or a newline "
            "must be wrapped in double quotes).",
        ) from exc
    return header, rows


def _iter_parquet(path: Path, display: str) -> list[Row]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{display} is not a readable Parquet file ({exc}).") from exc
    return [Row(f"row {i + 1}", row) for i, row in enumerate(table.to_pylist())]


def _iter_dataset_folder(path: Path, display: str, split: str | None) -> list[Row]:
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
    return [Row(f"row {i + 1}", row) for i, row in enumerate(data)]


def _iter_txt(text: str, delimiter: str | None) -> list[Row]:
    """One document per line, or per ``delimiter`` (e.g. a blank line, or "%" for fortune files)."""
    if delimiter is None:
        return [Row(f"line {n}", {"text": line}) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    rows, line = [], 1
    for chunk in text.split(delimiter):
        if chunk.strip():
            rows.append(Row(f"line {line + len(chunk) - len(chunk.lstrip(chr(10)))}", {"text": chunk.strip()}))
        line += chunk.count("\n") + delimiter.count("\n")
    return rows


def read_rows(path: Path, display: str, shape: str, text_delimiter: str | None = None,
              split: str | None = None) -> tuple[list[str] | None, list[Row]]:
    """Read ``path`` into ``(header, rows)``; ``header`` is the column list of a CSV/TSV
    file and None for every other format.

    Raises:
        DataError: a .txt file for a shape other than ``text``, an unsupported file type,
            or a file that cannot be read or parsed as a whole.
    """
    ext = DATASET_FOLDER if path.is_dir() else path.suffix.lower()
    if ext == ".txt" and shape != "text":
        raise DataError(f"{display}: a .txt file holds raw text, but a {shape} dataset was asked for.",
                        "Use .txt files for continued pretraining (task: pretrain), or give .jsonl/.csv rows.")
    if ext not in SUPPORTED_EXTENSIONS + (DATASET_FOLDER,):
        raise DataError(
            f"{display}: unsupported file type {ext or '(no extension)'!r}.",
            f"Use one of: {', '.join(SUPPORTED_EXTENSIONS)}.",
        )
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
    elif ext == DATASET_FOLDER:
        rows = _iter_dataset_folder(path, display, split)
    else:
        header, rows = _iter_csv(_read_table_text(path, display), "," if ext == ".csv" else "\t", display)
    return header, rows
