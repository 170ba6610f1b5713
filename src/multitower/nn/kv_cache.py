"""Preallocated key/value caches for incremental decoding.

``KVCache`` holds a tower's own keys and values, written at explicit per-example
slots, so examples of one batch may sit at different lengths.
``CrossKVCache`` additionally remembers, per slot, the global position of the
source token in its example's interleaved order and whether the slot holds a real
token; cross-attention masks are computed from those at query time, so the cache
can keep growing while the source tower generates.
"""

from __future__ import annotations

import torch
from torch import nn


def _check_slots(positions: torch.Tensor, max_len: int, batch: int, name: str) -> None:
    if positions.dim() != 2 or positions.shape[0] != batch:
        raise ValueError(
            f"{name}: positions must have shape (batch={batch}, T), got {tuple(positions.shape)}"
        )
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= max_len):
        raise ValueError(
            f"{name}: positions must lie in [0, {max_len}) (the cache's max_len), "
            f"got range [{int(positions.min())}, {int(positions.max())}]"
        )


class KVCache(nn.Module):
    """Keys and values of one self-attention layer, shape ``(B, H, S, Dh)``."""

    k: torch.Tensor
    v: torch.Tensor

    def __init__(
        self,
        batch: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch, num_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def batch(self) -> int:
        return self.k.shape[0]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()

    def update(
        self, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` of shape ``(B, H, T, Dh)`` at slots ``positions`` ``(B, T)``.

        Returns:
            The whole cache ``(k, v)``, each ``(B, H, S, Dh)``.
        """
        _check_slots(positions, self.max_len, self.batch, "KVCache.update")
        rows = torch.arange(self.batch, device=positions.device)[:, None]  # (B, 1)
        # Advanced indices on dims 0 and 2 put (B, T) first: the target is (B, T, H, Dh).
        self.k[rows, :, positions] = k.transpose(1, 2).to(self.k.dtype)
        self.v[rows, :, positions] = v.transpose(1, 2).to(self.v.dtype)
        return self.k, self.v


class CrossKVCache(KVCache):
    """Cross-attention keys/values of a source tower plus each slot's global position.

    ``valid`` is False for slots never written or written by padding tokens.
    """

    global_positions: torch.Tensor
    valid: torch.Tensor

    def __init__(
        self,
        batch: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch, num_heads, max_len, head_dim, dtype=dtype, device=device)
        gpos = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.register_buffer("global_positions", gpos, persistent=False)
        valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.register_buffer("valid", valid, persistent=False)

    def reset(self) -> None:
        super().reset()
        self.global_positions.zero_()
        self.valid.zero_()

    def update_source(
        self,
        positions: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        global_positions: torch.Tensor,
        valid: torch.Tensor,
    ) -> None:
        """Write source keys/values and their global positions/validity at ``positions``."""
        self.update(positions, k, v)
        rows = torch.arange(self.batch, device=positions.device)[:, None]  # (B, 1)
        self.global_positions[rows, positions] = global_positions
        self.valid[rows, positions] = valid
