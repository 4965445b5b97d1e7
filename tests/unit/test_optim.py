"""AdamW parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tunesmith.train.optim import build_optimizer, build_scheduler


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.proj = nn.Linear(8, 8)
        self.LayerNorm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_no_weight_decay_on_biases_and_norms():
    model = Tiny()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    by_decay = {g["weight_decay"]: _ids(g["params"]) for g in opt.param_groups}
    assert by_decay[0.1] == _ids([model.embed.weight, model.proj.weight, model.head.weight])
    assert by_decay[0.0] == _ids([model.proj.bias, model.LayerNorm.weight, model.LayerNorm.bias, model.head.bias])
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    assert isinstance(opt, torch.optim.AdamW)


def test_matrix_shaped_norm_parameter_gets_no_decay():
    model = Tiny()
    model.norm_scale = nn.Parameter(torch.ones(2, 8))  # 2-D, but named as a norm
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    no_decay = next(g for g in opt.param_groups if g["weight_decay"] == 0.0)
    assert id(model.norm_scale) in _ids(no_decay["params"])


def test_only_trainable_parameters_are_optimized():
    model = Tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    model.head.requires_grad_(True)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert set().union(*(_ids(g["params"]) for g in opt.param_groups)) == _ids(model.head.parameters())
    # only non-empty groups are created
    model.head.bias.requires_grad_(False)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1


def test_no_trainable_parameters_is_an_error():
    model = Tiny()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, lr=1e-3, weight_decay=0.0)


def _lrs(kind: str, warmup: int, total: int, peak: float = 1e-3) -> list[float]:
    opt = build_optimizer(nn.Linear(2, 2), lr=peak, weight_decay=0.0)
    sched = build_scheduler(opt, kind, warmup, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs  # lrs[s] is the rate used for step s


def test_cosine_warms_up_to_peak_then_decays_to_zero():
    lrs = _lrs("cosine", warmup=10, total=100)
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.5e-3)  # linear warmup
    assert lrs[10] == pytest.approx(1e-3)  # peak at the end of warmup
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(0.5e-3)  # half way through the decay
    assert lrs[30] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 20 / 90)))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_linear_decay():
    lrs = _lrs("linear", warmup=4, total=24)
    assert lrs[2] == pytest.approx(0.5e-3)
    assert lrs[4] == pytest.approx(1e-3)
    assert lrs[14] == pytest.approx(0.5e-3)
    assert lrs[24] == pytest.approx(0.0, abs=1e-12)


def test_constant_after_warmup():
    lrs = _lrs("constant", warmup=4, total=20)
    assert lrs[2] == pytest.approx(0.5e-3)
    assert lrs[4:] == pytest.approx([1e-3] * 17)


def test_no_warmup_starts_at_peak():
    assert _lrs("cosine", warmup=0, total=10)[0] == pytest.approx(1e-3)
