"""Decoder-only language-model tower over one vocabulary (Zipper section 2, "towers").

A tower is embedding -> pre-norm transformer blocks -> final norm -> logits through
the transposed embedding (tied head). Zipper drives the same modules block by
block (``embed``, ``blocks``, ``head``) so that a tower loaded from its own
checkpoint keeps its parameter names inside the fused model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multitower.models.decoder_config import DecoderConfig
from multitower.nn import TransformerStack, make_norm
from multitower.nn.attention import SelfAttentionInputs
from multitower.nn.init import init_transformer_
from multitower.nn.kv_cache import check_slots


def check_token_range(tokens: torch.Tensor, vocab_size: int, name: str) -> None:
    """Raise a ValueError when any id of ``tokens`` lies outside ``[0, vocab_size)``."""
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: token ids must be an integer tensor, got {tokens.dtype}")
    if tokens.numel() == 0:
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: token id {bad} is outside the vocabulary [0, {vocab_size})")


class DecoderTower(nn.Module):
    """Decoder-only LM: ``tokens (B, T) -> logits (B, T, V)``."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = TransformerStack(
            config.num_layers,
            config.d_model,
            config.num_heads,
            config.mlp_hidden,
            norm=config.norm,
            rope_base=config.rope_base,
        )
        self.norm = make_norm(config.norm, config.d_model)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise every parameter.

        * embedding (also the tied output head): normal(0, 0.02);
        * q/k/v projections and ``mlp.fc_in``: normal(0, 0.02);
        * ``attn.out_proj`` and ``mlp.fc_out``: normal(0, 0.02 / sqrt(2 * num_layers)),
          so the residual stream's variance does not grow with depth (GPT-2);
        * biases: zero; norm scales: one.
        """
        nn.init.normal_(self.embed.weight, std=0.02)
        init_transformer_(self, self.config.num_layers)

    # -- pieces driven one by one by Zipper ------------------------------------------------
    def embed_tokens(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, T)`` ids -> ``(B, T, D)`` embeddings, with a vocabulary range check.

        ``positions`` is unused: this tower's positions are rotary, applied in
        attention (a tower with learned positions adds them here).

        With caches set up (decoding) the check is skipped: it would cost a device
        sync per step, and decode tokens come from validated prompts or the sampler.
        """
        if not self.caches_enabled:
            check_token_range(tokens, self.config.vocab_size, "DecoderTower")
        return self.embed(tokens)

    def check_positions(self, positions: torch.Tensor) -> int:
        """Raise unless ``positions`` ``(B, T)`` fit the KV caches; return the largest.

        One host sync: Zipper calls it once per forward, not once per layer.
        """
        return check_slots(positions, self.blocks.cache_len, "DecoderTower")

    def prepare_blocks(
        self, h: torch.Tensor, positions: torch.Tensor | None, *, max_position: int | None = None
    ) -> SelfAttentionInputs:
        """Rotary tables and cache mask for ``h`` ``(B, T, D)``, shared by every block of
        one forward (``positions`` default ``arange(T)``; ``max_position`` from
        :meth:`check_positions`: attend only the filled part of the caches)."""
        if positions is None:
            B, T, _ = h.shape
            positions = torch.arange(T, device=h.device).expand(B, T)
        return self.blocks.prepare(positions, h.dtype, max_position=max_position)

    def run_block(
        self,
        index: int,
        h: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        inputs: SelfAttentionInputs | None = None,
    ) -> torch.Tensor:
        """Run block ``index`` on ``h`` ``(B, T, D)`` (``positions``: see
        :class:`~multitower.nn.attention.SelfAttention`; ``inputs`` from
        :meth:`prepare_blocks` replaces them)."""
        return self.blocks[index](h, positions=positions, inputs=inputs)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm and tied output projection: ``(B, T, D) -> (B, T, V)``."""
        return F.linear(self.norm(h), self.embed.weight)

    # -- caches ------------------------------------------------------------------------------
    def setup_caches(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        """Preallocate a KV cache of ``max_len`` slots per layer for ``batch`` sequences."""
        dtype = dtype or self.embed.weight.dtype
        device = device or self.embed.weight.device
        self.blocks.setup_caches(batch, max_len, dtype=dtype, device=device)

    def reset_caches(self) -> None:
        """Zero every KV cache (keeps the allocation)."""
        self.blocks.reset_caches()

    def remove_caches(self) -> None:
        """Drop the KV caches: forward runs on whole sequences again."""
        self.blocks.remove_caches()

    @property
    def caches_enabled(self) -> bool:
        return self.blocks.caches_enabled

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits.

        Args:
            tokens: ``(B, T)`` ids in ``[0, vocab_size)``.
            positions: ``(B, T)`` positions (cache slots when caches are set up).
            causal: False for bidirectional attention (no cache).
            key_padding_mask: ``(B, T)`` True for real tokens, for bidirectional use.

        Returns:
            ``(B, T, vocab_size)`` logits.

        Raises:
            ValueError: a token id outside the vocabulary, or a sequence longer than
                ``max_seq_len``.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T), got {tuple(tokens.shape)}")
        if positions is None and tokens.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds max_seq_len={self.config.max_seq_len}"
            )
        h = self.embed_tokens(tokens)  # (B, T, D)
        h = self.blocks(h, positions=positions, causal=causal, key_padding_mask=key_padding_mask)
        return self.head(h)
