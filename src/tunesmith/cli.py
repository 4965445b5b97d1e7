"""The ``tunesmith`` command: parse arguments, call one function, print the result."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from tunesmith import __version__
from tunesmith.cli_data import add_data_parsers, plugin_option, run_data_command
from tunesmith.cli_eval import add_eval_parser, is_review, review_parser, run_eval_command, run_review_command
from tunesmith.cli_plan import add_plan_parsers, run_plan_command
from tunesmith.cli_ui import add_ui_parser, run_ui_command
from tunesmith.cli_use import add_use_parsers, run_use_command
from tunesmith.cli_text import (
    COMPARE_EXAMPLES,
    ENVIRONMENT,
    EXPORT_EXAMPLES,
    SERVE_EXAMPLES,
    TRAIN_EXAMPLES,
)
from tunesmith.errors import TunesmithError

RECIPES = Path(__file__).parent / "recipes"
DEMO_RECIPE = RECIPES / "demo.yaml"

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune pretrained language models end to end from one YAML recipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'tunesmith COMMAND --help' for each command's options.\n\n" + ENVIRONMENT,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train from a recipe", epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    train.add_argument("recipe", help="YAML recipe (or a run's config.yaml to repeat it)")
    _run_options(train)

    demo = sub.add_parser(
        "demo",
        help="run the shipped demo: LoRA on MiniLM for movie-review sentiment (~3 min on 2 CPU cores)",
        epilog="example:\n  tunesmith demo\n  tunesmith demo --set data.max_train_samples=500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _run_options(demo)

    compare = sub.add_parser(
        "compare",
        help="train the same recipe with several methods and tabulate memory, speed, size and quality",
        epilog=_compare_examples(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("recipe", help="YAML recipe every variant trains (its method and lr are replaced)")
    compare.add_argument("--methods", help="comma-separated presets (default when nothing else is given: "
                         "full,freeze,lora,dora,adalora,ia3,prefix,prompt,ptuning,ptuning2,adapter,bitfit)")
    compare.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON",
                         help='an extra variant, e.g. lora-r4=\'{"type": "lora", "r": 4}\' (repeatable)')
    compare.add_argument("--rank-study", action="store_true",
                         help="add LoRA r = 1, 2, 4, 8, 16 on W_q only and on W_q + W_v (the LoRA paper's study)")
    compare.add_argument("--steps", type=int, help="optimizer steps for every variant (default: the recipe's budget)")
    compare.add_argument("--keep-lr", action="store_true",
                         help="use the recipe's train.lr for every variant instead of each method's default")
    compare.add_argument("--out", help="output folder (default: runs/compare-<recipe name>)")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe value for every variant (repeatable)")
    compare.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    plugin_option(compare)
    compare.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    export = sub.add_parser(
        "export", help="merge an adapter into its base, or export to ONNX / INT8 ONNX / GGUF, with parity checks",
        epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("run", help="run directory (runs/<name>) or its final/ folder")
    export.add_argument("--to", required=True, choices=["merged", "onnx", "int8", "gguf", "pruned"],
                        help="what to export")
    export.add_argument("--quant", choices=["f16", "q8_0"], default="f16", help="GGUF weights (default f16)")
    pruning = export.add_argument_group("pruning (--to pruned)")
    pruning.add_argument("--sparsity", type=float, help="share of the chosen units to remove, e.g. 0.25")
    pruning.add_argument("--structure", choices=["ffn", "heads", "both"], default="ffn",
                         help="FFN neurons, attention heads (Llama-style models) or both (default ffn)")
    pruning.add_argument("--importance", choices=["taylor", "magnitude"], default="taylor",
                         help="gradient x activation on training rows, or weight norms (default taylor)")
    pruning.add_argument("--recover-steps", type=int, default=0, help="short fine-tune after pruning (default 0)")
    pruning.add_argument("--recover-lr", type=float, default=5e-5, help="its learning rate (default 5e-5)")
    pruning.add_argument("--max-drop", type=float, default=0.02,
                         help="refuse when the headline metric drops more: accuracy points as a fraction, or the "
                              "share a loss may rise (default 0.02)")
    export.add_argument("--out", help="output folder (default: <run>/export-<to>)")
    export.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    add_data_parsers(sub)
    add_eval_parser(sub)
    add_use_parsers(sub)
    add_plan_parsers(sub)
    add_ui_parser(sub)
    serve = sub.add_parser(
        "serve", help="OpenAI-compatible server: one base model in memory, many adapters picked per request",
        epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--base", help="a causal-LM base model to serve as is (e.g. builtin:smollm2-135m)")
    serve.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN_DIR",
                       help="a trained run served as model NAME (repeatable); adapters on the same base share it")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--api-key", default=os.environ.get("TUNESMITH_API_KEY"),
                       help="require 'Authorization: Bearer KEY' (default: $TUNESMITH_API_KEY); "
                            "also enables loading/unloading adapters at run time")
    serve.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                       help="folder that run-time adapter loads may read from (repeatable; default: runs)")
    serve.add_argument("--max-batch", type=int, default=8, help="most requests run as one batch (1 = no batching)")
    serve.add_argument("--batch-wait-ms", type=float, default=10.0,
                       help="how long the first request of a batch waits for others")
    serve.add_argument("--max-body-kb", type=int, default=1024, help="largest request body accepted")
    serve.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    return parser


def _compare_examples() -> str:
    """The compare epilog, listing the presets of the method catalog (torch-free)."""
    import textwrap

    from tunesmith.config.methods import PRESETS

    presets = textwrap.fill(", ".join(PRESETS), width=100, subsequent_indent="  ")
    return COMPARE_EXAMPLES.replace("{presets}", presets)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--output-dir", help="run directory (default: <output_dir>/<name> from the recipe)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|CHECKPOINT",
                   help="continue the run from its latest valid checkpoint (auto) or from a checkpoint directory")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one plain line per logged step and per evaluation instead (the default "
                        "when the output is not a terminal)")
    p.add_argument("--quiet", action="store_true", help="print only errors and the final summary")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON on stdout (the rest on stderr)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue although the training data's content changed since the checkpoint")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model folder's own Python (hub models with custom code); never a recipe value")
    p.add_argument("--force", action="store_true", help="train even when the memory plan exceeds the budget by "
                   "more than 10%% (see tunesmith plan)")
    plugin_option(p)
    # SUPPRESS: an absent sub-command --debug must not reset a --debug given before the command.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 bad input, 1 unexpected failure)."""
    argv = sys.argv[1:] if argv is None else argv
    if is_review(argv):  # `eval review-export|review-import`: a parser of their own (see cli_eval)
        args = review_parser().parse_args(argv[1:])
        args.command = "review"
    else:
        args = build_parser().parse_args(argv)
    from tunesmith import quiet

    with quiet.debug_mode(args.debug):
        quiet.filter_known_noise()
        return _run_command(args)


