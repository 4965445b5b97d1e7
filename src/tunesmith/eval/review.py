"""Blind side-by-side human review: export a page for reviewers, import their votes.

``export_review`` writes, for two systems' answers to the same prompts, a self-contained
``review.html`` (no server, nothing fetched), the same items as ``review.csv`` for
spreadsheet reviewers and as a Label Studio project (``labelstudio.json`` +
``labelstudio_config.xml``), and ``key.json``. Reviewers see "Answer 1" and "Answer 2";
which system is which differs per item and is written only to the key, which the
exporter keeps. ``import_reviews`` checks the reviewers' files against the key, unblinds
the votes and returns the report (win rate with its Wilson interval, mean ratings,
agreement between raters, the items they disagree on); ``format_review_report`` prints it.

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
from tunesmith.eval.agreement import format_review_report, summarize_votes
from tunesmith.storage import atomic_write_text

__all__ = ["CHOICES", "DIMENSIONS", "export_review", "format_review_report", "import_reviews", "load_key"]

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


# --------------------------------------------------------------------------------------
# Import


def load_key(key_path: Path) -> dict:
    """The unblinding key written by :func:`export_review`.

    Raises:
        TunesmithError: the file is missing or is not a review key.
    """
    key_path = Path(key_path)
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunesmithError(f"The review key {key_path} does not exist.",
                             "Pass the key.json written next to the exported review.html.") from None
    except ValueError as exc:
        raise TunesmithError(f"The review key {key_path} is not valid JSON ({exc}).") from None
    if not isinstance(key, dict) or key.get("format") != KEY_FORMAT or not isinstance(key.get("items"), dict):
        raise TunesmithError(f"{key_path} is not a review key (written by export_review as key.json).")
    return key


def import_reviews(files: list[Path], key_path: Path) -> dict:
    """Read reviewers' files, check them against the key, unblind them and summarize.

    Args:
        files: votes saved by the page (``.json``), filled-in copies of ``review.csv``
            (``.csv``; the ``reviewer`` column names the reviewer, the file name when it is
            empty; rows without a choice, rating or note are skipped), or Label Studio JSON
            exports (``.json`` holding a list of tasks; the annotator is the reviewer).
        key_path: the export's ``key.json``.

    Returns:
        ``export_id``, ``files`` and the report of
        :func:`tunesmith.eval.agreement.summarize_votes`.

    Raises:
        TunesmithError: listing each problem with its file and item id: a file from
            another export, an unknown item id, two votes of one reviewer on one item (in
            one file or across files), a choice other than 1/2/tie/both_bad, a rating
            outside 1-5, a missing reviewer name; or when no file holds any vote.
    """
    files = [Path(f) for f in files]
    key = load_key(key_path)
    problems: list[str] = []
    votes = []
    for path in files:
        votes += _check_entries(_read_entries(path, problems), key, problems)
    seen: dict[tuple[str, str], list[str]] = {}
    for vote in votes:
        seen.setdefault((vote["reviewer"], vote["item_id"]), []).append(vote["where"])
    problems += [f"{' and '.join(dict.fromkeys(wheres))} (item {item!r}): reviewer {reviewer!r} voted "
                 f"{len(wheres)} times on this item" for (reviewer, item), wheres in seen.items() if len(wheres) > 1]
    if problems:
        listed = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise TunesmithError(f"The review files have {len(problems)} problem(s):\n  " + "\n  ".join(listed),
                             "Each vote needs this export's item ids, choice 1, 2, tie or both_bad, ratings from "
                             "1 to 5 and a reviewer name; import only the latest file of each reviewer (a CSV "
                             "row with an empty reviewer column counts as the file name's reviewer).")
    if not votes:
        raise TunesmithError(f"No votes found in {', '.join(map(str, files)) or 'no files'}.",
                             "Pass the files the reviewers saved from review.html (or their filled-in review.csv).")
    report = summarize_votes(votes, key["names"], list(key["items"]), DIMENSIONS)
    return {"export_id": key["export_id"], "files": [str(f) for f in files], **report}


def _read_entries(path: Path, problems: list[str]) -> list[dict]:
    """The raw entries of one reviewer file (not yet checked), whatever its kind."""
    if not path.is_file():
        problems.append(f"{path}: no such file")
        return []
    if path.suffix.lower() == ".csv":
        return _read_csv(path, problems)
    if path.suffix.lower() != ".json":
        problems.append(f"{path}: expected a .json file (saved by the review page, or a Label Studio export) or a .csv")
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid JSON ({exc})")
        return []
    if isinstance(data, list):
        return _read_labelstudio(path, data)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        reviewer = str(data.get("reviewer") or "").strip()
        return [{"where": str(path), "export_id": data.get("export_id"), "reviewer": reviewer,
                 **({k: e.get(k) for k in ("item_id", "choice", "note", "ratings")} if isinstance(e, dict) else {})}
                for e in data["items"]]
    # The likely mix-ups of a shell glob such as review-*.json: the key, or an earlier report.
    kind = {KEY_FORMAT: "the unblinding key"}.get(data.get("format")) if isinstance(data, dict) else None
    if isinstance(data, dict) and "win_rate" in data:
        kind = "a review report"
    problems.append(f"{path}: {kind or 'neither a file saved by the review page nor a Label Studio export'}, "
                    "not a reviewer's votes")
    return []


def _read_csv(path: Path, problems: list[str]) -> list[dict]:
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{path}: cannot read it as a UTF-8 CSV ({exc})")
        return []
    missing = [c for c in ("export_id", "item_id", "choice") if c not in (reader.fieldnames or [])]
    if missing:
        problems.append(f"{path}: no column {', '.join(missing)}; start from the exported review.csv")
        return []
    entries = []
    for number, row in enumerate(rows, start=2):  # row 1 is the header, as a spreadsheet counts
        ratings = {side: {dim: row.get(f"{dim}_{side}") for dim in DIMENSIONS} for side in ("1", "2")}
        if not any(str(v or "").strip() for v in [row.get("choice"), row.get("note"),
                                                  *ratings["1"].values(), *ratings["2"].values()]):
            continue  # a prompt this reviewer has not reviewed
        entries.append({"where": f"{path} row {number}", "export_id": row.get("export_id"), "ratings": ratings,
                        "reviewer": (row.get("reviewer") or "").strip() or path.stem, "item_id": row.get("item_id"),
                        "choice": row.get("choice"), "note": row.get("note")})
    return entries


def _read_labelstudio(path: Path, tasks: list) -> list[dict]:
    """Entries from Label Studio's JSON export: one per (not cancelled) annotation."""
    codes = {label.lower(): code for code, label in LABELSTUDIO_CHOICES.items()}
    entries = []
    for task in (t for t in tasks if isinstance(t, dict)):
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            who = annotation.get("completed_by")
            reviewer = str(who.get("email") or who.get("id")) if isinstance(who, dict) else f"labelstudio-user-{who}"
            entry = {"where": str(path), "export_id": data.get("export_id"), "reviewer": reviewer,
                     "item_id": data.get("item_id"), "choice": None, "note": "", "ratings": {"1": {}, "2": {}}}
            for result in (r for r in annotation.get("result") or [] if isinstance(r, dict)):
                name, value = result.get("from_name", ""), result.get("value") or {}
                if name == "choice":
                    pick = (value.get("choices") or [None])[0]
                    entry["choice"] = codes.get(str(pick).lower(), pick)  # the label if no alias was set
                elif name == "note":
                    entry["note"] = "\n".join(value.get("text") or [])
                elif name[-2:] in ("_1", "_2") and name[:-2] in DIMENSIONS:
                    entry["ratings"][name[-1]][name[:-2]] = value.get("rating")
            entries.append(entry)
    return entries


