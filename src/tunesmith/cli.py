"""The ``tunesmith`` command: parse arguments, call one function, print the result."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from tunesmith.errors import TunesmithError

RECIPES = Path(__file__).parent / "recipes"
DEMO_RECIPE = RECIPES / "demo.yaml"

TRAIN_EXAMPLES = """examples:
  tunesmith train configs/sft-identity-lora.yaml
  tunesmith train configs/demo.yaml --set train.lr=1e-3 --set method.r=16
  tunesmith train runs/demo/config.yaml --output-dir runs/demo-again   # repeat a run
  tunesmith train configs/demo.yaml --resume                            # continue after a crash or Ctrl-C
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune pretrained language models end to end from one YAML recipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'tunesmith COMMAND --help' for each command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
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
    return parser


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--output-dir", help="run directory (default: <output_dir>/<name> from the recipe)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|CHECKPOINT",
                   help="continue the run from its latest valid checkpoint (auto) or from a checkpoint directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    # SUPPRESS: an absent sub-command --debug must not reset a --debug given before the command.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 bad input, 1 unexpected failure)."""
    args = build_parser().parse_args(argv)
    # Schedulers stop jobs with SIGTERM: treat it like Ctrl-C so the run is marked interrupted.
    # (Inside the training loop both signals instead finish the step and save a checkpoint.)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if args.command == "train":
            _train(Path(args.recipe), args, overwrite=args.overwrite)
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


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _train(recipe: Path, args, overwrite: bool) -> None:
    from tunesmith.config.load import load_recipe  # heavy imports only after argument parsing
    from tunesmith.runner import run_recipe
    from tunesmith.summary import print_summary

    config = load_recipe(recipe, args.overrides)
    summary = run_recipe(
        config, output_dir=args.output_dir, overwrite=overwrite, resume=args.resume, base_dir=recipe.resolve().parent,
        show_progress=not args.no_progress and not os.environ.get("TUNESMITH_NO_PROGRESS"),
    )
    print_summary(summary)


if __name__ == "__main__":
    sys.exit(main())
