"""CTC recogniser from discrete speech units to characters, the fixed judge of TTS output.

Zipper (section on TTS evaluation) scores generated speech by the word error rate
of a separate recogniser's transcript against the input text. Here speech is a
sequence of discrete units, so the recogniser reads units directly::

    units (B, T) --embed--> (B, T, D)
        --> TransformerStack: num_layers bidirectional pre-norm blocks (padding masked, rotary)
        --> norm --> upsample_proj: Linear(D, U*D) --> reshape (B, T*U, D) --> GELU
        --> head: Linear(D, C) --> log_softmax --> log_probs (B, T*U, C)

Each input position emits ``U = upsample`` frames so the output can be longer than
a de-duplicated unit sequence: CTC needs at least one frame per character plus
one blank between repeated characters. Class 0 is the CTC blank.

Attention is bidirectional but masks padded keys, and every later layer is
per-position, so padding a sequence leaves its real outputs unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from multitower.models.decoder import check_token_range
from multitower.models.unit_recognizer_config import UnitRecognizerConfig
from multitower.nn import TransformerStack, make_norm
from multitower.nn.init import init_transformer_


class UnitRecognizer(nn.Module):
    """Speech units ``(B, T)`` -> CTC log-probabilities ``(B, T * upsample, num_chars)``."""

    def __init__(self, config: UnitRecognizerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.unit_vocab_size, config.d_model)
        self.blocks = TransformerStack(
            config.num_layers,
            config.d_model,
            config.num_heads,
            config.mlp_hidden,
            norm=config.norm,
            rope_base=config.rope_base,
        )
        self.norm = make_norm(config.norm, config.d_model)
        self.upsample_proj = nn.Linear(config.d_model, config.upsample * config.d_model)
        self.head = nn.Linear(config.d_model, config.num_chars)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise every parameter.

        * unit embedding, q/k/v projections and ``mlp.fc_in``: normal(0, 0.02);
        * ``attn.out_proj`` and ``mlp.fc_out``: normal(0, 0.02 / sqrt(2 * num_layers)),
          so the residual stream's variance does not grow with depth (GPT-2);
        * ``upsample_proj`` and ``head`` weights: normal(0, 1 / sqrt(d_model)) (fan-in),
          so the output path keeps unit scale: with two stacked small linear maps after
          the final norm, CTC training sits for long on its all-blank plateau;
        * biases: zero; norm scales: one.
        """
        nn.init.normal_(self.embed.weight, std=0.02)
        init_transformer_(self, self.config.num_layers)
        fan_in_std = 1.0 / math.sqrt(self.config.d_model)
        nn.init.normal_(self.upsample_proj.weight, std=fan_in_std)
        nn.init.normal_(self.head.weight, std=fan_in_std)

    def forward(
        self, units: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame character log-probabilities.

        Args:
            units: ``(B, T)`` speech-tower ids, padded after each row's length (the pad
                value is irrelevant: padded positions are masked).
            lengths: ``(B,)`` number of real units in each row, in ``[0, T]``.

        Returns:
            ``log_probs`` ``(B, T * upsample, num_chars)`` (float32) and ``out_lengths``
            ``(B,)`` = ``lengths * upsample``; frames past a row's length are padding.

        Raises:
            ValueError: wrong shapes or dtypes, ids outside ``[0, unit_vocab_size)``,
                ``T > max_len``, or a length outside ``[0, T]``.
        """
        cfg = self.config
        if units.dim() != 2:
            raise ValueError(f"units must be (B, T), got shape {tuple(units.shape)}")
        if units.shape[1] > cfg.max_len:
            raise ValueError(
                f"units have {units.shape[1]} positions, more than max_len={cfg.max_len}"
            )
        B, T = units.shape
        if lengths.shape != (B,) or lengths.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"lengths must be an integer tensor of shape ({B},), "
                f"got {lengths.dtype} of shape {tuple(lengths.shape)}"
            )
        check_token_range(units, cfg.unit_vocab_size, "UnitRecognizer")
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"lengths must lie in [0, {T}], got {lengths.tolist()}")
        key_padding_mask = (
            torch.arange(T, device=units.device)[None, :] < lengths[:, None]
        )  # (B, T)
        x = self.embed(units)  # (B, T, D)
        x = self.blocks(x, causal=False, key_padding_mask=key_padding_mask)  # (B, T, D)
        x = self.upsample_proj(self.norm(x))  # (B, T, U*D)
        x = F.gelu(x.view(B, T * cfg.upsample, cfg.d_model), approximate="tanh")  # (B, T*U, D)
        log_probs = F.log_softmax(self.head(x).float(), dim=-1)  # (B, T*U, C)
        return log_probs, lengths * cfg.upsample
