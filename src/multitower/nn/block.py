"""Pre-norm transformer block: self-attention then feed-forward, each residual."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from multitower.nn.attention import SelfAttention
from multitower.nn.mlp import MLP
from multitower.nn.norms import make_norm


class TransformerBlock(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        norm: str = "rms",
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        self.norm_attn = make_norm(norm, d_model)
        self.attn = SelfAttention(d_model, num_heads, rope_base=rope_base)
        self.norm_mlp = make_norm(norm, d_model)
        self.mlp = MLP(d_model, mlp_hidden)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(
            self.norm_attn(x), positions=positions, causal=causal, key_padding_mask=key_padding_mask
        )
        return x + self.mlp(self.norm_mlp(x))


def setup_block_caches(
    blocks: Iterable[TransformerBlock],
    batch: int,
    max_len: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """Preallocate a KV cache of ``max_len`` slots in every block's self-attention."""
    for block in blocks:
        block.attn.setup_cache(batch, max_len, dtype=dtype, device=device)


def reset_block_caches(blocks: Iterable[TransformerBlock]) -> None:
    """Zero every block's KV cache (keeps the allocation)."""
    for block in blocks:
        if block.attn.kv_cache is not None:
            block.attn.kv_cache.reset()


def remove_block_caches(blocks: Iterable[TransformerBlock]) -> None:
    """Drop every block's KV cache: attention runs on whole sequences again."""
    for block in blocks:
        block.attn.kv_cache = None
