"""The numbers of a blind human review: win rate, its interval, ratings, rater agreement.

``summarize_votes`` turns unblinded votes (from ``eval/review.py``) into the report and
``format_review_report`` prints it. The statistics under it are general:
``wilson_interval``, ``cohen_kappa`` (matches ``sklearn.metrics.cohen_kappa_score``,
unweighted) and ``fleiss_kappa`` (matches Fleiss 1971); the tests pin all three. Standard
library only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from statistics import NormalDist, fmean

__all__ = ["cohen_kappa", "fleiss_kappa", "format_review_report", "summarize_votes", "wilson_interval"]

OUTCOMES = ("A", "B", "tie", "both_bad")  # an unblinded choice: which system won, or neither


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n``.

    Chosen over the normal ("Wald") interval because it stays inside [0, 1] and keeps its
    coverage for the small ``n`` and extreme rates typical of a human review (8 wins of
    10 gives (0.490, 0.943) at 95%). ``successes`` may be fractional (ties counted as half
    a win). ``n == 0`` says nothing about the rate and returns the whole range (0.0, 1.0).

    Raises:
        ValueError: ``n`` negative, ``successes`` outside [0, n], or ``confidence``
            outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # On paper p = 0 gives a lower end of exactly 0 (p = 1 an upper end of 1); in floats
    # it comes out as rounding dust.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters: ``a[i]`` and ``b[i]`` are their labels for item i.

    Unweighted: every disagreement counts the same, as in
    ``sklearn.metrics.cohen_kappa_score``. When chance agreement is 1 (both raters used
    one and the same label throughout) kappa is 0/0; like scikit-learn this returns
    ``nan`` rather than pretending to know.

    Raises:
        ValueError: the two sequences differ in length or are empty.
    """
    if len(a) != len(b):
        raise ValueError(f"the raters labelled different numbers of items ({len(a)} vs {len(b)})")
    if not a:
        raise ValueError("cohen_kappa needs at least one item")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    if expected == 1:
        return math.nan
    return (observed - expected) / (1 - expected)


def fleiss_kappa(table: Sequence[Sequence[float]]) -> float:
    """Fleiss' kappa from a subjects x categories table of counts.

    ``table[i][j]`` is how many raters put subject i in category j; every row must sum to
    the same number of raters (at least 2). Returns ``nan`` when chance agreement is 1
    (every rating in one category), where kappa is undefined.

    Raises:
        ValueError: an empty table, rows of different lengths or sums, negative counts,
            or fewer than two raters per subject.
    """
    if not table or not table[0]:
        raise ValueError("fleiss_kappa needs at least one subject and one category")
    width = len(table[0])
    if any(len(row) != width for row in table) or any(c < 0 for row in table for c in row):
        raise ValueError("every row needs the same number of non-negative category counts")
    raters = sum(table[0])
    if any(sum(row) != raters for row in table):
        raise ValueError("every subject must be rated by the same number of raters")
    if raters < 2:
        raise ValueError("fleiss_kappa needs at least two raters per subject")
    subjects = len(table)
    # P_i: the fraction of rater pairs that agree on subject i.
    p_subject = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in table]
    p_category = [sum(row[j] for row in table) / (subjects * raters) for j in range(width)]
    p_bar = sum(p_subject) / subjects
    p_expected = sum(p * p for p in p_category)
    if math.isclose(p_expected, 1.0):
        return math.nan
    return (p_bar - p_expected) / (1 - p_expected)


# --------------------------------------------------------------------------------------
# The review report


def summarize_votes(votes: list[dict], names: dict[str, str], item_order: list[str],
                    dimensions: Sequence[str]) -> dict:
    """The report of a blind review from its unblinded votes.

    Args:
        votes: ``{"reviewer", "item_id", "choice", "winner", "note", "ratings"}`` each, with
            ``winner`` one of A, B, tie, both_bad or None (rated but not picked) and
            ``ratings`` ``{"A": {dimension: 1-5}, "B": {...}}``.
        names: ``{"A": name, "B": name}``.
        item_order: the export's item ids, to list disagreements in page order.
        dimensions: the rating dimensions, in the order to report them.

    Returns:
        ``systems``: per system A/B its ``name``, ``wins``, ``ties``, ``both_bad``, ``n`` (votes
        with a pick) and ``ratings`` (per dimension ``{"mean", "n"}``); ``reviewers``,
        ``n_votes``, ``ties``, ``both_bad``;
        ``win_rate`` of B over A: the headline ``value`` = wins_B / (wins_A + wins_B), ties
        and both-bad left out (and reported beside it), with its Wilson 95% interval
        ``ci95`` and ``n``; and ``ties_half`` = (wins_B + ties / 2) / (wins_A + wins_B + ties),
        both-bad still left out. Each vote counts once, so several reviewers on one item
        make the interval narrower than that many independent items would;
        ``agreement``: Cohen's kappa for two raters on the items both picked on, Fleiss'
        kappa for three or more on the items all picked on (``kappa`` None, with a
        ``note``, when it is undefined);
        ``disagreements``: the items where reviewers picked differently, with each one's
        pick (unblinded ``winner`` and ``shown_as``) and note.
    """
    picks = [v for v in votes if v["winner"] is not None]
    count = Counter(v["winner"] for v in picks)
    reviewers = sorted({v["reviewer"] for v in votes})
    systems = {}
    for system in ("A", "B"):
        ratings = {}
        for dim in dimensions:
            values = [v["ratings"][system][dim] for v in votes if dim in v["ratings"].get(system, {})]
            ratings[dim] = {"mean": round(fmean(values), 4) if values else None, "n": len(values)}
        systems[system] = {"name": names[system], "wins": count[system], "ties": count["tie"],
                           "both_bad": count["both_bad"], "n": len(picks), "ratings": ratings}
    decided, ties = count["A"] + count["B"], count["tie"]
    return {
        "systems": systems, "reviewers": reviewers, "n_votes": len(picks),
        "ties": ties, "both_bad": count["both_bad"],
        "win_rate": {"of": "B over A", "headline": "ties excluded",
                     **_rate(count["B"], decided),
                     "ties_half": _rate(count["B"] + ties / 2, decided + ties)},
        "agreement": _agreement(picks),
        "disagreements": _disagreements(picks, item_order),
    }


