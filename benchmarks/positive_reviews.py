"""The "write positive movie reviews" demo: before/after table of each stage (#16).

Stages (shipped recipes in ``src/tunesmith/recipes/positive-reviews/``, run from one
folder that holds ``runs/``): the demo's sentiment classifier (``tunesmith demo``), DPO
on rated pairs, a reward model on the same pairs, GRPO rewarded by the classifier.
``--train`` runs the stages that are missing.

Each model -- the base SmolLM2-135M-Instruct, the DPO policy, the GRPO policy -- writes
``--samples`` reviews to "Write a one-sentence movie review." (sampled, temperature 0.8,
top-p 0.95, seed 0, the same for every model). The reviews are measured by:

- positivity: the classifier's mean probability of "positive" (and the share above 0.5),
  and the reward model's mean reward (each with a bootstrap 95% interval);
- fluency: perplexity of the reviews under the untouched base model;
- diversity: distinct-2 (unique word bigrams / all word bigrams, over all reviews).

Prints a markdown table (anchor: the base model) and writes it, with the raw numbers, to
``--out`` (.md and .jsonl).

    python benchmarks/positive_reviews.py --train --runs runs
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tunesmith.eval.bootstrap import bootstrap_ci
from tunesmith.eval.decode import DecodeSettings, generate_answers
from tunesmith.eval.generation import reference_losses
from tunesmith.eval.targets import load_target

RECIPES = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "positive-reviews"
PROMPT = "Write a one-sentence movie review."
BASE = "builtin:smollm2-135m"
STAGES = {"demo": None, "positive-dpo": "dpo.yaml", "positive-reward": "reward.yaml", "positive-grpo": "grpo.yaml"}


def train_missing(runs: Path) -> None:
    """Run each stage whose run directory has no finished model, in order."""
    if runs.name != "runs":
        raise SystemExit("--runs must be a folder named runs: the GRPO recipe reads runs/demo")
    cli = [str(Path(sys.executable).parent / "tunesmith")]
    for name, recipe in STAGES.items():
        if (runs / name / "final" / "tunesmith.json").is_file():
            continue
        started = time.perf_counter()
        args = ["demo"] if recipe is None else ["train", str(RECIPES / recipe)]
        subprocess.run([*cli, *args, "--no-progress", "--output-dir", str(runs / name)], check=True,
                       cwd=runs.parent)
        print(f"trained {name} in {time.perf_counter() - started:.0f} s", flush=True)


def sample_reviews(spec: str, samples: int, batch_size: int) -> list[str]:
    """``samples`` reviews from the model ``spec`` names, prompted with its own template."""
    target = load_target(spec)
    prompt = target.objective().prompt_ids(PROMPT)[0].tolist()
    settings = DecodeSettings(max_new_tokens=48, temperature=0.8, top_p=0.95, seed=0, batch_size=batch_size)
    answers = generate_answers(target.model, target.tokenizer, [prompt] * samples, settings)
    return [a["text"].strip() for a in answers]


def distinct_2(texts: list[str]) -> float:
    """Unique word bigrams over all word bigrams of ``texts`` (Li et al., 2016)."""
    bigrams = [pair for t in texts for pair in zip(t.lower().split(), t.lower().split()[1:])]
    return len(set(bigrams)) / max(1, len(bigrams))


def with_interval(values) -> dict:
    values = np.asarray(values, dtype=float)
    low, high = bootstrap_ci(values, resamples=1000, seed=0)
    return {"value": float(values.mean()), "ci95": [low, high]}


class Judges:
    """The classifier, the reward model and the base model, loaded once."""

    def __init__(self, runs: Path):
        self.classifier = load_target(str(runs / "demo"))
        self.reward = load_target(str(runs / "positive-reward"))
        self.base = load_target(BASE)

    @torch.inference_mode()
    def measure(self, reviews: list[str]) -> dict:
        objective = self.classifier.objective()
        features = objective.encode([{"text": r or ".", "label": self.classifier.labels[0]} for r in reviews])
        probs = objective.predict(self.classifier.model, features, 32, "cpu")
        positive = probs[:, self.classifier.labels.index("positive")].numpy()
        scorer = self.reward.objective()
        rewards = [x for start in range(0, len(reviews), 32)
                   for x in scorer.score(self.reward.model, PROMPT, [r or "." for r in reviews[start : start + 32]])]
        items = [{"messages": [{"role": "user", "content": PROMPT}], "reference": r} for r in reviews]
        nll = reference_losses(self.base.objective(), self.base.model, items, "cpu")
        return {"p_positive": with_interval(positive), "share_positive": with_interval(positive > 0.5),
                "reward": with_interval(rewards), "perplexity_base": math.exp(nll[:, 0].sum() / nll[:, 1].sum()),
                "distinct_2": distinct_2(reviews), "words": float(np.mean([len(r.split()) for r in reviews]))}


def table(results: dict) -> str:
    def cell(entry):
        return f"{entry['value']:.3f} [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"

    lines = ["| model | P(positive), classifier | share positive | reward (reward model) | perplexity under base "
             "| distinct-2 | words |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {cell(r['p_positive'])} | {cell(r['share_positive'])} | {cell(r['reward'])} | "
                     f"{r['perplexity_base']:.2f} | {r['distinct_2']:.3f} | {r['words']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs", help="folder holding the stages' run directories")
    parser.add_argument("--train", action="store_true", help="train the stages that are missing first")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="docs/results/positive-reviews", help="writes OUT.md and OUT.jsonl")
    args = parser.parse_args()
    runs = Path(args.runs).resolve()
    if args.train:
        train_missing(runs)
    judges = Judges(runs)
    models = {"base (SmolLM2-135M-Instruct)": BASE, "DPO": str(runs / "positive-dpo"),
              "GRPO (classifier reward)": str(runs / "positive-grpo")}
    results, examples = {}, {}
    for name, spec in models.items():
        started = time.perf_counter()
        reviews = sample_reviews(spec, args.samples, args.batch_size)
        results[name] = judges.measure(reviews)
        examples[name] = reviews[:5]
        print(f"{name}: {args.samples} reviews measured in {time.perf_counter() - started:.0f} s", flush=True)
    text = table(results)
    base = results[next(iter(results))]
    ratios = "\n".join(f"- {name}: P(positive) {r['p_positive']['value'] / base['p_positive']['value']:.2f}x the "
                       f"base's, perplexity {r['perplexity_base'] / base['perplexity_base']:.2f}x, distinct-2 "
                       f"{r['distinct_2'] / base['distinct_2']:.2f}x" for name, r in list(results.items())[1:])
    print(text + "\n\n" + ratios)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = "\n".join(f"\n**{name}**\n" + "\n".join(f"- {r}" for r in rs) for name, rs in examples.items())
    out.with_suffix(".md").write_text(f"{text}\n\n{ratios}\n\nFirst five reviews of each model:\n{samples}\n")
    with out.with_suffix(".jsonl").open("a") as f:
        f.write(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "samples": args.samples, "results": results,
                            "examples": examples}) + "\n")


if __name__ == "__main__":
    main()
