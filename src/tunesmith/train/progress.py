"""How training shows its progress: a bar in a terminal, plain lines in a log file or pipe.

A tqdm bar written to a file or pipe is a stream of carriage-return redraws that nobody can
read, and block buffering delays it by minutes. Outside a terminal (or with ``--no-progress``)
the run prints one flushed line per metrics line (step, loss, lr, tokens/s, ETA) and one per
evaluation instead; ``--quiet`` prints neither.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def resolve_mode(show_progress: bool | str) -> str:
    """``True`` -> "bar" in a terminal, "lines" elsewhere; ``False`` -> "off"; or a mode as given."""
    if show_progress is True:
        return "bar" if sys.stderr.isatty() else "lines"
    return show_progress if isinstance(show_progress, str) else "off"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Progress of one training run, in the chosen ``mode`` (bar, lines or off)."""

    def __init__(self, total: int, initial: int, mode: str):
        self.total, self.initial, self.mode = total, initial, mode
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True) \
            if mode == "bar" else None

    def step(self) -> None:
        if self.bar:
            self.bar.update(1)

    def metrics(self, record: dict) -> None:
        """After a metrics.jsonl line."""
        if self.bar:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['tokens_per_s']:.0f}")
        elif self.mode == "lines":
            done = record["step"] - self.initial
            eta = (time.perf_counter() - self.started) / done * (self.total - record["step"]) if done else 0.0
            print(f"step {record['step']}/{self.total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                  f"tokens/s {record['tokens_per_s']:.0f}  eta {_duration(eta)}", flush=True)

    def evaluation(self, step: int, metrics: dict) -> None:
        if self.mode == "lines":
            scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"eval at step {step}: {scores}", flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
