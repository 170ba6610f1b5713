"""The weight initialisation shared by every transformer in the project."""

from __future__ import annotations

import math

from torch import nn

from multitower.nn.norms import RMSNorm


def init_transformer_(module: nn.Module, num_layers: int, *, std: float = 0.02) -> None:
    """Initialise the linear maps and norms inside ``module`` in place.

    * ``nn.Linear`` / ``nn.Conv2d`` weights: normal(0, ``std``), except those named
      ``out_proj`` or ``fc_out`` (they write into the residual stream):
      normal(0, ``std / sqrt(2 * num_layers)``), so the stream's variance does not
      grow with depth (GPT-2);
    * biases: zero; norm scales: one (LayerNorm shifts: zero).

    Embeddings and model-specific heads are left to the caller.
    """
    residual_std = std / math.sqrt(2 * num_layers)
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            is_residual = name.endswith("out_proj") or name.endswith("fc_out")
            nn.init.normal_(sub.weight, std=residual_std if is_residual else std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
        elif isinstance(sub, RMSNorm):
            nn.init.ones_(sub.weight)
