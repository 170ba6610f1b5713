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


def check_slots(positions: torch.Tensor, max_len: int, name: str) -> int:
    """Raise unless every cache slot in ``positions`` lies in ``[0, max_len)``; return the largest.

    One host sync (min and max read together), so a model calls it once per forward
    on its input positions, never per layer or per cache write. While
    ``torch.compile`` traces, nothing is read back and ``max_len - 1`` is returned
    (the whole cache is attended: static shapes).

    Returns:
        The largest position, or -1 for an empty ``positions``.
    """
    if positions.dim() != 2:
        raise ValueError(f"{name}: positions must have shape (B, T), got {tuple(positions.shape)}")
    if torch.compiler.is_compiling():
        return max_len - 1
    if positions.numel() == 0:
        return -1
    lo, hi = torch.stack([positions.min(), positions.max()]).tolist()
    if lo < 0 or hi >= max_len:
        raise ValueError(
            f"{name}: positions must lie in [0, {max_len}) (the cache's max_len), "
            f"got range [{lo}, {hi}]"
        )
    return int(hi)


def _moved(index: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows to rewrite and their sources (advanced indexing copies the sources first)."""
    if rows is None:
        return torch.arange(index.shape[0], device=index.device), index
    return rows, index[rows]


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
        # Host-side count of slots in use (one past the largest position written, as
        # told by the owner's per-forward check_slots): attention reads only these.
        self.filled = 0

    @property
    def batch(self) -> int:
        return self.k.shape[0]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.filled = 0

    def reorder(self, index: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Row ``i`` becomes old row ``index[i]`` ``(B,)`` (beam search), in the filled
        slots only: the rest are rewritten before anything attends to them.

        ``rows``: the rows whose source is another row (default: all); the others
        keep their contents without a copy.
        """
        n = self.filled
        if n:
            rows, src = _moved(index, rows)
            self.k[rows, :, :n] = self.k[src, :, :n]
            self.v[rows, :, :n] = self.v[src, :, :n]

    def mark_filled(self, max_position: int) -> int:
        """Record that slots up to ``max_position`` are about to be written; return
        :attr:`filled` (slots in use).

        While ``torch.compile`` traces, the whole cache is attended (static shapes) and
        :attr:`filled` is set to ``max_len`` without being read: reading a module's int
        would make the compiled step recompile whenever it changed.
        """
        if torch.compiler.is_compiling():
            self.filled = self.max_len
            return self.max_len
        self.filled = min(self.max_len, max(self.filled, max_position + 1))
        return self.filled

    def update(
        self, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` of shape ``(B, H, T, Dh)`` at slots ``positions`` ``(B, T)``.

        The slots are not range-checked here (that would be a host sync per layer):
        the model checks its input positions once per forward with :func:`check_slots`.

        Returns:
            The whole cache ``(k, v)``, each ``(B, H, S, Dh)``.
        """
        if positions.dim() != 2 or positions.shape[0] != self.batch:
            raise ValueError(
                f"KVCache.update: positions must have shape (batch={self.batch}, T), "
                f"got {tuple(positions.shape)}"
            )
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

    def reorder(self, index: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        super().reorder(index, rows)
        n = self.filled
        if n:
            rows, src = _moved(index, rows)
            self.global_positions[rows, :n] = self.global_positions[src, :n]
            self.valid[rows, :n] = self.valid[src, :n]

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
