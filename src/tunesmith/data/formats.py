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
            yield Row(f"line {lineno}", json.loads(line))
        except json.JSONDecodeError as exc:
            # Kept as a row so it is reported in line order with the other problems.
            yield Row(f"line {lineno}", BadRow(f"not valid JSON ({exc.msg} at column {exc.colno})", line))


def _iter_json(text: str, display: str) -> Iterator[Row]:
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
        yield Row(f"index {i}", item)


def _iter_csv(text: str, delimiter: str, display: str) -> tuple[list[str], list[Row]]:
    # StringIO(newline="") splits only on \n/\r, as the csv module expects; str.splitlines
    # would also split on U+2028 and friends inside a cell.
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
        header, rows = _iter_csv(_read_text(path, display), "," if ext == ".csv" else "\t", display)
    return header, rows
