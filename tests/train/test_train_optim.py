"""Parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from multitower.train.optim import WarmupCosine, build_optimizer, lr_factor, param_groups
from multitower.train.train_config import TrainConfig


class _Fused(nn.Module):
    """Like Zipper: tower weights, a norm, biases, fusion modules with a gate, a frozen part."""

    def __init__(self) -> None:
        super().__init__()
        self.tower = nn.Linear(4, 4)  # tower.weight (decay), tower.bias (no decay)
        self.norm = nn.LayerNorm(4)  # norm.weight / norm.bias (no decay)
        self.scale = nn.Parameter(torch.ones(4))  # ndim 1 (no decay)
        self.fusion = nn.Module()
        self.fusion.proj = nn.Linear(4, 4, bias=False)  # fusion.proj.weight (decay, fusion lr)
        self.fusion.gate_attn = nn.Parameter(torch.zeros(()))  # gate (no decay, fusion lr)
        self.fusion.norm_q = nn.RMSNorm(4)  # norm in the fusion (no decay, fusion lr)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def fusion_parameters(self) -> list[nn.Parameter]:
        return list(self.fusion.parameters())

    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.fusion.gate_attn]


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups_decay_fusion_lr_and_frozen() -> None:
    model = _Fused()
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, fusion_lr=1e-2, weight_decay=0.1)}
    assert _names(model, groups["decay"]) == {"tower.weight"}
    assert _names(model, groups["no_decay"]) == {"tower.bias", "norm.weight", "norm.bias", "scale"}
    assert _names(model, groups["fusion_decay"]) == {"fusion.proj.weight"}
    assert _names(model, groups["fusion_no_decay"]) == {"fusion.gate_attn", "fusion.norm_q.weight"}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["fusion_decay"]["weight_decay"] == 0.1
    assert (
        groups["no_decay"]["weight_decay"] == 0.0
        and groups["fusion_no_decay"]["weight_decay"] == 0.0
    )
    assert groups["decay"]["lr"] == 1e-3 and groups["fusion_decay"]["lr"] == 1e-2
    every = set().union(*(_names(model, g) for g in groups.values()))
    assert not any(name.startswith("frozen") for name in every)


def test_without_fusion_lr_fusion_params_join_tower_groups() -> None:
    model = _Fused()
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, fusion_lr=None, weight_decay=0.1)}
    assert set(groups) == {"decay", "no_decay"}
    assert "fusion.proj.weight" in _names(model, groups["decay"])
    assert "fusion.gate_attn" in _names(model, groups["no_decay"])


def test_gate_lr_gives_the_fusion_gates_their_own_group() -> None:
    model = _Fused()
    groups = {
        g["name"]: g
        for g in param_groups(model, lr=1e-3, fusion_lr=1e-2, weight_decay=0.1, gate_lr=0.05)
    }
    assert _names(model, groups["gates"]) == {"fusion.gate_attn"}
    assert groups["gates"]["lr"] == 0.05 and groups["gates"]["weight_decay"] == 0.0
    assert _names(model, groups["fusion_no_decay"]) == {"fusion.norm_q.weight"}
    # every trainable parameter is in exactly one group
    names = [n for g in groups.values() for n in _names(model, g)]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    # with Adam a gate at 0 moves about gate_lr in one step, the other fusion params fusion_lr
    opt = build_optimizer(model, lr=1e-3, fusion_lr=1e-2, gate_lr=0.05)
    for p in model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    opt.step()
    assert float(model.fusion.gate_attn.detach()) == pytest.approx(-0.05, rel=1e-3)
    assert float(model.fusion.norm_q.weight[0].detach()) == pytest.approx(1 - 1e-2, rel=1e-3)


def test_all_frozen_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(model, lr=1e-3, fusion_lr=None, weight_decay=0.0)


def test_weight_decay_only_moves_decayed_params_when_gradients_are_zero() -> None:
    model = _Fused()
    opt = build_optimizer(model, lr=0.1, fusion_lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p)
        assert moved == (name in {"tower.weight", "fusion.proj.weight"}), name


def test_schedule_values() -> None:
    kw = dict(warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    assert [lr_factor(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, **kw) == pytest.approx(1.0)
    assert lr_factor(9, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(14, **kw) == pytest.approx(0.1)
    assert lr_factor(100, **kw) == pytest.approx(0.1)
    assert lr_factor(0, warmup_steps=0, max_steps=10, min_lr_ratio=0.0) == pytest.approx(1.0)


def test_warmup_stable_decay_holds_the_peak_then_runs_the_cosine_over_the_last_steps():
    kw = {"warmup_steps": 4, "max_steps": 24, "min_lr_ratio": 0.1, "decay_fraction": 0.25}
    # 20 steps after warmup: held at the peak for 15, the cosine over the last 5
    assert [lr_factor(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert all(lr_factor(s, **kw) == pytest.approx(1.0) for s in range(4, 20))
    assert lr_factor(21, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.4)))
    assert lr_factor(24, **kw) == pytest.approx(0.1)
    # the whole span: the plain cosine
    plain = {k: v for k, v in kw.items() if k != "decay_fraction"}
    for s in range(30):
        assert lr_factor(s, **plain, decay_fraction=1.0) == lr_factor(s, **plain)
    with pytest.raises(ValueError, match="decay_fraction"):
        TrainConfig(decay_fraction=0.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_fraction"):
        WarmupCosine(opt, warmup_steps=0, max_steps=10, min_lr_ratio=0.0, decay_fraction=1.5)


def test_warmup_cosine_sets_group_lrs_and_restores_from_state() -> None:
    model = _Fused()
    opt = build_optimizer(model, lr=1e-3, fusion_lr=1e-2, weight_decay=0.0)
    sched = WarmupCosine(opt, warmup_steps=2, max_steps=10, min_lr_ratio=0.0)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["decay"] == pytest.approx(5e-4) and lrs["fusion_decay"] == pytest.approx(5e-3)
    for _ in range(5):
        sched.step()
    state = sched.state_dict()
    assert state == {"step": 5}
    other = WarmupCosine(
        build_optimizer(model, lr=1e-3, fusion_lr=1e-2),
        warmup_steps=2,
        max_steps=10,
        min_lr_ratio=0.0,
    )
    other.load_state_dict(state)
    assert [g["lr"] for g in other.optimizer.param_groups] == [g["lr"] for g in opt.param_groups]
    assert opt.param_groups[0]["lr"] == pytest.approx(
        1e-3 * lr_factor(5, warmup_steps=2, max_steps=10, min_lr_ratio=0.0)
    )


def test_build_optimizer_fuses_on_cpu_with_the_loops_updates() -> None:
    from multitower.models.decoder import DecoderConfig, DecoderTower
    from multitower.train.optim import build_optimizer, can_fuse, param_groups

    torch.manual_seed(0)
    model = DecoderTower(DecoderConfig(vocab_size=30, d_model=16, num_layers=2, num_heads=2))
    reference = DecoderTower(model.config)
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] is True
    groups = param_groups(reference, lr=1e-2, fusion_lr=None, weight_decay=0.1)
    loop = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    ids = torch.randint(0, 30, (4, 9))
    for _ in range(3):
        for m, opt in ((model, fused), (reference, loop)):
            opt.zero_grad()
            m(ids).logsumexp(-1).mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not can_fuse([])
    assert not can_fuse(
        [
            torch.nn.Parameter(torch.zeros(2)),
            torch.nn.Parameter(torch.zeros(2, dtype=torch.float64, device="meta")),
        ]
    )
