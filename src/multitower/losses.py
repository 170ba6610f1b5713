"""Loss functions. Models return logits/features; these turn them into losses."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from multitower.interleave import TowerBatch


def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean cross-entropy of ``logits`` ``(B, T, V)`` against ``targets`` ``(B, T)``.

    Logits and targets must already be aligned (logits at t predict targets at t).
    ``weights`` ``(B, T)`` (0 = ignore); None weighs every position 1.
    """
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    if weights is None:
        return ce.mean()
    w = weights.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def interleaved_next_token_loss(
    logits: Mapping[str, torch.Tensor], batch: Mapping[str, TowerBatch]
) -> torch.Tensor:
    """Next-token loss summed over towers, normalised by the total target weight.

    Each tower predicts its own next token: logits at tower position t score the
    tower's token t+1 with that token's ``loss_weights``.
    """
    total = torch.zeros((), device=next(iter(logits.values())).device)
    norm = torch.zeros((), device=total.device)
    for tower, tower_logits in logits.items():
        tb = batch[tower]
        if tb.tokens.shape[1] < 2:
            continue
        w = tb.loss_weights[:, 1:].to(torch.float32)  # (B, T-1)
        ce = F.cross_entropy(
            tower_logits[:, :-1].flatten(0, 1).float(), tb.tokens[:, 1:].flatten(), reduction="none"
        )  # (B*(T-1),)
        total = total + (ce * w.flatten()).sum()
        norm = norm + w.sum()
    return total / norm.clamp_min(1e-8)
