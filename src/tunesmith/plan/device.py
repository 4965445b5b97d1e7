"""The device a plan is for: its memory budget and how fast it does each kind of work.

On this machine each matrix-product and attention call of the step is run once on random
data and timed (:func:`kernel_seconds`); the rest runs at rates from a few seconds of
microbenchmarks: a matmul at the model's own shapes, elementwise ops writing fresh and
in-place tensors, random numbers, and pages faulted in for results that leave glibc's
heap. Both are cached per machine under the cache directory, so later plans are instant.
A named GPU that is not this machine's (``--device a100:80GB``) takes its dense bf16 rate and memory bandwidth from the vendor's data sheet, scaled by the share
that training reaches (``GPU_ACHIEVED``), and says so.
"""

from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import asdict, dataclass

from tunesmith.errors import ConfigError
from tunesmith.paths import cache_root

# Dense bf16 (fp16 before Ampere) tensor-core TFLOP/s and memory bandwidth in TB/s, from the data sheets.
GPU_SHEET = {"h200": (989, 4.8), "h100": (989, 3.35), "a100": (312, 2.0), "l40s": (362, 0.86), "l40": (181, 0.86),
             "a10g": (125, 0.6), "a10": (125, 0.6), "l4": (121, 0.3), "rtx4090": (165, 1.0), "rtx3090": (71, 0.94),
             "v100": (125, 0.9), "t4": (65, 0.32)}
GPU_ACHIEVED = 0.4  # share of the data-sheet rates a fine-tuning step reaches; a planning assumption
UNIT = {"": 2**30, "gb": 2**30, "gib": 2**30, "g": 2**30, "mb": 2**20, "mib": 2**20, "m": 2**20}


@dataclass
class Rates:
    """How fast the device does each kind of work (see plan/work.py)."""

    matmul_flops: float      # FLOP/s of matrix products
    fresh_bytes: float       # bytes/s of ops writing a new tensor
    inplace_bytes: float     # bytes/s of in-place updates
    random_numbers: float    # random numbers/s (dropout masks)
    source: str
    fault_bytes: float = 0.0  # bytes/s of fresh outputs mapped anew (0: not separately slow)

    def seconds(self, work, kind: str | None = None) -> float:
        """Time of the work counted by a :class:`~tunesmith.plan.work.WorkCounter`. On this
        machine (``kind`` given) each matrix-product and attention call is timed; elsewhere
        they run at the data-sheet rate."""
        if kind:
            products = sum(calls * kernel_seconds(kind, key) for key, calls in work.kernels.items())
            products += work.other_flops / self.matmul_flops
        else:
            products = work.flops / self.matmul_flops
        faults = work.faulted_bytes / self.fault_bytes if self.fault_bytes else 0.0
        return (products + work.fresh_bytes / self.fresh_bytes + faults
                + work.inplace_bytes / self.inplace_bytes + work.random / self.random_numbers)


@dataclass
class Device:
    """Where training runs: its kind, memory budget in bytes and FLOP rate."""

    name: str
    kind: str             # "cpu" or "cuda"
    memory_bytes: int
    rates: Rates | None  # None when unknown (a GPU not in the table)
    local: bool = True     # this machine's device: matrix products are timed shape by shape
    count: int = 1


def default_budget(kind: str) -> int:
    """The memory a run may use unless told: the GPU's, or what this process can grow to now
    (the free RAM plus what it already holds)."""
    if kind == "cuda":
        import torch

        return torch.cuda.mem_get_info()[1]
    import psutil

    return psutil.virtual_memory().available + psutil.Process().memory_info().rss


def parse_memory(text: str) -> int:
    """'80GB', '24', '512MB' -> bytes (a bare number is GiB)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNIT:
        raise ConfigError(f"cannot read the memory size '{text}'.", "Write it like 80GB, 24 (GiB) or 512MB.")
    return int(float(match.group(1)) * UNIT[match.group(2).lower()])


def resolve_device(spec: str | None, gpus: int, shape: tuple[int, int, int], dtype: str,
                   budget_bytes: int | None = None, with_rates: bool = True) -> Device:
    """The device of ``--device`` (default: a visible GPU, else this CPU); ``with_rates=False``
    skips measuring this machine's rates (no time estimate)."""
    import torch

    spec = (spec or ("cuda" if torch.cuda.is_available() else "cpu")).lower()
    if spec == "cpu":
        memory = budget_bytes or default_budget("cpu")
        return Device(f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)", "cpu",
                      memory, measured_rates("cpu", shape, dtype) if with_rates else None)
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but no GPU is visible here.",
                              "Plan for a named GPU instead, e.g. --device a100:80GB (or h100:80GB, rtx4090:24GB).")
        return Device(torch.cuda.get_device_name(), "cuda", budget_bytes or default_budget("cuda"),
                      measured_rates("cuda", shape, dtype) if with_rates else None, gpus)
    name, _, memory = spec.partition(":")
    if not memory:
        raise ConfigError(f"--device {spec}: give the GPU's memory too.", f"For example --device {name}:80GB.")
    sheet = GPU_SHEET.get(name.replace("-", "").replace(" ", ""))
    rates = None
    if sheet:
        tflops, bandwidth = sheet
        rates = Rates(tflops * 1e12 * GPU_ACHIEVED, bandwidth * 1e12 * GPU_ACHIEVED, bandwidth * 1e12 * GPU_ACHIEVED,
                      bandwidth * 1e12 / 8, f"{name} data sheet ({tflops} TFLOP/s bf16, {bandwidth} TB/s) x "
                      f"{GPU_ACHIEVED} achieved")
    return Device(name, "cuda", budget_bytes or parse_memory(memory), rates, gpus, local=False)


