"""Smaller models after fine-tuning, on the demo task: structured pruning and distillation.

1. The teacher: the shipped demo recipe (LoRA on MiniLM, 6 layers, rt-snippets), merged.
2. Pruning (`export --to pruned`, FFN neurons; MiniLM's heads cannot be pruned into a plain
   BERT config) at sparsity 0.25 and 0.5, without and with a 200-step recovery.
3. Distillation into a 3-layer student built from the teacher (keep_every 2), against the
   same student trained on the labels alone (alpha 0), and the teacher cache lever
   (cache_top_k 0: the teacher runs on every batch).

Each model: held-out accuracy (the run's 500 eval sentences), parameters, weights on disk,
latency at batch 1 (median over 64 sentences) and batch 64 (median of 5). One process, CPU.

With --chat, the same for a chat model instead: the identity SFT recipe (LoRA on
SmolLM2-135M, 30 layers) as teacher; pruning of its attention heads and FFN neurons judged
by held-out eval loss; a 15-layer student (keep_every 2) distilled vs trained on the SFT
loss alone, judged by eval loss and the generation metrics of its held-out answers.

Usage:
  python benchmarks/smaller_models.py [--out DIR] [--chat]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from tunesmith.config.load import load_recipe
from tunesmith.export import export_run
from tunesmith.export.measure import batch_latency_ms, folder_mb, latency_ms, objective_for
from tunesmith.methods.saved import load_trained, merge_trained
from tunesmith.models.prune import count_parameters
from tunesmith.rundir import RunDir
from tunesmith.runner import run_recipe

RECIPES = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes"
DEMO = RECIPES / "demo.yaml"
CHAT = RECIPES / "sft-identity-lora.yaml"
# Generation scores of the held-out chats; the 100 general questions are left out for time.
CHAT_EVAL = ["eval.forgetting=false", "eval.max_generate_samples=40", "eval.probes=[]"]
QUIET = {"show_progress": False, "log": lambda *_: None}


def measure(run: Path, merge: bool = False, headline: str = "accuracy") -> dict:
    """Accuracy (from the run), parameters, size and latency of a run's final model."""
    model, tokenizer, meta = load_trained(run / "final", full_precision=True)
    if merge:
        model = merge_trained(model, meta["method"])
    model = model.float().eval()
    objective = objective_for(meta, tokenizer)
    features = objective.encode(RunDir(run).eval_rows())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        size = folder_mb(Path(tmp))
    summary = RunDir(run).read_summary()
    after = summary["eval_after"]
    scores = {k: round(after[k], 4) for k in (headline, "chrf", "rougeL", "token_f1") if k in after}
    return {**scores, "params": count_parameters(model),
            "size_mb": size, "latency_b1_ms": latency_ms(model, objective, features),
            "latency_b64_ms": batch_latency_ms(model, objective, features),
            "train_s": summary.get("train", {}).get("wall_s")}


def teacher_agreement(run: Path, teacher: Path) -> dict:
    """How closely a student follows its teacher on the held-out rows: the share of equal
    predicted labels and the mean |P(positive)| difference."""
    ours, theirs = RunDir(run).predictions(), RunDir(teacher).predictions()
    first = next(iter(theirs[0]["probs"]))
    return {"same_label": round(sum(a["predicted"] == b["predicted"] for a, b in zip(ours, theirs)) / len(theirs), 4),
            "mean_prob_gap": round(sum(abs(a["probs"][first] - b["probs"][first])
                                       for a, b in zip(ours, theirs)) / len(theirs), 4)}


