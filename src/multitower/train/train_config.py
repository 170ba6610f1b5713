"""The run configuration of :class:`~multitower.train.trainer.Trainer`.

Imports no torch, so a whole experiment config can be checked without it;
:mod:`multitower.train.trainer` re-exports :class:`TrainConfig`.
"""

from __future__ import annotations

import dataclasses

from multitower.train.progress import PROGRESS_MODES

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
DISTRIBUTED_MODES = ("none", "ddp", "fsdp")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, precision, logging and checkpointing of one run.

    ``batch_size`` is global (all ranks and accumulation steps together);
    ``ckpt_every=0`` saves only the final checkpoint; ``clip_norm=0`` disables
    clipping; ``eval_every=0`` evaluates only at the end. The learning rate warms up
    over ``warmup_steps``, then follows a cosine to ``min_lr_ratio`` times its peak
    over the last ``decay_fraction`` of the steps, held at the peak before
    (``decay_fraction=1``: the cosine over every step after warmup; e.g. 0.2:
    warmup-stable-decay). ``group_by_length=k`` sorts every run of ``k`` batches of
    the data order by record length before cutting it into batches (less padding;
    the dataset must have a ``lengths()`` method; 0: random batches).
    ``compile=True`` runs the
    model's forward through ``torch.compile`` (the inductor: the first steps compile,
    and every new batch shape compiles anew).
    """

    max_steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-4
    fusion_lr: float | None = None
    gate_lr: float | None = None
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    decay_fraction: float = 1.0
    clip_norm: float = 1.0
    precision: str = "auto"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int = 3
    eval_every: int = 0
    group_by_length: int = 0
    strict_data: bool = False
    progress: str = "auto"
    distributed: str = "none"
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in (
            "warmup_steps",
            "ckpt_every",
            "keep_last",
            "eval_every",
            "group_by_length",
            "num_workers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}"
            )
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must not exceed max_steps={self.max_steps}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.fusion_lr is not None and not self.fusion_lr > 0:
            raise ValueError(f"fusion_lr must be positive or null, got {self.fusion_lr}")
        if self.gate_lr is not None and not self.gate_lr > 0:
            raise ValueError(f"gate_lr must be positive or null, got {self.gate_lr}")
        if self.weight_decay < 0 or self.clip_norm < 0:
            raise ValueError("weight_decay and clip_norm must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must lie in (0, 1], got {self.decay_fraction}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name, allowed in (
            ("precision", PRECISIONS),
            ("progress", PROGRESS_MODES),
            ("distributed", DISTRIBUTED_MODES),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