def _run_command(args) -> int:
    # Schedulers stop jobs with SIGTERM: treat it like Ctrl-C so the run is marked interrupted.
    # (Inside the training loop both signals instead finish the step and save a checkpoint.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if getattr(args, "plugin", None):
            # Third-party code runs only when the CLI user names it, never because a recipe does.
            from tunesmith.data.paraphrase import load_plugins

            load_plugins(args.plugin)
        if args.command == "train":
            _train(Path(args.recipe), args, overwrite=args.overwrite)
        elif args.command == "compare":
            _compare(Path(args.recipe), args)
        elif args.command in ("data", "recipe"):
            run_data_command(args)
        elif args.command == "serve":
            _serve(args)
        elif args.command == "export":
            _export(args)
        elif args.command in ("plan", "tune"):
            run_plan_command(args)
        elif args.command in ("chat", "predict"):
            run_use_command(args)
        elif args.command == "eval":
            run_eval_command(args)
        elif args.command == "review":
            run_review_command(args)
        elif args.command == "ui":
            run_ui_command(args)
        elif args.command == "demo":
            # The demo owns its run directory, so running it again simply replaces it.
            _train(DEMO_RECIPE, args, overwrite=not args.resume)
        return 0
    except TunesmithError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        step = getattr(exc, "step", None)
        where = f" at step {step}; checkpoint saved" if step is not None else ""
        print(f"interrupted{where}. Continue with the same command plus --resume.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: one line, the traceback with --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in Tunesmith or a library; run again "
              "with --debug for the traceback and report it)", file=sys.stderr)
        return 1


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _train(recipe: Path, args, overwrite: bool) -> None:
    from tunesmith.config.load import allow_remote_code, load_recipe  # torch-free: a bad recipe is reported fast
    from tunesmith.rundir import check_run_dir, resolve_run_dir

    config = load_recipe(recipe, args.overrides)
    if getattr(args, "trust_remote_code", False):
        config = allow_remote_code(config)
    check_run_dir(resolve_run_dir(config, args.output_dir), overwrite, args.resume)
    from tunesmith.runner import run_recipe  # torch, transformers, peft: only for a recipe that can run
    from tunesmith.summary import print_summary

    # --json keeps stdout for the summary alone; every other line goes to stderr.
    stream = sys.stderr if args.json else sys.stdout

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=stream, flush=True)  # flushed: a tee'd log must not lag

    no_bar = args.no_progress or os.environ.get("TUNESMITH_NO_PROGRESS")
    summary = run_recipe(
        config, output_dir=args.output_dir, overwrite=overwrite, resume=args.resume, base_dir=recipe.resolve().parent,
        show_progress=False if args.quiet or args.json else ("lines" if no_bar else True), log=log,
        force=args.force, allow_data_change=args.allow_data_change,
    )
    if args.json:
        print(json.dumps(summary, ensure_ascii=False), flush=True)
    else:
        print_summary(summary)