def _rate(successes: float, n: float) -> dict:
    low, high = wilson_interval(successes, n)
    return {"value": round(successes / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)], "n": n}


def _agreement(picks: list[dict]) -> dict:
    by_rater: dict[str, dict[str, str]] = {}
    for vote in picks:
        by_rater.setdefault(vote["reviewer"], {})[vote["item_id"]] = vote["winner"]
    raters = sorted(by_rater)
    result = {"method": None, "kappa": None, "raters": raters, "n_items": 0, "note": ""}
    if len(raters) < 2:
        return {**result, "note": "one reviewer: no agreement to measure"}
    common = sorted(set.intersection(*(set(items) for items in by_rater.values())))
    method = "cohen" if len(raters) == 2 else "fleiss"
    result.update(method=method, n_items=len(common))
    if not common:
        return {**result, "note": "no item was picked on by every reviewer"}
    if method == "cohen":
        kappa = cohen_kappa([by_rater[raters[0]][i] for i in common], [by_rater[raters[1]][i] for i in common])
    else:
        table = [[sum(by_rater[r][i] == outcome for r in raters) for outcome in OUTCOMES] for i in common]
        kappa = fleiss_kappa(table)
    if math.isnan(kappa):
        return {**result, "note": "undefined: every pick on the shared items was the same outcome"}
    return {**result, "kappa": round(kappa, 4)}


def _disagreements(picks: list[dict], item_order: list[str]) -> list[dict]:
    by_item: dict[str, list[dict]] = {}
    for vote in picks:
        by_item.setdefault(vote["item_id"], []).append(vote)
    position = {item: index for index, item in enumerate(item_order)}
    return [{"item_id": item, "votes": [{"reviewer": v["reviewer"], "winner": v["winner"], "shown_as": v["choice"],
                                         "note": v["note"]} for v in sorted(votes, key=lambda v: v["reviewer"])]}
            for item, votes in sorted(by_item.items(), key=lambda kv: position.get(kv[0], len(position)))
            if len({v["winner"] for v in votes}) > 1]


def format_review_report(report: dict) -> str:
    """The report of :func:`summarize_votes` as plain text for a terminal."""
    systems, rate = report["systems"], report["win_rate"]
    width = max(len(s["name"]) for s in systems.values())

    def pct(part: dict) -> str:
        if part["value"] is None:
            return "n/a (no decided votes)"
        low, high = part["ci95"]
        return f"{part['value']:.1%} (95% CI {low:.1%}-{high:.1%}, n={part['n']:g})"

    export = f" {report['export_id']}" if report.get("export_id") else ""
    lines = [f"Blind review{export}: {report['n_votes']} votes by {len(report['reviewers'])} reviewer(s) "
             f"({', '.join(report['reviewers'])})"]
    lines += [f"  {letter} = {s['name']:<{width}}  wins {s['wins']}" for letter, s in systems.items()]
    lines += [f"  ties {report['ties']}, both bad {report['both_bad']}",
              f"Win rate of B over A, ties excluded (headline): {pct(rate)}",
              f"  ties counted as half a win:                 {pct(rate['ties_half'])}",
              f"Mean ratings (1-5)  {'A':<14}B"]
    for dim in systems["A"]["ratings"]:
        cells = [systems[s]["ratings"][dim] for s in ("A", "B")]
        lines.append(f"  {dim:<18}" + "".join(
            f"{'-' if c['mean'] is None else format(c['mean'], '.2f')} (n={c['n']})".ljust(14) for c in cells).rstrip())
    agreement = report["agreement"]
    if agreement["kappa"] is not None:
        label = "Cohen's" if agreement["method"] == "cohen" else "Fleiss'"
        lines.append(f"Agreement: {label} kappa {agreement['kappa']:.2f} on {agreement['n_items']} items")
    else:
        lines.append(f"Agreement: {agreement['note']}")
    if report["disagreements"]:
        lines.append(f"Disagreements ({len(report['disagreements'])}):")
        for item in report["disagreements"]:
            votes = "; ".join(f"{v['reviewer']}: {v['winner']}" + (f" ({v['note']})" if v["note"] else "")
                              for v in item["votes"])
            lines.append(f"  {item['item_id']}: {votes}")
    return "\n".join(lines)
