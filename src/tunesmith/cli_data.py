"""``tunesmith data`` and ``tunesmith recipe``: look at data and recipes without training."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunesmith.cli_text import DATA_EXAMPLES, RECIPE_EXAMPLES
from tunesmith.errors import TunesmithError


def add_data_parsers(sub) -> None:
    """The ``data`` (inspect, prepare) and ``recipe`` (fields, new) sub-commands."""
    data = sub.add_parser("data", help="inspect or prepare data without training",
                          epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="report rows, rejects by reason, duplicates, leakage, labels, lengths",
                                  epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("target", help="a recipe (.yaml), or a data file: .jsonl, .json (a list of rows), .csv, "
                         ".tsv, .parquet, .txt (raw text), or a folder saved by datasets' save_to_disk; chat rows "
                         "as OpenAI messages, sharegpt conversations or alpaca instruction/input/output")
    inspect.add_argument("--shape", choices=["classification", "chat", "text", "preference"],
                         help="shape of a data file (default: guessed between classification and chat)")
    prepare = data_sub.add_parser("prepare", help="run a recipe's data stage and write the prepared splits",
                                  epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    prepare.add_argument("target", help="a recipe (.yaml)")
    audit = data_sub.add_parser("audit", help="find probably mislabelled training rows (cleanlab on out-of-fold "
                                "probabilities of a probe on the base model's embeddings)",
                                epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("target", help="a classification recipe (.yaml)")
    audit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    audit.add_argument("--fix", choices=["drop", "relabel"], help="also write cleaned copies of the training "
                       "sources and audit_log.jsonl (the originals are never changed)")
    for p in (inspect, prepare, audit):
        p.add_argument("--out", help="output folder (default: runs/data-<name>)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value (repeatable)")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        plugin_option(p)

    recipe = sub.add_parser("recipe", help="the recipe reference, and starter recipes",
                            epilog=RECIPE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipe_sub = recipe.add_subparsers(dest="recipe_command", required=True)
    fields = recipe_sub.add_parser("fields", help="every recipe field with its type, default and description",
                                   epilog=RECIPE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    fields.add_argument("section", nargs="?", help="only this section or key, e.g. train, data.clean, method[lora]")
    new = recipe_sub.add_parser("new", help="write a commented starter recipe that runs as written",
                                epilog=RECIPE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    new.add_argument("--task", required=True, help="classification, causal_lm (chat SFT) or pretrain")
    new.add_argument("--method", default="lora", help="a method type (default lora), e.g. full, qlora, prefix")
    new.add_argument("--name", help="run name (default: TASK-METHOD)")
    new.add_argument("--out", help="file to write (default: print it)")
    for p in (recipe, fields, new):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def run_data_command(args) -> None:
    """Run ``data`` or ``recipe`` from parsed arguments."""
    if args.command == "data":
        _data(args)
    else:
        _recipe(args)


def plugin_option(p: argparse.ArgumentParser) -> None:
    """The --plugin option of the commands that run a recipe's data stage."""
    p.add_argument("--plugin", action="append", default=[], metavar="NAME",
                   help="load the installed back-translator NAME (entry point group tunesmith.back_translators) "
                        "so a recipe can use it as data.augment.back_translation (repeatable)")


def _data(args) -> None:
    from tunesmith.data import inspect as data_inspect

    target = Path(args.target)
    is_recipe = target.suffix.lower() in {".yaml", ".yml"}
    if is_recipe:
        from tunesmith.config.load import load_recipe

        config = load_recipe(target, args.overrides)
        out = Path(args.out) if args.out else Path(config.output_dir) / f"data-{config.name}"
        if args.data_command == "audit":
            _audit(config, target, out, args)
            return
        if args.data_command == "prepare":
            report = data_inspect.prepare_to_folder(config, target.resolve().parent, out)
            print(f"train {report['train_rows']} / eval {report['eval_rows']} / test {report['test_rows']} rows "
                  f"written to {out}")
            return
        report, _ = data_inspect.inspect_recipe(config, target.resolve().parent)
    else:
        if args.data_command in ("prepare", "audit"):
            raise TunesmithError(f"'data {args.data_command}' takes a recipe, not {target}.",
                                 "Use 'tunesmith data inspect FILE' for a single file.")
        out = Path(args.out) if args.out else Path("runs") / f"data-{target.stem}"
        report = data_inspect.inspect_file(str(target), args.shape)
    data_inspect.write_report(report, out)
    print(data_inspect.format_report(report))
    print(f"written to {out}/data_report.json and lengths.png")


def _audit(config, recipe: Path, out: Path, args) -> None:
    from tunesmith.data.audit import audit, format_issues, write_audit

    rows, issues = audit(config, recipe.resolve().parent, args.folds)
    written = write_audit(rows, issues, out, args.fix)
    print(format_issues(issues, len(rows)))
    print(f"written to {', '.join(written.values())}")


def _recipe(args) -> None:
    from tunesmith.config.methods import METHODS
    from tunesmith.config.reference import format_fields, starter_recipe
    from tunesmith.objectives.tasks import TASKS

    if args.recipe_command == "fields":
        text = format_fields(args.section)
        if not text:
            raise TunesmithError(f"No recipe field or section {args.section!r}.",
                                 "Sections: name, task, seed, output_dir, model, data, method[TYPE], train, eval.")
        print(text)
        return
    if args.task not in TASKS:
        raise TunesmithError(f"Unknown task {args.task!r}.", f"Choose one of {', '.join(TASKS)}.")
    if args.method not in METHODS:
        raise TunesmithError(f"Unknown method {args.method!r}.", f"Choose one of {', '.join(METHODS)}.")
    text = starter_recipe(args.task, args.method, args.name)
    if not args.out:
        print(text, end="")
        return
    out = Path(args.out)
    if out.exists():
        raise TunesmithError(f"{out} already exists.", "Choose another --out, or delete the file.")
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}; run it with: tunesmith train {out}")