_KERNEL_TIMES: dict[str, float] = {}


def kernel_seconds(kind: str, key: tuple) -> float:
    """Seconds of one call of a matrix-product or attention kernel (a
    :func:`~tunesmith.plan.work.kernel_key`: op, shapes, strides, dtypes) on this machine,
    run on random data once and cached per machine (``plan/kernels.json`` in the cache dir)."""
    import torch

    cache = cache_root() / "plan" / "kernels.json"
    name = f"{platform.node()}|{kind}|{torch.get_num_threads()}|{key!r}"
    if not _KERNEL_TIMES and cache.is_file():
        _KERNEL_TIMES.update(json.loads(cache.read_text()))
    if name not in _KERNEL_TIMES:
        device = "cuda" if kind == "cuda" else "cpu"
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        call = replayable(key, device)
        _KERNEL_TIMES[name] = 1 / _timed(lambda: (call(), sync()), 0.05)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(_KERNEL_TIMES, indent=0))
    return _KERNEL_TIMES[name]


def replayable(key: tuple, device: str):
    """The call of a :func:`~tunesmith.plan.work.kernel_key` on random data of its exact
    layout, as a function that runs it again each time it is called."""
    import torch

    op, args, kwargs = key
    namespace, packet, overload = op.split(".")
    function = getattr(getattr(getattr(torch.ops, namespace), packet), overload)
    real_args = [_random_tensor(a, device) for a in args]
    real_kwargs = {k: _random_tensor(v, device) for k, v in kwargs}
    return lambda: function(*real_args, **real_kwargs)


def _random_tensor(spec, device: str):
    # A kernel_key's ("tensor", shape, stride, dtype) as a tensor of that exact layout: small
    # normal values for floats (scores stay finite), ones for masks and integers.
    import torch

    if not (isinstance(spec, tuple) and spec and spec[0] == "tensor"):
        return spec
    _, shape, stride, dtype = spec
    # Fill the storage, then view it with the traced strides (which may overlap: a broadcast gradient).
    storage = 1 + sum((size - 1) * step for size, step in zip(shape, stride)) if all(shape) else 0
    base = torch.empty(storage, dtype=getattr(torch, dtype), device=device)
    base = base.normal_(0, 0.5) if base.is_floating_point() else base.fill_(1)
    return base.as_strided(shape, stride)


def _timed(work, seconds: float = 0.4) -> float:
    """Calls of ``work`` per second (after one warm-up call)."""
    work()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 3:
        work()
        calls += 1
    return calls / (time.perf_counter() - started)


def measured_rates(kind: str, shape: tuple[int, int, int], dtype: str) -> Rates:
    """This machine's rates (about two seconds of microbenchmarks), from the cache when measured before."""
    import torch

    m, k, n = shape
    key = f"{platform.node()}|{kind}|{torch.get_num_threads()}|{dtype}|{m}x{k}x{n}|v4"
    cache = cache_root() / "plan" / "rates.json"
    rates = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in rates:
        return Rates(**rates[key])
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if kind == "cpu" and dtype == "fp16":
        torch_dtype = torch.bfloat16
    device = "cuda" if kind == "cuda" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a = torch.randn(m, k, device=device, dtype=torch_dtype)
    b = torch.randn(k, n, device=device, dtype=torch_dtype)
    matmul = 2 * m * k * n * _timed(lambda: (a @ b, sync()), 1.0)
    # Activation-sized tensors (one micro-batch's tokens x hidden) for what activations do:
    # ops writing a fresh tensor, and dropout's random masks.
    x, y = torch.randn(m, k, device=device), torch.randn(m, k, device=device)
    fresh = 3 * x.numel() * 4 * _timed(lambda: (torch.mul(x, y), sync()))
    random = x.numel() * _timed(lambda: (torch.nn.functional.dropout(x, 0.1, training=True), sync()))
    # 128 MB operands: the optimizer streams every trained parameter, its gradient and its
    # moments, which no cache holds. On a CPU a 128 MB result leaves glibc's heap: the product
    # above, now with its pages faulted in; what it costs beyond streaming the bytes is the
    # fault rate (a GPU's caching allocator maps nothing anew).
    big, other = torch.randn(32 * 2**20, device=device), torch.randn(32 * 2**20, device=device)
    inplace = 3 * big.numel() * 4 * _timed(lambda: (big.add_(other), sync()))
    fault = 0.0
    if device == "cpu":
        seconds = 1 / _timed(lambda: torch.mul(big, other))
        fault = big.numel() * 4 / max(seconds - 3 * big.numel() * 4 / fresh, seconds / 10)
    measured = Rates(matmul, fresh, inplace, random, "measured (microbenchmarks)", fault)
    rates[key] = asdict(measured)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rates, indent=1))
    return measured
