"""Preference rows in their four forms, validated row by row, and turned into pairs.

- a pair: ``prompt``/``chosen``/``rejected`` (with ``data.generate_rejected``, ``rejected``
  may be left out: the starting model writes it, see ``objectives/rejections.py``);
- an unpaired judgement (KTO): ``prompt``/``completion``/``label`` (true = thumbs up);
- a ranked list: ``prompt``/``responses``, best first -- every ordered two of it is a pair;
- a rating: ``prompt``/``response``/``score`` -- answers to the same prompt are paired
  when their scores differ by at least ``data.min_gap`` (:func:`pairs_from_ratings`).

Each text is a string or an OpenAI message list (answers end with the assistant turn).
"""

from __future__ import annotations

import bisect
import hashlib
import random

from tunesmith.data.formats import Row

FORMS = "prompt/chosen/rejected, prompt/completion/label, prompt/responses (ranked, best first) or " \
        "prompt/response/score"


def preference_record(row: Row, errors, rejected_optional: bool = False) -> dict | None:
    """The validated record of one preference row, in whichever form it comes; None with
    every problem reported (naming the field) when it is invalid. ``rejected_optional``:
    a pair may come without its rejected answer (one is generated later)."""
    from tunesmith.data.validate import type_name

    obj = row.value
    if not isinstance(obj, dict):
        errors.add(row.where, f"expected an object with {FORMS}, got {type_name(obj)}")
        return None
    if "completion" in obj:
        return _unpaired(obj, row, errors)
    if "responses" in obj:
        return _ranked(obj, row, errors)
    if "response" in obj or "score" in obj:
        return _rated(obj, row, errors)
    return _pair(obj, row, errors, rejected_optional)


def _text(obj: dict, key: str, row: Row, errors, value=None):
    """A prompt or an answer: a non-empty string, or a valid message list."""
    from tunesmith.data.dialects import validate_messages
    from tunesmith.data.validate import type_name

    value = obj.get(key) if value is None else value
    if value is None and key not in obj:
        errors.add(row.where, f"field {key!r} is missing")
    elif isinstance(value, str):
        if value.strip():
            return value.strip()
        errors.add(row.where, f"field {key!r} is empty")
    elif isinstance(value, list):
        checked = validate_messages(value, row, errors, name=key, require_assistant=key != "prompt")
        if checked is not None:
            return checked["messages"]
    else:
        errors.add(row.where, f"field {key!r} must be a string or a message list, got {type_name(value)}")
    return None


def _pair(obj: dict, row: Row, errors, rejected_optional: bool = False) -> dict | None:
    keys = ("prompt", "chosen") if rejected_optional and obj.get("rejected") is None else ("prompt", "chosen", "rejected")
    out = {key: _text(obj, key, row, errors) for key in keys}
    if any(v is None for v in out.values()):
        return None
    if out["chosen"] == out.get("rejected"):
        errors.add(row.where, "field 'rejected' is the same as 'chosen', so the pair teaches nothing")
        return None
    return out


def _unpaired(obj: dict, row: Row, errors) -> dict | None:
    out = {key: _text(obj, key, row, errors) for key in ("prompt", "completion")}
    label = obj.get("label")
    if "label" not in obj:
        errors.add(row.where, "field 'label' is missing")
    elif label in (True, 1, "true", "True", "good", "1"):
        out["label"] = True
    elif label in (False, 0, "false", "False", "bad", "0"):
        out["label"] = False
    else:
        errors.add(row.where, f"field 'label' must be true or false (thumbs up or down), got {label!r}")
    return out if len(out) == 3 and None not in out.values() else None


def _ranked(obj: dict, row: Row, errors) -> dict | None:
    from tunesmith.data.validate import type_name

    prompt = _text(obj, "prompt", row, errors)
    responses = obj["responses"]
    if not isinstance(responses, list):
        errors.add(row.where, f"field 'responses' must be a list (best answer first), got {type_name(responses)}")
        return None
    answers = [_text(obj, f"responses[{i}]", row, errors, value=r) for i, r in enumerate(responses)]
    if any(a is None for a in answers) or prompt is None:
        return None
    distinct = [a for i, a in enumerate(answers) if a not in answers[:i]]
    if len(distinct) < 2:
        errors.add(row.where, "field 'responses' must hold at least two different answers to rank")
        return None
    return {"prompt": prompt, "responses": distinct}


