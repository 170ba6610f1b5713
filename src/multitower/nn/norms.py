"""Normalisation layers: RMSNorm and LayerNorm behind one factory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multitower.nn.checks import NORM_KINDS


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable per-channel scale (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(kind: str, dim: int) -> nn.Module:
    """Build a norm layer.

    Args:
        kind: ``"rms"`` for :class:`RMSNorm` or ``"layer"`` for ``nn.LayerNorm``.
        dim: number of channels.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind == "rms":
        return RMSNorm(dim)
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise ValueError(f"norm must be one of {NORM_KINDS}, got {kind!r}")
