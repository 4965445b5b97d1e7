"""The training loop's numerical-health guard settings (``train.guard``)."""

from __future__ import annotations

from pydantic import Field

from tunesmith.config.section import Section


class GuardConfig(Section):
    """Numerical-health guard: skip bad batches, roll back after repeated trouble."""

    enabled: bool = Field(True, description="Check every step for non-finite loss/gradients and loss spikes.")
    window: int = Field(20, ge=2, description="Recent accepted losses the spike statistics use.")
    min_history: int = Field(10, ge=2, description="Accepted steps before spike detection starts.")
    spike_std: float = Field(6.0, gt=0, description="A loss above the rolling mean by this many standard deviations is a spike.")
    spike_factor: float = Field(3.0, gt=1, description="A loss above this factor of the recent median is a spike.")
    min_delta: float = Field(
        0.5, ge=0, description="A spike must also exceed the rolling mean by this much absolute loss "
        "(near-zero losses jump by large factors harmlessly).",
    )
    max_skips: int = Field(3, ge=1, description="Skipped batches within skip_window steps that trigger a rollback.")
    skip_window: int = Field(50, ge=1, description="Steps over which skips are counted.")
    max_rollbacks: int = Field(3, ge=0, description="Rollbacks before the run stops with a report.")
    rollback_lr_factor: float = Field(
        1.0, gt=0, le=1, description="Multiply the learning rate by this after each rollback (e.g. 0.5)."
    )