def _check_entries(entries: list[dict], key: dict, problems: list[str]) -> list[dict]:
    """The valid entries of one file as unblinded votes; each problem goes to ``problems``."""
    foreign = next((e for e in entries if e.get("export_id") != key["export_id"]), None)
    if foreign:
        # One line per file: every other entry of it would repeat the same complaint.
        problems.append(f"{foreign['where']} (item {foreign.get('item_id')!r}): from export "
                        f"{foreign.get('export_id')!r}, but the key is for export {key['export_id']!r}")
        return []
    votes = []
    for entry in entries:
        item, before = entry.get("item_id"), len(problems)
        where = f"{entry['where']} (item {item!r})"
        if not entry["reviewer"]:
            problems.append(f"{where}: no reviewer name")
        if not isinstance(item, str) or item not in key["items"]:
            problems.append(f"{where}: no such item in export {key['export_id']}")
        choice = str(entry.get("choice") or "").strip().lower().replace(" ", "_") or None
        if choice is not None and choice not in CHOICES:
            problems.append(f"{where}: choice {entry.get('choice')!r} is not one of {', '.join(CHOICES)}")
        ratings = _check_ratings(entry.get("ratings"), where, problems)
        note = str(entry.get("note") or "").strip()
        if len(problems) > before or (choice is None and not note and not any(ratings.values())):
            continue
        sides = key["items"][item]  # "1"/"2" -> "A"/"B": the unblinding
        votes.append({"where": entry["where"], "reviewer": entry["reviewer"], "item_id": item, "choice": choice,
                      "winner": sides.get(choice, choice), "note": note,
                      "ratings": {sides[side]: values for side, values in ratings.items()}})
    return votes


def _check_ratings(ratings: Any, where: str, problems: list[str]) -> dict[str, dict[str, int]]:
    """``{"1": {dim: 1-5}, "2": {...}}`` with blanks dropped; bad values go to ``problems``."""
    clean: dict[str, dict[str, int]] = {"1": {}, "2": {}}
    if ratings in (None, ""):
        return clean
    if not isinstance(ratings, dict) or set(ratings) - set(clean):
        problems.append(f"{where}: ratings must look like {{\"1\": {{\"accuracy\": 4}}, \"2\": {{...}}}}")
        return clean
    for side, values in ratings.items():
        if not isinstance(values, dict) or set(values) - set(DIMENSIONS):
            problems.append(f"{where}: ratings of answer {side} must rate only {', '.join(DIMENSIONS)}")
            continue
        for dim, raw in values.items():
            if raw is None or str(raw).strip() == "":
                continue
            number = _whole_number(raw)
            if number is None or not 1 <= number <= 5:
                problems.append(f"{where}: {dim} of answer {side} is {raw!r}, not a whole number from 1 to 5")
            else:
                clean[side][dim] = number
    return clean


def _whole_number(raw: Any) -> int | None:
    # Spreadsheets may write 4 as "4.0"; booleans are not ratings even though bool is an int.
    if isinstance(raw, bool):
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() else None
