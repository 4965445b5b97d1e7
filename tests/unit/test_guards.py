"""HealthGuard decisions on plain numbers."""

from __future__ import annotations

from tunesmith.config.schema import GuardConfig
from tunesmith.train.guards import HealthGuard


def _warm(guard, values):
    for v in values:
        assert guard.verdict(v, 1.0) is None
        guard.accept(v)


def test_non_finite_loss_and_gradients_are_rejected_from_the_first_step():
    guard = HealthGuard(GuardConfig())
    assert "non-finite loss" in guard.verdict(float("nan"), 1.0)
    assert "non-finite loss" in guard.verdict(float("inf"), 1.0)
    assert "non-finite gradient" in guard.verdict(1.0, float("nan"))
    assert guard.verdict(1.0, 1.0) is None


def test_spike_by_standard_deviations_and_by_median_factor():
    guard = HealthGuard(GuardConfig(min_history=5, spike_std=6, spike_factor=3, min_delta=0.5))
    _warm(guard, [2.0, 2.1, 1.9, 2.05, 1.95, 2.0])
    assert "mean" in guard.verdict(3.0, 1.0)  # 1 nat above a very steady loss: many std
    assert guard.verdict(2.3, 1.0) is None  # within min_delta: ordinary noise
    noisy = HealthGuard(GuardConfig(min_history=5, spike_std=100, spike_factor=3, min_delta=0.5))
    _warm(noisy, [1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    assert noisy.verdict(5.0, 1.0) is None
    assert "median" in noisy.verdict(9.5, 1.0)


def test_near_zero_losses_do_not_count_as_spikes():
    guard = HealthGuard(GuardConfig(min_history=5))
    _warm(guard, [0.004, 0.006, 0.005, 0.004, 0.006])
    assert guard.verdict(0.3, 1.0) is None  # 60x the mean, but only 0.3 nats


def test_no_spike_detection_before_min_history_and_disabled_guard_accepts_everything():
    guard = HealthGuard(GuardConfig(min_history=10))
    _warm(guard, [1.0] * 5)
    assert guard.verdict(50.0, 1.0) is None
    off = HealthGuard(GuardConfig(enabled=False))
    assert off.verdict(float("nan"), float("nan")) is None


def test_rollback_after_k_skips_within_the_window():
    guard = HealthGuard(GuardConfig(max_skips=3, skip_window=10))
    assert not guard.record_skip(1)
    assert not guard.record_skip(5)
    assert not guard.record_skip(20)  # the first two fell out of the window
    assert not guard.record_skip(21)
    assert guard.record_skip(22)
    guard.after_rollback()
    assert not guard.record_skip(23)
