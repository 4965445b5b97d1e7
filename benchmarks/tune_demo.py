"""`tunesmith tune` on the demo task: what the search finds, and what pruning saves.

1. The shipped demo recipe, cut to the trials' budget (`--steps` optimizer steps): its
   held-out accuracy is the anchor.
2. A study of `--trials` trials without pruning (seeded TPE) over the space below, each
   trial a normal run of at most `--steps` steps evaluated every `--eval-every` steps.
3. Pruning on the same trials: each trial's recorded evaluations are replayed, in order,
   through the median pruner `tune` uses (`tune/study.make_pruner`); a trial stops where
   the pruner would have stopped it. Optimizer steps with pruning vs without, and whether
   the best trial would have survived.

Usage:
  python benchmarks/tune_demo.py [--trials 16] [--steps 60] [--eval-every 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SPACE = {
    "train.lr": {"log_uniform": [1e-4, 1e-2]},
    "method.r": {"choice": [4, 8, 16]},
    "method.dropout": {"uniform": [0.0, 0.2]},
    "train.warmup_ratio": {"uniform": [0.0, 0.2]},
}
DEMO = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "demo.yaml"


def budget(steps: int, eval_every: int) -> list[str]:
    return ["--set", f"train.max_steps={steps}", "--set", f"train.eval_every={eval_every}",
            "--set", "train.save_every=null"]


def replay_pruning(curves: list[list[tuple[int, float]]], eval_every: int, steps: int) -> tuple[int, list[bool]]:
    """Optimizer steps the trials take when the median pruner judges their recorded
    evaluations in order, and which trials it stops."""
    import optuna

    from tunesmith.tune.study import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", eval_every))
    spent, pruned = 0, []
    for curve in curves:
        trial = study.ask()
        stopped = None
        for step, value in curve:
            if step >= steps:
                break  # the final evaluation is the trial's result, not a pruning point
            trial.report(value, step)
            if trial.should_prune():
                stopped = step
                break
        if stopped is None:
            study.tell(trial, curve[-1][1])
            spent += steps
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            spent += stopped
        pruned.append(stopped is not None)
    return spent, pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=10)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "tunesmith.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
        out = subprocess.run([*cli, "train", str(DEMO), "--output-dir", str(folder / "default"), "--json",
                              "--quiet", *budget(args.steps, args.eval_every)], capture_output=True, text=True,
                             check=True)
        default = json.loads(out.stdout)["eval_after"]["accuracy"]
        print(f"shipped defaults, {args.steps} steps: accuracy {default:.4f}", flush=True)
        study_dir = folder / "study"
        subprocess.run([*cli, "tune", str(DEMO), "--space", str(folder / "space.yaml"), "--trials",
                        str(args.trials), "--pruner", "none", "--study-dir", str(study_dir),
                        *budget(args.steps, args.eval_every)], check=True)
        curves, finals = [], []
        for number in range(args.trials):
            run = study_dir / "trials" / f"trial-{number:03d}"
            evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
            final = json.loads((run / "summary.json").read_text())["eval_after"]["accuracy"]
            curves.append([(e["step"], e["accuracy"]) for e in evals] + [(args.steps, final)])
            finals.append(final)
        spent, pruned = replay_pruning(curves, args.eval_every, args.steps)
    best = max(range(len(finals)), key=finals.__getitem__)
    full = args.trials * args.steps
    print(f"\nsearch: best accuracy {finals[best]:.4f} (trial {best}) vs shipped defaults {default:.4f} "
          f"({finals[best] - default:+.4f}) at {args.steps} steps per run")
    print(f"pruning (median, replayed on the same {args.trials} trials): {spent} optimizer steps instead of {full} "
          f"({100 * (1 - spent / full):.0f}% saved); {sum(pruned)} trials stopped; the best trial "
          f"{'was' if pruned[best] else 'was not'} pruned")
    print("trial accuracies:", ", ".join(f"{a:.3f}" + ("*" if p else "") for a, p in zip(finals, pruned)),
          "(* = the pruner would have stopped it)")


if __name__ == "__main__":
    main()
