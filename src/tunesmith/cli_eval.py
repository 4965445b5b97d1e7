"""The ``tunesmith eval`` command family: evaluate a model, and blind human review.

``tunesmith eval TARGET`` scores a model; ``tunesmith eval review-export A B`` writes a
blind side-by-side review page; ``tunesmith eval review-import FILES`` unblinds and
summarises the votes. argparse cannot mix a positional TARGET with sub-commands, so
:func:`main` picks the parser from the first word.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REVIEW_COMMANDS = ("review-export", "review-import")

EVAL_EXAMPLES = """examples:
  tunesmith eval runs/sft-identity-lora                       # its held-out chats, against its base model
  tunesmith eval runs/sft-identity-lora --data builtin:identity --limit 20 --out runs/eval-identity
  tunesmith eval builtin:smollm2-135m --data builtin:identity --limit 20
  tunesmith eval runs/demo --against none                     # a classifier: F1, ROC-AUC, calibration
  tunesmith eval review-export builtin:smollm2-135m runs/sft-identity-lora --data builtin:identity --limit 20 \\
      --out runs/review
  tunesmith eval review-import runs/review/review-*.json --key runs/review/key.json

TARGET is a run directory, its final/ folder, a merged export, or a base model
(builtin:NAME, a hub id, a local folder). Writes metrics.json (every metric with its
bootstrap 95% interval; with --against, each difference with a paired-bootstrap interval
and p-value), predictions.jsonl and report.html.
"""


def add_eval_parser(sub) -> argparse.ArgumentParser:
    """``tunesmith eval TARGET`` (the review sub-commands are parsed by :func:`review_parser`)."""
    p = sub.add_parser("eval", help="score a model: generation metrics (BLEU/chrF/ROUGE, Chinese too), "
                       "classification metrics or a reward model's pairwise accuracy, with 95%% intervals; "
                       "blind human review",
                       epilog=EVAL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="run directory, final/ folder, merged export or base model spec; "
                   "or review-export / review-import (see their --help)")
    p.add_argument("--data", help="rows to evaluate on: builtin:NAME or a file (default: the run's eval_set.jsonl)")
    p.add_argument("--against", default="auto", metavar="OTHER",
                   help="a second model answering the same rows: base (the run's base model), a run or model "
                        "spec, or none (default: base for a chat run, none otherwise)")
    p.add_argument("--out", help="output folder (default: <run>/eval, or runs/eval-<name>)")
    p.add_argument("--metrics", help="comma-separated metrics to report (default: all for the model's task)")
    p.add_argument("--human", metavar="RESULTS", help="a review-import report (results.json) of the same two "
                   "models (A = --against, B = TARGET): adds the human row to the scorecard")
    p.add_argument("--judge", metavar="MODEL", help="also let a model judge each pair of answers (with --against), "
                   "both orders to cancel position bias: a run, a model spec, or http://HOST:PORT/v1#MODEL of an "
                   "OpenAI-compatible server; weak with small models")
    _decoding_options(p)
    p.add_argument("--on-error", choices=["raise", "drop", "quarantine"], default="raise",
                   help="invalid rows in --data: stop (default), leave out, or leave out and write rejects.jsonl")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print metrics.json on stdout")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    return p


def _decoding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, help="evaluate only the first N rows")
    p.add_argument("--max-new-tokens", type=int, default=64, help="most tokens per answer (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and the bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")


def review_parser() -> argparse.ArgumentParser:
    """The parser of ``tunesmith eval review-export|review-import``."""
    parser = argparse.ArgumentParser(prog="tunesmith eval", description="Blind side-by-side human review.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="review_command", required=True)
    export = sub.add_parser(
        "review-export", help="answer prompts with two models and write a blind review page (offline HTML), a CSV "
        "and a Label Studio import file",
        epilog="example:\n  tunesmith eval review-export builtin:smollm2-135m runs/sft-identity-lora "
               "--data builtin:identity --limit 20 --out runs/review\n\nOpen runs/review/review.html in a browser "
               "(no server needed), or hand out review.csv; keep key.json to unblind.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("a", help="first model (run directory, final/, export or model spec)")
    export.add_argument("b", help="second model")
    export.add_argument("--data", required=True, help="prompts: chat rows (builtin:NAME or a file)")
    export.add_argument("--out", required=True, help="output folder for review.html, review.csv, labelstudio.json, "
                        "key.json")
    export.add_argument("--title", help="page title")
    _decoding_options(export)
    export.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    imp = sub.add_parser(
        "review-import", help="unblind saved reviews: win rate with a Wilson 95%% interval, ratings, agreement",
        epilog="example:\n  tunesmith eval review-import runs/review/review-*.json --key runs/review/key.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("files", nargs="+", help="files saved by the page (.json) or filled-in review.csv files")
    imp.add_argument("--key", required=True, help="the export's key.json")
    imp.add_argument("--out", help="write the report as JSON here (default: results.json next to the key)")
    imp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    return parser


def is_review(argv: list[str]) -> bool:
    """Whether ``argv`` (without the program name) is an eval review sub-command."""
    return len(argv) >= 2 and argv[0] == "eval" and argv[1] in REVIEW_COMMANDS


def run_eval_command(args) -> None:
    """``tunesmith eval TARGET``: evaluate and print the metric table."""
    from tunesmith.eval.stage import run_eval

    stream = sys.stderr if args.json else sys.stdout
    out = Path(args.out) if args.out else _default_out(args.target)
    against = args.against
    result = run_eval(
        args.target, data=args.data, against=None if against == "none" else against, out=out,
        settings=_settings(args), metrics=args.metrics.split(",") if args.metrics else None, limit=args.limit,
        on_error=args.on_error, judge=args.judge,
        human=json.loads(Path(args.human).read_text(encoding="utf-8")) if args.human else None, show_progress=not args.no_progress and not os.environ.get("TUNESMITH_NO_PROGRESS"),
        log=lambda m: print(m, file=stream, flush=True))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print(format_result(result))
    if result.get("scorecard"):
        from tunesmith.eval.scorecard import format_scorecard

        print("\n" + format_scorecard(result["scorecard"]))
    print(f"written to {out} (metrics.json, predictions.jsonl, report.html)")


def run_review_command(args) -> None:
    """``tunesmith eval review-export`` / ``review-import``."""
    from tunesmith.eval.agreement import format_review_report
    from tunesmith.eval.review_import import import_reviews

    if args.review_command == "review-export":
        from tunesmith.eval.review_answers import export_review_of_models

        manifest = export_review_of_models(args.a, args.b, args.data, Path(args.out), _settings(args), args.limit,
                                           args.title)
        print(f"{manifest['items']} prompts written to {args.out}: open review.html in a browser (works offline), "
              "or hand out review.csv / import labelstudio.json. Keep key.json to unblind.")
        return
    report = import_reviews([Path(f) for f in args.files], Path(args.key))
    out = Path(args.out) if args.out else Path(args.key).parent / "results.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(format_review_report(report))
    print(f"written to {out}")


def format_result(result: dict) -> str:
    """The metric table for the terminal: value [95% interval], and against a second model
    its value and the difference [interval] with the p-value."""
    lines = [f"{result['target']} on {result['rows']} rows of {result['data']}"]
    against = result.get("against_metrics")
    if against is not None:
        lines.append(f"against {result['against']}")
    for name, entry in result["metrics"].items():
        line = f"{name:>14}  {_fmt(entry)}"
        if against is not None and name in against:
            delta = (result.get("deltas") or {}).get(name)
            line += f"   against {_fmt(against[name])}"
            if delta:
                line += (f"   difference {delta['delta']:+.4g} [{delta['ci95'][0]:+.4g}, {delta['ci95'][1]:+.4g}]"
                         f" {p_text(delta)}")
        lines.append(line)
    judge = result.get("judge")
    if judge:
        rate = "–" if judge["win_rate"] is None else f"{judge['win_rate']:.3f} [{judge['ci95'][0]:.3f}, {judge['ci95'][1]:.3f}]"
        lines.append(f"judge {judge['judge']}: target wins {judge['wins']}, loses {judge['losses']}, ties {judge['ties']} "
                     f"(orders disagreed on {100 * judge['order_disagreement']:.0f}%); win rate {rate}")
    lines += [f"note: {n}" for n in result.get("notes") or []]
    return "\n".join(lines)


def p_text(delta: dict) -> str:
    """The p-value as text; 0 means below the bootstrap's resolution (2 / resamples)."""
    if delta["p_value"] == 0:
        return f"p<{2 / delta.get('resamples', 1000):.3g}"
    return f"p={delta['p_value']:.3f}"


def _fmt(entry: dict) -> str:
    if entry.get("value") is None:
        return "–"
    ci = entry.get("ci95")
    interval = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci and ci[0] is not None else ""
    return f"{entry['value']:.4g}{interval}"


def _settings(args):
    from tunesmith.eval.decode import DecodeSettings

    return DecodeSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                          batch_size=args.batch_size)


def _default_out(target: str) -> Path:
    from tunesmith.rundir import RunDir

    path = Path(target)
    if path.is_dir() and RunDir(path).is_run():
        return path / "eval"
    name = path.name if path.exists() else target.replace("builtin:", "").replace("/", "-")
    return Path("runs") / f"eval-{name}"
