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

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape ``(B, H, T, Dh)`` by ``positions`` of shape ``(B, T)``."""
        angles = positions.to(torch.float32)[:, None, :, None] * self.inv_freq  # (B, 1, T, Dh/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2) each
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, Dh/2, 2)
        return out.flatten(-2)
