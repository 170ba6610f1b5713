"""Right-padding of variable-length rows into one ``(B, T)`` tensor.

The one padding helper: collate functions (pre-training, CTC, MaMMUT, interleaved
batches), evaluation and the decoders' preallocated token buffers all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_right(
    rows: Sequence[Sequence[int] | Sequence[float] | Sequence[bool] | torch.Tensor],
    pad_value: float = 0,
    *,
    dtype: torch.dtype = torch.long,
    max_len: int | None = None,
    min_len: int = 0,
) -> torch.Tensor:
    """Rows left-aligned in a ``(B, T)`` tensor of ``dtype``, the rest ``pad_value``.

    Args:
        rows: ``B`` sequences (lists or 1-D tensors) of different lengths.
        pad_value: the value after each row's end.
        dtype: the tensor's dtype (rows are converted to it).
        max_len: at most this many columns; longer rows are cut (None: no limit).
        min_len: at least this many columns (e.g. a buffer the decoder fills later).

    Returns:
        ``(B, T)`` with ``T = max(min_len, min(longest row, max_len))``.

    Raises:
        ValueError: ``min_len`` above ``max_len``, or a negative one.
    """
    if min_len < 0 or (max_len is not None and not 0 <= min_len <= max_len):
        raise ValueError(f"need 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    width = max((len(row) for row in rows), default=0)
    if max_len is not None:
        width = min(width, max_len)
    width = max(width, min_len)
    out = torch.full((len(rows), width), pad_value, dtype=dtype)
    for i, row in enumerate(rows):
        row = row[:width]
        out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
    return out
