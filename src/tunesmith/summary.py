"""Human-readable end-of-run summary for the terminal."""

from __future__ import annotations


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_summary(summary: dict) -> str:
    """A before/after metric table, throughput, and the probe answers before and after."""
    lines = [f"\n== {summary['name']}: {summary['status']} ({summary['task']}, {summary['method']}) =="]
    before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
    width = max((len(k) for k in after), default=6)
    lines.append(f"{'metric':<{width}}  {'before':>10}  {'after':>10}")
    for key, value in after.items():
        lines.append(f"{key:<{width}}  {_fmt(before.get(key)):>10}  {_fmt(value):>10}")
    train = summary.get("train", {})
    lines.append(
        f"train: {train.get('steps')} steps, {train.get('wall_s', 0):.1f} s, "
        f"{train.get('samples_per_s', 0):.1f} samples/s, {train.get('tokens_per_s', 0):.0f} tokens/s, "
        f"peak RSS {train.get('peak_rss_mb', 0):.0f} MB; total {summary.get('total_wall_s', 0):.1f} s"
    )
    for probe in summary.get("probes", []):
        lines.append(f"\n> {probe['input']}")
        lines.append(f"  before: {probe_text(probe['before'])}")
        lines.append(f"  after:  {probe_text(probe['after'])}")
    lines.append(f"\nrun directory: {summary['run_dir']} (report.html, final/, metrics.jsonl)")
    return "\n".join(lines)


def probe_text(value) -> str:
    """One probe result on one line: a classifier's label and probability, a reward
    model's reward, or a generated answer."""
    if isinstance(value, dict):
        if "reward" in value:
            return f"reward {value['reward']:+.3f}"
        return f"{value['label']} ({value['probability']:.2f})"
    return value.replace("\n", " ")


def print_summary(summary: dict) -> None:
    print(format_summary(summary))
