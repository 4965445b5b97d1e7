"""Import of blind review votes: check them against the export's key, unblind, summarise.

Reads what reviewers send back -- the page's saved JSON, a filled-in ``review.csv`` or a
Label Studio export -- and refuses, naming the file and item, anything that does not
belong to the export (unknown items, another export, duplicate votes, invalid choices or
ratings). :func:`import_reviews` returns the report of ``eval/agreement.py``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.eval.agreement import summarize_votes

from tunesmith.eval.review import CHOICES, DIMENSIONS, KEY_FORMAT, LABELSTUDIO_CHOICES


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
