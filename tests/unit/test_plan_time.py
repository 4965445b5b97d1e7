"""The step-time model's work counts: timed kernels keep their layout, in-place foreach
updates count their writes, large fresh results and the kept activations' heap pages
are counted as faulted in."""

from __future__ import annotations

import pytest
import torch

from tunesmith.plan import device as device_module
from tunesmith.plan.device import Rates, _random_tensor, kernel_seconds, replayable
from tunesmith.plan.planner import step_seconds
from tunesmith.plan.trace import model_config, trace_training
from tunesmith.plan.work import WorkCounter
from tests.unit.test_plan import recipe


def test_a_timed_matrix_product_is_replayed_with_the_traced_layout(tmp_path, monkeypatch):
    """The backward pass multiplies transposed operands; the timed call must read them the same way."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setattr(device_module, "_KERNEL_TIMES", {})
    a, w = torch.randn(64, 32), torch.randn(48, 32)
    with WorkCounter() as work:
        torch.mm(a, w.t())
    [key] = work.kernels
    assert key[0] == "aten.mm.default"
    operands = [_random_tensor(spec, "cpu") for spec in key[1]]
    assert [(t.shape, t.stride()) for t in operands] == [(a.shape, a.stride()), (w.t().shape, w.t().stride())]
    assert operands[1].stride() == (1, 32)  # transposed, as traced

    timings = []
    monkeypatch.setattr(device_module, "_timed", lambda work, seconds=0.4: (work(), timings.append(1), 1000.0)[-1])
    assert kernel_seconds("cpu", key) == pytest.approx(1 / 1000)
    monkeypatch.setattr(device_module, "_KERNEL_TIMES", {})  # a new process: read back from the cache file
    assert kernel_seconds("cpu", key) == pytest.approx(1 / 1000)
    assert len(timings) == 1


def test_an_attention_backward_call_is_counted_and_replayable():
    q, k, v = (torch.randn(1, 2, 16, 8, requires_grad=True) for _ in range(3))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with WorkCounter() as work:
        out.sum().backward()
    [backward] = [key for key in work.kernels if "attention" in key[0] and "backward" in key[0]]
    # Replayed on random data of the traced layout (what gets timed), the kernel gives
    # finite gradients of q, k and v.
    grads = replayable(backward, "cpu")()
    assert [tuple(g.shape) for g in grads[:3]] == [tuple(q.shape)] * 3
    assert all(bool(torch.isfinite(g).all()) for g in grads[:3])


def test_in_place_foreach_updates_count_their_writes():
    a, b = torch.randn(1000), torch.randn(1000)
    with WorkCounter() as single:
        a.add_(b)
    with WorkCounter() as foreach:
        torch._foreach_add_([a], [b])
    assert single.inplace_bytes == foreach.inplace_bytes == 3 * 4000  # read a, read b, write a


def test_fresh_results_too_large_for_the_heap_are_counted_as_faulted_in():
    big, small = torch.randn(2**18), torch.randn(1000)  # 1 MB, 4 KB
    parts = [torch.randn(2**16) for _ in range(4)]     # 256 KB each, 1 MB together
    with WorkCounter(heap_limit=2**20) as work:
        torch.mul(big, big)
        torch.mul(small, small)
    assert work.faulted_bytes == 2**20
    assert work.fresh_bytes == 3 * 2**20 + 3 * 4000
    with WorkCounter(heap_limit=2**20) as work:
        torch._foreach_sqrt(parts)  # every result alive at once: together they leave the heap
    assert work.faulted_bytes == 2**20


def test_step_time_adds_the_heap_pages_the_activations_are_written_to(tiny_llama_dir):
    """Every activation below the mmap threshold is written into fresh pages each
    micro-batch; with checkpointing the blocks' activations are written again."""
    hf = model_config(str(tiny_llama_dir))
    config = recipe(tiny_llama_dir, type="full")
    trace = trace_training(config, hf, 3, 24, 23)
    slow_faults = Rates(1e12, 1e10, 1e10, 1e9, "test", fault_bytes=1e6)
    no_faults = Rates(1e12, 1e10, 1e10, 1e9, "test")
    grown = step_seconds(trace, slow_faults, config) - step_seconds(trace, no_faults, config)
    large_results = (trace.forward_work.faulted_bytes + trace.backward_work.faulted_bytes
                     + trace.optimizer_work.faulted_bytes) / 1e6
    assert trace.small_saved_bytes > 0
    assert grown == pytest.approx(large_results + trace.small_saved_bytes / 1e6)

    checkpointed = config.model_copy(update={"train": config.train.model_copy(update={"gradient_checkpointing": True})})
    grown_checkpointed = step_seconds(trace, slow_faults, checkpointed) - step_seconds(trace, no_faults, checkpointed)
    block_share = trace.blocks * trace.block_saved_bytes / trace.saved_bytes
    assert 0 < block_share < 1
    recomputed = trace.blocks * trace.block_forward_work.faulted_bytes / 1e6  # the blocks' forward runs twice
    assert grown_checkpointed == pytest.approx(
        large_results + recomputed + (1 + block_share) * trace.small_saved_bytes / 1e6)


def test_the_optimizer_step_is_counted_for_the_recipes_optimizer(tiny_llama_dir):
    """SGD with momentum keeps one buffer and AdamW two moments: SGD moves less memory."""
    hf = model_config(str(tiny_llama_dir))
    moved = {}
    for kind in ("adamw", "sgd", "adamw_8bit"):
        config = recipe(tiny_llama_dir, type="full")
        config = config.model_copy(update={"train": config.train.model_copy(update={"optimizer": kind})})
        moved[kind] = trace_training(config, hf, 3, 24, 23).optimizer_work.inplace_bytes
    assert moved["sgd"] < moved["adamw"] / 2
    assert moved["adamw_8bit"] == moved["adamw"]  # its elementwise passes stand in for bitsandbytes' kernels


@pytest.mark.parametrize("gpu_mb, expected", [(None, 700.0), (512.0, 512.0)])
def test_the_accuracy_benchmark_reads_the_runs_peak_and_step(tmp_path, gpu_mb, expected):
    """Resident memory above the baseline on a CPU, ``max_memory_allocated`` on a GPU; the
    step time from tokens/s, the first (warm-up) step left out."""
    from tunesmith.rundir import RunDir
    from tunesmith.testing import peak_and_step_of
    from tunesmith.train.logbook import Logbook

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_summary({"train": {"peak_rss_mb": 1000.0, "baseline_rss_mb": 300.0, "peak_gpu_mb": gpu_mb}})
    logbook = Logbook(run.path).open()
    for step, rate in enumerate([100.0, 512.0, 256.0, 1024.0], start=1):
        logbook.write("metrics", {"step": step, "tokens_per_s": rate})
    logbook.close()
    assert peak_and_step_of(run, tokens_per_step=512) == {"peak_mb": expected, "step_s": 1.0}
