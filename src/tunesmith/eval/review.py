"""Blind side-by-side human review: export a page for reviewers, import their votes.

``export_review`` writes, for two systems' answers to the same prompts, a self-contained
``review.html`` (no server, nothing fetched), the same items as ``review.csv`` for
spreadsheet reviewers and as a Label Studio project (``labelstudio.json`` +
``labelstudio_config.xml``), and ``key.json``. Reviewers see "Answer 1" and "Answer 2";
which system is which differs per item and is written only to the key, which the
exporter keeps. ``import_reviews`` checks the reviewers' files against the key, unblinds
the votes and returns the report (win rate with its Wilson interval, mean ratings,
agreement between raters, the items they disagree on; in ``eval/review_import.py``).

The files: ``key.json`` = ``{"format": "tunesmith-review-key", "version", "export_id",
"names": {"A", "B"}, "seed", "items_sha256", "created_at", "items": {item_id: {"1": "A"|"B",
"2": "B"|"A"}}}``. The page saves ``review-<export_id>-<reviewer>.json`` =
``{"format": "tunesmith-review-votes", "version", "export_id", "reviewer", "saved_at",
"items": [{"item_id", "choice": "1"|"2"|"tie"|"both_bad"|null, "note",
"ratings": {"1": {dimension: 1-5}, "2": {...}}}]}``.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import random
import re
import secrets
import time
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.storage import atomic_write_text

__all__ = ["CHOICES", "DIMENSIONS", "export_review", "render_page", "labelstudio_config"]

DIMENSIONS = ("accuracy", "relevance", "fluency", "usefulness")  # rated 1-5 per answer
CHOICES = ("1", "2", "tie", "both_bad")  # what a reviewer picks; "1"/"2" are the blinded sides
KEY_FORMAT = "tunesmith-review-key"
TEMPLATE = Path(__file__).resolve().parent.parent / "assets" / "review" / "review.html"
CSV_COLUMNS = ["export_id", "item_id", "prompt", "answer_1", "answer_2", "reference", "choice", "note",
               *[f"{dim}_{side}" for side in ("1", "2") for dim in DIMENSIONS], "reviewer"]
LABELSTUDIO_CHOICES = {"1": "Answer 1 better", "2": "Answer 2 better", "tie": "Tie", "both_bad": "Both bad"}


# --------------------------------------------------------------------------------------
# Export


def export_review(items: list[dict], out_dir: Path, names: tuple[str, str] | list[str],
                  seed: int | None = 0, title: str | None = None) -> dict:
    """Write a blind A/B review of ``items`` into ``out_dir``.

    Args:
        items: ``{"id", "prompt", "answer_a", "answer_b", "reference" (optional)}`` each;
            ``answer_a`` is system ``names[0]``'s answer, ``answer_b`` system ``names[1]``'s.
        out_dir: gets ``review.html``, ``review.csv``, ``labelstudio.json``,
            ``labelstudio_config.xml`` (all for reviewers) and ``key.json`` (not for them).
        names: the two systems, e.g. ``("base", "runs/sft-identity-lora")``.
        seed: decides the sides. Exactly half the items (one more or less) show system A
            on the left, so a reviewer's bias for one side cannot favour a system. The
            sides follow from the seed, the names and the items; with the default seed a
            reviewer who knows all three and this code could rebuild them, so pass
            ``None`` (a secret random seed, recorded in the key) for a review that matters.
        title: the page's heading (must not name a system).

    Returns:
        ``{"export_id", "n_items", "files": {"page", "csv", "labelstudio",
        "labelstudio_config", "key"}}`` (paths as strings).

    Raises:
        TunesmithError: malformed items, duplicate ids, names not two distinct strings, a
            title that names a system, or ``out_dir`` holding the key of another export.
    """
    names = _check_names(names)
    rows = _check_items(items)
    named = [n for n in names if title and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", title, re.IGNORECASE)]
    if named:
        raise TunesmithError("The review title names one of the systems, which would unblind the page.",
                             "Use a neutral title such as 'Chat answers, March'.")
    if seed is None:
        seed = secrets.randbits(64)
    items_sha = hashlib.sha256(_canonical(rows)).hexdigest()
    digest = hashlib.sha256(_canonical({"items": items_sha, "names": names, "seed": seed})).hexdigest()
    export_id = digest[:12]
    a_left = _balanced_sides(len(rows), random.Random(int(digest, 16)))

    out_dir = Path(out_dir)
    key_path = out_dir / "key.json"
    _refuse_foreign_key(key_path, export_id)
    shown = []
    key_items = {}
    for row, left in zip(rows, a_left):
        first, second = ("answer_a", "answer_b") if left else ("answer_b", "answer_a")
        key_items[row["id"]] = {"1": "A" if left else "B", "2": "B" if left else "A"}
        shown.append({"item_id": row["id"], "prompt": row["prompt"], "answer_1": row[first],
                      "answer_2": row[second], "reference": row["reference"]})
    key = {"format": KEY_FORMAT, "version": 1, "export_id": export_id, "names": {"A": names[0], "B": names[1]},
           "seed": seed, "items_sha256": items_sha, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "items": key_items}
    title = title or f"Blind review: {len(rows)} prompts"
    files = {"key": key_path, "page": out_dir / "review.html", "csv": out_dir / "review.csv",
             "labelstudio": out_dir / "labelstudio.json", "labelstudio_config": out_dir / "labelstudio_config.xml"}
    # The key first: a page sent out without its key could never be unblinded.
    atomic_write_text(files["key"], json.dumps(key, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(files["page"], render_page(export_id, title, shown))
    atomic_write_text(files["csv"], _csv_text(export_id, shown))
    tasks = [{"data": {"export_id": export_id, **{k: v or "" for k, v in item.items()}}} for item in shown]
    atomic_write_text(files["labelstudio"], json.dumps(tasks, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(files["labelstudio_config"], labelstudio_config())
    return {"export_id": export_id, "n_items": len(rows), "files": {k: str(v) for k, v in files.items()}}


def render_page(export_id: str, title: str, items: list[dict]) -> str:
    """The review page: the template with the title and the blinded items embedded.

    The items go into a ``<script type="application/json">`` block. ``<``, ``>`` and
    ``&`` are written as JSON ``\\u`` escapes, so an answer containing ``</script>`` or
    ``<!--`` cannot end the block early; the page's script puts all text in with
    ``textContent``, never as HTML.
    """
    data = json.dumps({"export_id": export_id, "title": title, "choices": list(CHOICES),
                       "dimensions": list(DIMENSIONS), "items": items}, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        data = data.replace(char, escaped)
    values = {"TITLE": html.escape(title), "DATA": data}
    # One pass, so text substituted for one placeholder is never searched for the other.
    return re.sub(r"\{\{(TITLE|DATA)\}\}", lambda m: values[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def labelstudio_config() -> str:
    """A Label Studio labeling config: prompt, reference and both answers as Text objects,
    a single Choices control for the pick (aliases give the importer's codes), a Rating per
    dimension and answer, and a TextArea for the note."""
    choices = "\n".join(f'    <Choice value="{label}" alias="{code}"/>' for code, label in LABELSTUDIO_CHOICES.items())
    ratings = "\n".join(
        f'    <Header value="{dim.capitalize()} of answer {side} (1-5)" size="6"/>\n'
        f'    <Rating name="{dim}_{side}" toName="answer_{side}" maxRating="5" icon="star"/>'
        for side in ("1", "2") for dim in DIMENSIONS)
    return f"""<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Reference (may be empty)" size="6"/>
  <Text name="reference" value="$reference"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1;">
      <Header value="Answer 1"/>
      <Text name="answer_1" value="$answer_1"/>
    </View>
    <View style="flex: 1;">
      <Header value="Answer 2"/>
      <Text name="answer_2" value="$answer_2"/>
    </View>
  </View>
  <Header value="Which answer is better?"/>
  <Choices name="choice" toName="prompt" choice="single-radio" showInline="true" required="true">
{choices}
  </Choices>
  <View>
{ratings}
  </View>
  <Header value="Note (optional)"/>
  <TextArea name="note" toName="prompt" rows="3" maxSubmissions="1"/>
</View>
"""


def _check_names(names) -> tuple[str, str]:
    names = tuple(names)
    if len(names) != 2 or not all(isinstance(n, str) and n.strip() for n in names) or names[0] == names[1]:
        raise TunesmithError(f"A blind review compares two differently named systems, got {names!r}.",
                             "Pass names=(system_a, system_b), e.g. ('base', 'runs/sft').")
    return names


def _check_items(items: list[dict]) -> list[dict]:
    """The items in a fixed shape, or a TunesmithError listing every bad one."""
    problems, rows, seen = [], [], set()
    items = list(items)
    for index, item in enumerate(items):
        where = f"item {index}" + (f" (id {item.get('id')!r})" if isinstance(item, dict) else "")
        if not isinstance(item, dict):
            problems.append(f"{where}: is a {type(item).__name__}, not a dict")
            continue
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id.strip():
            problems.append(f"{where}: 'id' must be a non-empty string")
        elif item_id in seen:
            problems.append(f"{where}: the id occurs twice")
        seen.add(item_id)
        for field in ("prompt", "answer_a", "answer_b"):
            if not isinstance(item.get(field), str):
                problems.append(f"{where}: '{field}' must be a string")
        if item.get("reference") is not None and not isinstance(item["reference"], str):
            problems.append(f"{where}: 'reference' must be a string or None")
        rows.append({"id": item_id, "prompt": item.get("prompt"), "answer_a": item.get("answer_a"),
                     "answer_b": item.get("answer_b"), "reference": item.get("reference")})
    if not items:
        problems.append("there are no items")
    if problems:
        raise TunesmithError("Cannot export the review:\n  " + "\n  ".join(problems),
                             'Each item needs {"id", "prompt", "answer_a", "answer_b", "reference" (optional)}.')
    return rows


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _balanced_sides(n: int, rng: random.Random) -> list[bool]:
    """Per item, whether system A is shown first: half True, shuffled (odd n: the last coin
    is free). Independent coin flips could put one system on the left for most items, and
    a side bias of the reviewers would then look like a preference for that system."""
    sides = [True] * (n // 2) + [False] * (n // 2)
    if n % 2:
        sides.append(rng.random() < 0.5)
    rng.shuffle(sides)
    return sides


def _refuse_foreign_key(key_path: Path, export_id: str) -> None:
    if not key_path.is_file():
        return
    try:
        old = json.loads(key_path.read_text(encoding="utf-8")).get("export_id")
    except (ValueError, AttributeError):
        old = None
    if old != export_id:
        raise TunesmithError(f"{key_path} holds the key of another export ({old}); writing here would lose it, "
                             "and the pages sent out with it could no longer be unblinded.",
                             "Export into a new folder, or move the old one away first.")


def _spreadsheet_safe(text: str | None) -> str:
    """Answers are untrusted text: a cell starting with = + - @ would run as a formula in a
    spreadsheet, so such cells get a leading apostrophe (OWASP's CSV-injection advice)."""
    text = text or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_text(export_id: str, shown: list[dict]) -> str:
    buffer = io.StringIO()
    # A BOM, so that Excel reads the file as UTF-8 rather than the local code page.
    buffer.write("\ufeff")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for item in shown:
        writer.writerow({"export_id": export_id, "item_id": item["item_id"],
                         **{k: _spreadsheet_safe(item[k]) for k in ("prompt", "answer_1", "answer_2", "reference")}})
    return buffer.getvalue()
