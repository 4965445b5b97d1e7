"""The PNG plots of a run: losses, learning rate and gradient norm, the headline eval metric,
confusion matrices and reward distributions. Each returns its path, or None when the run has nothing to draw."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on servers/CI
import matplotlib.pyplot as plt  # noqa: E402

from tunesmith.rundir import RunDir  # noqa: E402


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not dragged to 0)."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss(run_dir: Path, summary: dict) -> Path | None:
    """loss.png: the smoothed training loss over the raw one (faint), and eval loss before
    training, at each evaluation and after."""
    rows = RunDir(run_dir).log("metrics")
    if not rows:
        return None
    evals = [r for r in RunDir(run_dir).log("eval") if "eval_loss" in r]
    if "eval_loss" in (summary.get("eval_before") or {}):
        evals = [{"step": 0, "eval_loss": summary["eval_before"]["eval_loss"]}] + evals
    if "eval_loss" in (summary.get("eval_after") or {}):
        evals.append({"step": summary["train"]["steps"], "eval_loss": summary["eval_after"]["eval_loss"]})
    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    marker = "o" if len(rows) < 20 else None  # a single point must still show
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, color="#4c72b0", alpha=0.3, marker=marker, label="train loss")
    ax.plot(steps, smooth(losses), color="#4c72b0", label="train loss (smoothed)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", color="#dd8452", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, run_dir / "loss.png")


def plot_optimizer(run_dir: Path) -> Path | None:
    """optimizer.png: the learning rate and the gradient norm (before clipping) per logged step."""
    rows = RunDir(run_dir).log("metrics")
    if not rows:
        return None
    marker = "o" if len(rows) < 20 else None
    fig, (lr_ax, norm_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    lr_ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], marker=marker)
    lr_ax.set_title("learning rate")
    norm_ax.plot([r["step"] for r in rows], [r["grad_norm"] for r in rows], marker=marker, color="#55a868")
    norm_ax.set_title("gradient norm")
    for ax in (lr_ax, norm_ax):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    return _save(fig, run_dir / "optimizer.png")


def plot_eval(run_dir: Path, summary: dict, key: str | None) -> Path | None:
    """eval.png: the headline metric before training, at each evaluation, and after (not drawn
    when it is the eval loss, which loss.png already shows)."""
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    if key is None or key == "eval_loss" or key not in after:
        return None
    points = [(0, before[key])] + [(r["step"], r[key]) for r in RunDir(run_dir).log("eval") if key in r]
    points.append((summary["train"]["steps"], after[key]))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), "o-")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    ax.set_title(f"eval {key}: {before[key]:.4f} -> {after[key]:.4f}")
    ax.grid(alpha=0.3)
    return _save(fig, run_dir / "eval.png")


def plot_rewards(run_dir: Path) -> Path | None:
    """rewards.png (reward models): the held-out chosen and rejected rewards before and
    after training -- two histograms that should move apart -- and each pair's margin
    before against after."""
    path = run_dir / "rewards.jsonl"
    if not path.is_file():
        return None
    from tunesmith.jsonl import read_jsonl

    rows = read_jsonl(path)
    whens = [w for w in ("before", "after") if rows and f"chosen_{w}" in rows[0]]
    panels = [(f"rewards {w}", [r[f"chosen_{w}"] for r in rows], [r[f"rejected_{w}"] for r in rows]) for w in whens]
    return plot_reward_panels(panels, run_dir / "rewards.png", ("before", "after"))


def plot_reward_panels(panels: list[tuple[str, list, list]], path: Path, names: tuple[str, str]) -> Path:
    """One histogram panel per ``(title, chosen rewards, rejected rewards)`` -- the two
    should lie apart -- and a last panel of each pair's margin: the last panel's margins
    against the first's (named by ``names``) when there are two, else their histogram."""
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.4))
    for ax, (title, chosen, rejected) in zip(axes, panels):
        bins = np.histogram_bin_edges(chosen + rejected, bins=20)  # shared bins: the two compare bar by bar
        ax.hist(chosen, bins=bins, alpha=0.6, color="tab:green", label="chosen")
        ax.hist(rejected, bins=bins, alpha=0.6, color="tab:red", label="rejected")
        ax.set_title(title)
        ax.set_xlabel("reward")
        ax.legend()
    margin = axes[-1]
    last = [c - r for c, r in zip(panels[-1][1], panels[-1][2])]
    if len(panels) > 1:
        margin.scatter([c - r for c, r in zip(panels[0][1], panels[0][2])], last, s=10)
        margin.set_xlabel(f"margin {names[0]}")
    else:
        margin.hist(last, bins=20)
    margin.axhline(0, color="grey", linewidth=0.8)  # below: the pair is ranked the wrong way
    margin.set_ylabel(f"margin {names[1]} (chosen - rejected)")
    margin.set_title("per pair")
    return _save(fig, path)


def plot_confusion(run_dir: Path, summary: dict) -> Path | None:
    """confusion.png: confusion matrices before and after training (classification); cell
    numbers are white on dark cells, so they stay readable."""
    matrices = summary.get("confusion_matrix") or {}
    labels = summary.get("labels")
    if not labels or not matrices.get("after"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, when in zip(axes, ("before", "after")):
        matrix = matrices[when]
        top = max(max(row) for row in matrix) or 1
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=top)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(when)
    return _save(fig, run_dir / "confusion.png")
