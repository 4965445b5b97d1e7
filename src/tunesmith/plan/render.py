"""The plan as text: the table `tunesmith plan` prints."""

from __future__ import annotations


def size(n: float | None) -> str:
    """Bytes in the largest unit that keeps a digit before the point."""
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{int(n)} B"


def duration(seconds: float | None) -> str:
    """Seconds as '1.2 s', '3.4 min' or '5.6 h'."""
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render_plan(plan) -> str:
    """The human-readable plan: parameters, memory by component against the budget, time, disk."""
    p, d, t, b = plan.params, plan.device, plan.time, plan.micro_batch
    lines = [f"plan for {plan.recipe}: method {plan.method} on {d['name']}"
             + (f" x {d['count']}" if d["count"] > 1 else ""),
             f"  parameters   {p['total']:,} total, {p['trainable']:,} trainable ({100 * p['trainable_share']:.2f}%)",
             "  weights as   " + ", ".join(f"{k} {size(v)}" for k, v in plan.weights_by_dtype.items()),
             f"  micro-batch  {b['rows']} rows x {b['length']} tokens ({b['targets_per_row']} trained per row)",
             f"  sizes        gradients {size(plan.sizes['gradients'])}; AdamW moments {size(plan.sizes['adamw'])} "
             f"(8-bit AdamW: {size(plan.sizes['adamw_8bit'])}); activations {size(plan.sizes['activations'])} "
             f"({size(plan.sizes['activations_checkpointed'])} with gradient checkpointing)",
             "  memory at the peak (" + plan.peak_moment + "):"]
    for name, value in plan.components.items():
        lines.append(f"    {name:12s} {size(value):>12s}")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(f"    {'total':12s} {size(plan.total_bytes):>12s}  of {size(d['memory_bytes'])}: {verdict} "
                 f"({100 * plan.total_bytes / d['memory_bytes']:.0f}%)")
    r = d["rates"]
    faults = f", page faults {r['fault_bytes'] / 1e9:.1f} GB/s" if r and r.get("fault_bytes") else ""
    rate = (f"matmul {r['matmul_flops'] / 1e12:.2f} TFLOP/s, elementwise {r['fresh_bytes'] / 1e9:.0f}-"
            f"{r['inplace_bytes'] / 1e9:.0f} GB/s{faults}; {r['source']}") if r else "unknown device rates: no time estimate"
    lines.append(f"  time         {duration(t['step_s'])} per step ({t['flops_per_step'] / 1e12:.2f} TFLOP; {rate})")
    if t["epoch_s"]:
        lines.append(f"               {duration(t['epoch_s'])} per epoch ({t['steps_per_epoch']} steps)")
    disk = plan.disk
    lines.append(f"  disk         {size(disk['checkpoint_bytes'])} per checkpoint, {disk['kept']} kept; "
                 f"{size(disk['total_bytes'])} with final/")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def render_methods(plans: dict) -> str:
    """Every method side by side: trainable parameters, peak memory, fit, step time."""
    lines = [f"{'method':10s} {'trainable':>12s} {'memory':>12s} {'fits':>5s} {'step':>10s}"]
    for name, plan in plans.items():
        if isinstance(plan, str):
            lines.append(f"{name:10s} n/a: {plan}")
            continue
        lines.append(f"{name:10s} {plan.params['trainable']:>12,} {size(plan.total_bytes):>12s} "
                     f"{'yes' if plan.fits else 'NO':>5s} {duration(plan.time['step_s']):>10s}")
    return "\n".join(lines)