def plot_tradeoff(results: dict, path: Path) -> Path:
    """Accuracy against batch-1 latency for every model of a (classification) results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The live-teacher student is the cached one's twin (a speed lever): one point for both.
    points = {name: (r["latency_b1_ms"], r["accuracy"]) for name, r in results["distillation"].items()
              if "live teacher" not in name}
    for name, r in results["pruning"].items():
        final = next(k for k in r["latency_b1_ms"] if k != "unpruned")
        points[f"pruned {name}"] = (r["latency_b1_ms"][final], r["accuracy"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (x, y) in points.items():
        ax.scatter(x, y, color="tab:orange" if name.startswith("pruned") else "tab:blue")
        ax.annotate(name.replace(" (", "\n("), (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("latency at batch 1 (ms, median of 64 sentences)")
    ax.set_ylabel("held-out accuracy (500 sentences)")
    ax.set_title("Smaller demo models: accuracy against latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def train(out: Path, name: str, *sets: str, recipe: Path = DEMO) -> Path:
    config = load_recipe(recipe, [f"name={name}", "train.save_every=1000", f"output_dir={out}", *sets])
    run_recipe(config, base_dir=recipe.parent, **QUIET)
    return out / name


def chat(out: Path, args) -> dict:
    """The --chat measurements (see the module docstring)."""
    results: dict = {"pruning": {}, "distillation": {}}
    teacher = Path(args.teacher) if args.teacher else train(out, "chat-teacher", *CHAT_EVAL, recipe=CHAT)
    results["distillation"]["teacher (30 layers, LoRA merged)"] = measure(teacher, merge=True, headline="eval_loss")
    print(json.dumps(results["distillation"]), flush=True)
    for structure, sparsity in () if args.skip_pruning else (("heads", 0.33), ("ffn", 0.25), ("ffn", 0.5)):
        report = export_run(teacher, "pruned", out / f"chat-pruned-{structure}-{sparsity}", prune={
            "sparsity": sparsity, "structure": structure, "max_drop": 100.0})
        results["pruning"][f"{structure} {sparsity}"] = {
            "eval_loss": report["metrics"], "pruning": report["pruning"], "params": report["params"],
            "size_mb": report["size_mb"], "latency_b1_ms": report["latency_ms_per_example"],
            "latency_b64_ms": report["latency_ms_batch64"]}
        print(json.dumps({f"{structure} {sparsity}": results["pruning"][f"{structure} {sparsity}"]}), flush=True)
    student = ["task=distill", f"distill.teacher={teacher}", "distill.keep_every=2", "method={type: full}",
               "train.lr=1e-4", *CHAT_EVAL, *args.student_set]
    for label, sets in (("student 15 layers, distilled (alpha 0.5, T 2, top-20 cache)", []),
                        ("student 15 layers, SFT loss only (alpha 0)", ["distill.alpha=0"])):
        run = train(out, "chat-" + ("sft" if sets else "kd"), *student, *sets, recipe=CHAT)
        results["distillation"][label] = measure(run, headline="eval_loss")
        print(json.dumps({label: results["distillation"][label]}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--student-epochs", type=int, default=1, help="distillation students' epochs (default 1)")
    parser.add_argument("--skip-pruning", action="store_true", help="distillation only")
    parser.add_argument("--teacher", help="reuse this trained teacher run instead of training one")
    parser.add_argument("--student-set", action="append", default=[], help="extra --set for the students")
    parser.add_argument("--chat", action="store_true", help="measure the chat model instead of the demo classifier")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="smaller-models-"))
    started = time.perf_counter()
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    if args.chat:
        results = {"machine": machine, **chat(out, args), "wall_s": round(time.perf_counter() - started, 1)}
        (out / "smaller_models_chat.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        return
    results: dict = {"machine": machine, "pruning": {}, "distillation": {}}
    teacher = Path(args.teacher) if args.teacher else train(out, "teacher")
    results["distillation"]["teacher (6 layers, LoRA merged)"] = measure(teacher, merge=True)
    print(json.dumps(results["distillation"], indent=1), flush=True)

    for sparsity in () if args.skip_pruning else (0.25, 0.5):
        for steps in (0, 200):
            report = export_run(teacher, "pruned", out / f"pruned-{sparsity}-{steps}", prune={
                "sparsity": sparsity, "structure": "ffn", "recover_steps": steps, "max_drop": 1.0})
            final = "recovered" if steps else "pruned"
            results["pruning"][f"ffn {sparsity}, recover {steps}"] = {
                "accuracy": report["metrics"][final]["accuracy"],
                "unpruned_accuracy": report["metrics"]["unpruned"]["accuracy"],
                "params": report["params"], "size_mb": report["size_mb"],
                "latency_b1_ms": report["latency_ms_per_example"], "latency_b64_ms": report["latency_ms_batch64"],
                "wall_s": report.get("wall_s")}
            print(json.dumps({f"ffn {sparsity}, recover {steps}": results["pruning"][f"ffn {sparsity}, recover {steps}"]}),
                  flush=True)

    student = ["task=distill", f"distill.teacher={teacher}", "distill.keep_every=2", "method={type: full}",
               "train.lr=1e-4", f"train.epochs={args.student_epochs}", *args.student_set]
    runs = {"student 3 layers, distilled (alpha 0.5, T 2, cached)": train(out, "kd", *student),
            "student 3 layers, labels only (alpha 0)": train(out, "labels", *student, "distill.alpha=0"),
            "student 3 layers, distilled, live teacher (cache_top_k 0)":
                train(out, "kd-live", *student, "distill.cache_top_k=0")}
    for label, run in runs.items():
        results["distillation"][label] = dict(measure(run), teacher_agreement=teacher_agreement(run, teacher))
        cache_s = RunDir(run).read_summary().get("distill", {}).get("cache_s")
        if cache_s is not None:
            results["distillation"][label]["teacher_cache_s"] = cache_s
        print(json.dumps({label: results["distillation"][label]}), flush=True)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    (out / "smaller_models.json").write_text(json.dumps(results, indent=2))
    if results["pruning"]:
        plot_tradeoff(results, out / "smaller_models.png")
    print(json.dumps(results, indent=2))
    print(f"written to {out / 'smaller_models.json'}")


if __name__ == "__main__":
    main()
