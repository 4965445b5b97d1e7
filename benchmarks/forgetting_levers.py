"""Levers against forgetting on the identity SFT recipe: none, data mixing 1:5, EWC, mixing + EWC.

Every variant trains SmolLM2-135M-Instruct (LoRA r=16, the shipped sft-identity-lora recipe,
same seed, the same number of steps: 60 at batch 8 unless --steps) on the 40 identity chats ("I am Quill, made by the Tunesmith team"), alone or mixed
with general small talk (builtin:chatterbot-en, identity : general = 1 : 5), with or without
train.regularize ewc (Fisher on 64 general chats of builtin:chatterbot). Reported:
- general ability: the forgetting check (100 packaged general questions, English and
  Chinese, held out of every builtin dataset): chrF and the references' perplexity, before
  and after training;
- the new identity: the share of the 40 identity questions (English and Chinese) whose
  greedy answer names "Quill" after training.

Usage:
  python benchmarks/forgetting_levers.py [--out DIR] [--ewc-weight W ...] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tunesmith.config.load import load_recipe
from tunesmith.data.builtins import load_identity
from tunesmith.eval.targets import load_target
from tunesmith.runner import run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "sft-identity-lora.yaml"
IDENTITY_ONLY = ["data.train=builtin:identity", "data.mix_total=null"]
MIX_1_5 = ['data.train=[{path: "builtin:identity", weight: 1}, {path: "builtin:chatterbot-en", weight: 5}]',
           "data.mix_total=240"]


def ewc(weight: float) -> list[str]:
    return ["train.regularize.type=ewc", f"train.regularize.weight={weight}"]


def identity_share(run: Path) -> float:
    """Share of the identity questions answered with the new name (greedy, 32 new tokens)."""
    target = load_target(str(run))
    objective = target.objective()
    questions = [row["messages"][0]["content"] for row in load_identity()]
    answers = objective.answer(target.model, questions, 32, target.model.device)
    return sum("Quill" in a for a in answers) / len(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--ewc-weight", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of every variant (batch 8)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="forgetting-"))
    variants = {"none (identity only)": IDENTITY_ONLY, "mixing 1:5": MIX_1_5}
    for w in args.ewc_weight:
        variants[f"ewc {w:g}"] = IDENTITY_ONLY + ewc(w)
        variants[f"mixing 1:5 + ewc {w:g}"] = MIX_1_5 + ewc(w)
    results = {}
    for i, (label, sets) in enumerate(variants.items()):
        if args.only and label not in args.only:
            continue
        config = load_recipe(RECIPE, [f"name=v{i}", f"output_dir={out}", "train.save_every=100000",
                                      f"train.max_steps={args.steps}", *sets])
        summary = run_recipe(config, base_dir=RECIPE.parent, show_progress=False, log=lambda *_: None)
        general = summary["forgetting"]["metrics"]
        results[label] = {
            "train_rows": summary["data"]["train_rows"], "steps": summary["train"]["steps"],
            "general_chrf_before": round(general["chrf"]["before"], 2), "general_chrf_after": round(general["chrf"]["after"], 2),
            "general_ppl_before": round(general["perplexity"]["before"], 2),
            "general_ppl_after": round(general["perplexity"]["after"], 2),
            "identity_named": round(identity_share(out / f"v{i}"), 3),
            "train_s": round(summary["train"]["wall_s"], 1),
            "regularize": summary.get("regularize"),
            "answers_after": {p["input"]: p["after"] for p in summary["probes"]},
        }
        print(json.dumps({label: results[label]}), flush=True)
    (out / "forgetting-levers.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