def _compare(recipe: Path, args) -> None:
    from transformers import AutoConfig

    from tunesmith.compare import DEFAULT_METHODS, compare, parse_variants
    from tunesmith.config.load import load_recipe
    from tunesmith.models.load import resolve_model_source

    overrides = list(args.overrides)
    if args.steps:
        overrides.append(f"train.max_steps={args.steps}")
    config = load_recipe(recipe, overrides)  # fails early on a bad recipe or override
    model_type = None
    if args.rank_study:
        model_type = AutoConfig.from_pretrained(resolve_model_source(config.model.name)).model_type
    methods = args.methods or (None if args.variant or args.rank_study else DEFAULT_METHODS)
    variants = parse_variants(methods, args.variant, args.rank_study, model_type)
    out = Path(args.out) if args.out else Path(config.output_dir) / f"compare-{config.name}"
    compare(recipe, config, variants, out, overrides, keep_lr=args.keep_lr,
            show_progress=not args.no_progress and not os.environ.get("TUNESMITH_NO_PROGRESS"))
    print(f"\n{(out / 'compare.md').read_text(encoding='utf-8')}\nwritten to {out}")


def _serve(args) -> None:
    import uvicorn

    from tunesmith.serve import build_server, parse_adapter_specs
    from tunesmith.serve.http import uvicorn_config

    app, engine = build_server(
        args.base, parse_adapter_specs(args.adapter), api_key=args.api_key, allowed_dirs=args.allow_dir,
        max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_body_bytes=args.max_body_kb * 1024,
    )
    print(f"serving on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)", flush=True)
    # One line per request (id, model, tokens in/out, latency, status) on stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("tunesmith.serve").addHandler(handler)
    logging.getLogger("tunesmith.serve").setLevel(logging.INFO)
    try:
        uvicorn.Server(uvicorn_config(app, args.host, args.port)).run()
    finally:
        engine.close()


def _export(args) -> None:
    from tunesmith.export import export_run

    prune = {"sparsity": args.sparsity, "structure": args.structure, "importance": args.importance,
             "recover_steps": args.recover_steps, "recover_lr": args.recover_lr, "max_drop": args.max_drop}
    report = export_run(args.run, args.to, args.out, args.quant, prune if args.to == "pruned" else None)
    for check in report.get("checks", []):
        verdict = "passed" if check["passed"] else "FAILED"
        if "skipped" in check:
            print(f"{check['name']}: skipped ({check['skipped']})")
        elif "max_abs_diff" in check:
            print(f"{check['name']}: max |diff| {check['max_abs_diff']:.3g} "
                  f"(allowed {check['tolerance']:.3g}, {check['probes']} probes) {verdict}")
        elif "drop" in check:
            print(f"{check['name']}: {check['metric']} {check['before']:.4f} -> {check['after']:.4f}, drop "
                  f"{check['drop']:.4f} (allowed {check['max_drop']}) {verdict}")
        else:
            print(f"{check['name']}: {check['same_answers']:.0%} of {check['probes']} answers equal "
                  f"(at least {check['required']:.0%}) {verdict}")
    if "metrics" in report:
        for name, scores in report["metrics"].items():
            latency = report["latency_ms_per_example"].get(name)
            size = report["size_mb"].get(name)
            extra = (f"; {latency} ms/example" if latency is not None else "") + (f", {size} MB" if size is not None else "")
            print(f"{name:>13}: {', '.join(f'{k} {v:.4f}' for k, v in scores.items())}{extra}")
    if report.get("warning"):
        print(f"warning: {report['warning']}")
    print(f"written to {report['out']} (export.json has the details)")


if __name__ == "__main__":
    sys.exit(main())