def _rated(obj: dict, row: Row, errors) -> dict | None:
    out = {"prompt": _text(obj, "prompt", row, errors), "response": _text(obj, "response", row, errors)}
    score = obj.get("score")
    if "score" not in obj:
        errors.add(row.where, "field 'score' is missing")
    elif isinstance(score, bool) or not isinstance(score, (int, float)):
        errors.add(row.where, f"field 'score' must be a number, got {score!r}")
    else:
        out["score"] = float(score)
    return out if len(out) == 3 and None not in out.values() else None


def expand_pairs(records: list[dict], min_gap: float) -> tuple[list[dict], dict]:
    """Pairs and unpaired rows as they are; ranked lists and ratings turned into pairs.
    Returns the rows and counts (``{"ranked_lists", "ratings", "pairs_made"}``)."""
    plain = [r for r in records if "responses" not in r and "score" not in r]
    made = [pair for r in records if "responses" in r for pair in pairs_from_ranking(r)]
    ranked = len(made)
    rated = [r for r in records if "score" in r]
    made += pairs_from_ratings(rated, min_gap)
    info = {"ranked_lists": sum("responses" in r for r in records), "ratings": len(rated),
            "pairs_from_rankings": ranked, "pairs_from_ratings": len(made) - ranked}
    return plain + made, info


def pairs_from_ranking(record: dict) -> list[dict]:
    """Every (better, worse) two of a ranked list, as pairs."""
    answers = record["responses"]
    return [dict(_provenance(record), prompt=record["prompt"], chosen=answers[i], rejected=answers[j])
            for i in range(len(answers)) for j in range(i + 1, len(answers))]


def pairs_from_ratings(records: list[dict], min_gap: float) -> list[dict]:
    """Pairs of answers to the same prompt whose scores differ by at least ``min_gap``.

    Each answer is chosen at most once, against a lower-rated answer drawn at random (seeded
    by the prompt, so the pairs are the same on every run): a prompt with ``n`` rated
    answers gives at most ``n`` pairs, not ``n^2``.
    """
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(_key(r["prompt"]), []).append(r)
    pairs = []
    for key, rows in groups.items():
        rng = random.Random(key)
        ranked = sorted(rows, key=lambda r: r["score"])
        scores = [r["score"] for r in ranked]
        for better in rows:
            # Answers rated at least min_gap lower are ranked[:below] (a tiny slack for float scores).
            below = bisect.bisect_right(scores, better["score"] - min_gap + 1e-12)
            lower = ranked[rng.randrange(below)] if below else None
            if lower is not None and lower["response"] != better["response"]:
                pairs.append(dict(_provenance(better), prompt=better["prompt"], chosen=better["response"],
                                  rejected=lower["response"], score_gap=better["score"] - lower["score"]))
    return pairs


def require_pairs(records: list[dict], what: str) -> None:
    """Raise when ``records`` hold unpaired (prompt/completion/label) rows, naming the first.

    Raises:
        DataError: some rows are unpaired.
    """
    from tunesmith.errors import DataError

    unpaired = [r for r in records if "completion" in r]
    if unpaired:
        raise DataError(f"{what} learns from prompt/chosen/rejected pairs, and {unpaired[0].get('_where', 'a row')} "
                        f"is an unpaired prompt/completion/label row ({len(unpaired)} such rows).",
                        "Use task: preference with preference.loss: kto for thumbs-up/down rows, or give pairs.")


def _key(prompt) -> str:
    text = prompt if isinstance(prompt, str) else repr(prompt)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _provenance(record: dict) -> dict:
    return {k: v for k, v in record.items() if k.startswith("_")}
