"""Greedy (best-path) CTC decoding: argmax per frame, collapse repeats, drop blanks.

Graves et al. 2006, "Connectionist Temporal Classification", section 3.2 (best
path decoding). ``a a _ a b b _`` decodes to ``a a b``: repeats merge only when
no blank separates them.
"""

from __future__ import annotations

import torch

from multitower.data.charset import BLANK_ID


def collapse_ctc_path(path: list[int], blank_id: int = BLANK_ID) -> list[int]:
    """Merge runs of equal ids, then remove blanks: ``[1, 1, 0, 1, 2, 2] -> [1, 1, 2]``."""
    out: list[int] = []
    prev: int | None = None
    for token in path:
        if token != prev and token != blank_id:
            out.append(token)
        prev = token
    return out


def check_ctc_batch(log_probs: torch.Tensor, out_lengths: torch.Tensor) -> list[int]:
    """The valid frames of each row of a ``(B, T, C)`` batch, checked.

    Raises:
        ValueError: shapes disagree or a length lies outside ``[0, T]``.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T, C), got shape {tuple(log_probs.shape)}")
    B, T, _ = log_probs.shape
    if out_lengths.shape != (B,):
        raise ValueError(f"out_lengths must have shape ({B},), got {tuple(out_lengths.shape)}")
    lengths = out_lengths.tolist()
    if any(not 0 <= n <= T for n in lengths):
        raise ValueError(f"out_lengths must lie in [0, {T}], got {lengths}")
    return lengths


def greedy_decode(
    log_probs: torch.Tensor, out_lengths: torch.Tensor, *, blank_id: int = BLANK_ID
) -> list[list[int]]:
    """Best-path decoding of a batch.

    Args:
        log_probs: ``(B, T, C)`` per-frame scores (log-probabilities or logits: only
            the argmax is used).
        out_lengths: ``(B,)`` number of valid frames of each row (``<= T``).
        blank_id: the blank class.

    Returns:
        For each row, the class ids of its collapsed best path (no blanks).

    Raises:
        ValueError: shapes disagree or a length lies outside ``[0, T]``.
    """
    lengths = check_ctc_batch(log_probs, out_lengths)
    best = log_probs.argmax(dim=-1).cpu().tolist()  # (B, T)
    return [collapse_ctc_path(row[:n], blank_id) for row, n in zip(best, lengths)]
