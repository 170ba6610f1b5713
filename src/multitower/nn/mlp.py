"""Position-wise feed-forward network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Two-layer GELU feed-forward network ``fc_out(gelu(fc_in(x)))``."""

    def __init__(self, d_model: int, hidden_dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, hidden_dim, bias=bias)
        self.fc_out = nn.Linear(hidden_dim, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))
