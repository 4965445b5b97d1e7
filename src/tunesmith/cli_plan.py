"""``tunesmith plan`` and ``tunesmith tune``: what a recipe needs, and the search for its best settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PLAN_EXAMPLES = """examples:
  tunesmith plan recipe.yaml                            # memory, time and disk of this recipe here
  tunesmith plan recipe.yaml --device a100:80GB --all-methods
  tunesmith plan recipe.yaml --explain                  # the advisor's path through the guides' rules
  tunesmith plan recipe.yaml --json                     # the same plan for scripts (total_bytes = peak memory)
"""
TUNE_EXAMPLES = """examples:
  tunesmith tune recipe.yaml --space space.yaml --trials 16
  tunesmith tune recipe.yaml --space space.yaml --trials 16 --jobs 2 --pruner hyperband
  tunesmith tune recipe.yaml --space space.yaml --trials 12 --objectives accuracy,train_s   # a Pareto front
space.yaml:
  train.lr: {log_uniform: [1e-5, 1e-2]}
  method.type: {choice: [lora, ia3, adapter]}
  method.r: {choice: [4, 8, 16]}        # sampled only when method.type has r
Run the same command again to resume a stopped study.
"""


def add_plan_parsers(sub) -> None:
    """The ``plan`` and ``tune`` sub-commands."""
    plan = sub.add_parser("plan", help="memory, time and disk a recipe needs, and what the guides advise",
                          epilog=PLAN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    plan.add_argument("recipe", help="the YAML recipe")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe value (repeatable)")
    plan.add_argument("--device", help="cpu, cuda, or NAME:MEMORY for another machine's GPU (e.g. a100:80GB); "
                      "default: this machine's GPU, else its CPU")
    plan.add_argument("--gpus", type=int, default=1, help="GPUs training in data parallel (default 1)")
    plan.add_argument("--trust-remote-code", action="store_true",
                      help="read the model folder's own configuration code (never a recipe value)")
    plan.add_argument("--all-methods", action="store_true", help="plan every method of the catalog side by side")
    plan.add_argument("--explain", action="store_true", help="print the advisor's path through the decision tree")
    plan.add_argument("--data", action="store_true", help="read and tokenize the recipe's data (cached like train's) "
                      "to plan its longest real micro-batch, the epoch time, and advise by its size")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    tune = sub.add_parser("tune", help="search hyperparameters with Optuna (TPE, pruning, resumable)",
                          epilog=TUNE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune.add_argument("recipe", help="the YAML recipe every trial starts from")
    tune.add_argument("--space", required=True, help="YAML file: recipe keys and their ranges")
    tune.add_argument("--trials", type=int, required=True, help="trials to finish (resumed studies count earlier ones)")
    tune.add_argument("--jobs", type=int, default=1, help="trials trained at once, each in its own process (default 1)")
    tune.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    tune.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                      help="stop unpromising trials early from their periodic evaluations (default median)")
    tune.add_argument("--objectives", help="metrics to optimise, comma-separated (default: the task's headline "
                      "metric); train_s is training time; two or more give a Pareto front")
    tune.add_argument("--study-dir", help="where the study lives (default: <output_dir>/<name>-tune)")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe value for every trial (repeatable)")
    for p in (plan, tune):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def run_plan_command(args) -> None:
    """Run ``plan`` or ``tune`` from parsed arguments."""
    from tunesmith.config.load import load_recipe

    if args.command == "tune":
        run_tune_command(args)
        return
    config = load_recipe(Path(args.recipe), args.overrides)
    if args.trust_remote_code:
        from tunesmith.config.load import allow_remote_code

        config = allow_remote_code(config)
    from tunesmith.plan.advisor import advise, render_advice
    from tunesmith.plan.planner import make_plan, plan_all_methods
    from tunesmith.plan.render import render_methods, render_plan

    shape = data_facts(config, Path(args.recipe)) if args.data else {}
    plan = make_plan(config, device_spec=args.device, gpus=args.gpus, **shape)
    advice = advise(config, plan, device_spec=args.device, gpus=args.gpus, examples=shape.get("examples"))
    methods = plan_all_methods(config, device_spec=args.device, gpus=args.gpus) if args.all_methods else None
    if args.json:
        out = plan.as_dict()
        out["advice"] = advice.as_dict()
        if methods is not None:
            out["methods"] = {name: p.as_dict() for name, p in methods.items()}
        print(json.dumps(out, indent=1))
        return
    print(render_plan(plan))
    if methods is not None:
        print()
        print(render_methods(methods))
    print()
    print(render_advice(advice, explain=args.explain))


def data_facts(config, recipe: Path) -> dict:
    """The training data's size, longest example and trained share, through train's data stage."""
    from tunesmith.data.template import resolve_template
    from tunesmith.features import prepare_features
    from tunesmith.models.load import load_tokenizer
    from tunesmith.plan.check import data_shape

    tokenizer = load_tokenizer(config.model.name)
    if config.data.chat_template:
        tokenizer.chat_template = resolve_template(config.data.chat_template, recipe.resolve().parent)
    _, _, features, _ = prepare_features(config, recipe.resolve().parent, tokenizer, {}, lambda *a: None, False)
    longest, share = data_shape(features)
    return {"longest": longest, "target_share": share, "examples": len(features)}


def run_tune_command(args) -> None:
    """Check the space, run the study, write its outputs, print where they are."""
    from tunesmith.config.load import load_recipe
    from tunesmith.tune.space import load_space

    config = load_recipe(Path(args.recipe), args.overrides)
    base = config.model_dump(mode="json")
    params = load_space(args.space, base)  # every error before any trial runs
    from tunesmith.tune.outputs import dashboard_command, write_outputs
    from tunesmith.tune.study import check_pruning_setup, objective_of, run_study

    names = [n.strip() for n in args.objectives.split(",")] if args.objectives else None
    objective = objective_of(config, names)
    pruner = args.pruner
    if len(objective.names) > 1 and pruner != "none":
        print("several objectives: pruning is off (Optuna prunes single-objective studies only)")
        pruner = "none"
    check_pruning_setup(base, pruner)
    study_dir = Path(args.study_dir or Path(config.output_dir) / f"{config.name}-tune")
    study = run_study(Path(args.recipe), base, params, trials=args.trials, study_dir=study_dir, objective=objective,
                      pruner=pruner, jobs=args.jobs, timeout=args.timeout, seed=config.seed)
    written = write_outputs(study, study_dir, base, objective.names)
    print((study_dir / "trials.md").read_text())
    if "best" in written:
        print(f"best settings: {written['best']} (train it: tunesmith train {written['best']})")
    print(f"report: {written['report']}")
    print(f"browse the study: {dashboard_command(study_dir)}")
