"""The task layer: maps a batch to a loss (open_clip style: models never compute losses).

A :class:`Task` receives the (possibly distributed-wrapped) model and one
micro-batch already on the training device, runs the forward pass (under the
trainer's autocast) and returns a :class:`LossOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from multitower.losses import next_token_loss


@dataclass
class LossOutput:
    """What a task returns for one micro-batch.

    Attributes:
        loss: scalar tensor to minimise (a mean over the micro-batch).
        metrics: extra values to log, averaged over the steps between two log
            steps. Prefer 0-dim tensors to Python floats: the trainer converts them
            only on log steps, so no device sync happens on other steps.
        num_tokens: how many items the mean ``loss`` is taken over (target tokens
            for a language model). The trainer weighs each micro-batch by it, so
            the gradient is that of the mean over the whole global batch (across
            gradient-accumulation steps and ranks); it also feeds tokens/s. A Python
            int is cheapest; a 0-dim tensor (e.g. a count of non-padding targets) avoids
            a device sync but costs one extra pass over the gradients per step.
        throughput_tokens: the tokens this micro-batch processed, for the logged
            ``tokens_per_s``, when they differ from ``num_tokens`` (a loss averaged
            over images or examples); None: ``num_tokens``.
    """

    loss: torch.Tensor
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)
    num_tokens: int | torch.Tensor = 1
    throughput_tokens: int | torch.Tensor | None = None


@runtime_checkable
class Task(Protocol):
    """Maps a batch to a :class:`LossOutput`."""

    def compute_loss(self, model: nn.Module, batch: Any) -> LossOutput: ...


class NextTokenTask:
    """Next-token prediction on a ``(B, T)`` token batch.

    The model sees ``tokens[:, :-1]`` and is scored on ``tokens[:, 1:]``.

    Args:
        pad_id: padding id, given weight 0 in the loss; None when batches are never
            padded (then ``num_tokens`` is a plain int and no mask is built).
    """

    def __init__(self, pad_id: int | None) -> None:
        self.pad_id = pad_id

    def compute_loss(self, model: nn.Module, batch: torch.Tensor) -> LossOutput:
        if batch.dim() != 2 or batch.shape[1] < 2:
            raise ValueError(
                f"NextTokenTask needs tokens of shape (B, T>=2), got {tuple(batch.shape)}"
            )
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T-1) each
        logits = model(inputs)  # (B, T-1, V)
        if self.pad_id is None:
            return LossOutput(loss=next_token_loss(logits, targets), num_tokens=targets.numel())
        weights = (targets != self.pad_id).float()  # (B, T-1)
        loss = next_token_loss(logits, targets, weights)
        return LossOutput(loss=loss, num_tokens=weights.sum())
