"""Rotary position embeddings (RoPE, arXiv 2104.09864), computed from explicit positions.

Positions are passed per token, ``(B, T)``, so that a batch whose examples sit at
different offsets of a preallocated KV cache still rotates every token by its own
position.
"""

from __future__ import annotations

import torch
from torch import nn


class Rotary(nn.Module):
    """Produces cos/sin tables for given positions and applies the rotation."""

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"rotary head_dim must be even, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> RotaryTables:
        """cos/sin of ``positions`` ``(B, T)``, each ``(B, 1, T, Dh/2)`` in ``dtype``.

        A stack computes them once per forward and every layer applies them
        (:func:`apply_rotary`): the layers share ``head_dim`` and base.
        """
        angles = positions.to(torch.float32)[:, None, :, None] * self.inv_freq  # (B, 1, T, Dh/2)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape ``(B, H, T, Dh)`` by ``positions`` of shape ``(B, T)``."""
        return apply_rotary(x, self.tables(positions, x.dtype))


RotaryTables = tuple[torch.Tensor, torch.Tensor]


def apply_rotary(x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, T, Dh)`` by precomputed ``(cos, sin)`` (see :meth:`Rotary.tables`)."""
    cos, sin = tables
    if cos.dtype != x.dtype:  # tables in the residual dtype, x in autocast's
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2) each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, Dh/2, 2)
    return out.flatten(-2)
