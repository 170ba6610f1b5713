"""Pre-norm transformer blocks and the block stack every transformer in the project runs.

* :class:`TransformerBlock`: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``;
* :class:`TransformerStack`: ``num_layers`` such blocks run in order, with their KV
  caches. The decoder tower, MaMMUT's text decoder, the unit recogniser and the
  ViT all hold one as ``blocks`` (parameter names ``blocks.{i}.…``); a caller may
  run an extra layer after any block (MaMMUT's cross-attention to the image);
* :class:`CrossAttentionBlock`: pre-norm residual cross-attention
  ``x + attn(norm(x), k, v)`` without a gate (MaMMUT; Zipper's gated block is
  :class:`~multitower.nn.gated.GatedCrossAttentionBlock`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from multitower.nn.attention import CrossAttention, SelfAttention, SelfAttentionInputs
from multitower.nn.kv_cache import check_slots
from multitower.nn.mlp import MLP
from multitower.nn.norms import make_norm


class TransformerBlock(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        d_model: width ``D``.
        num_heads: attention heads.
        mlp_hidden: hidden width of the feed-forward network.
        norm: ``"rms"`` or ``"layer"``.
        rope_base: rotary base of the self-attention, or None for no rotary positions.
        bias: biases on the attention projections and the MLP's linear maps.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        norm: str = "rms",
        rope_base: float | None = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm_attn = make_norm(norm, d_model)
        self.attn = SelfAttention(d_model, num_heads, rope_base=rope_base, bias=bias)
        self.norm_mlp = make_norm(norm, d_model)
        self.mlp = MLP(d_model, mlp_hidden, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
        inputs: SelfAttentionInputs | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(
            self.norm_attn(x),
            positions=positions,
            causal=causal,
            key_padding_mask=key_padding_mask,
            inputs=inputs,
        )
        return x + self.mlp(self.norm_mlp(x))


class TransformerStack(nn.ModuleList):
    """``num_layers`` :class:`TransformerBlock` layers run in order: ``(B, T, D) -> (B, T, D)``.

    A ``ModuleList`` (not a module holding one) so that a model storing it as
    ``blocks`` keeps the parameter names ``blocks.{i}.…`` and Zipper can still run
    a tower's blocks one by one (``tower.blocks[i]``). No final norm: models put
    their own after the stack.

    Args:
        num_layers: number of blocks.
        d_model, num_heads, mlp_hidden, norm, rope_base, bias: see :class:`TransformerBlock`.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        norm: str = "rms",
        rope_base: float | None = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__(
            TransformerBlock(
                d_model, num_heads, mlp_hidden, norm=norm, rope_base=rope_base, bias=bias
            )
            for _ in range(num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
        after_block: Mapping[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Run every block over ``x`` ``(B, T, D)``.

        Args:
            positions, causal, key_padding_mask: passed to every block's
                :class:`~multitower.nn.attention.SelfAttention`.
            after_block: block index ``i`` (0-based) -> a layer ``(B, T, D) -> (B, T, D)``
                run right after block ``i`` (MaMMUT's cross-attention to the image).

        Returns:
            ``(B, T, D)`` hidden states after the last block (and its extra layer).
        """
        after = {} if after_block is None else after_block
        if len(self) == 0:
            return x
        B, T, _ = x.shape
        if positions is None:
            positions = torch.arange(T, device=x.device).expand(B, T)
        max_position = None
        if self.caches_enabled:
            max_position = check_slots(positions, self.cache_len, "TransformerStack")
        inputs = self.prepare(positions, x.dtype, max_position=max_position)
        for i, block in enumerate(self):
            x = block(x, causal=causal, key_padding_mask=key_padding_mask, inputs=inputs)
            if i in after:
                x = after[i](x)  # (B, T, D)
        return x

    def prepare(
        self, positions: torch.Tensor, dtype: torch.dtype, *, max_position: int | None = None
    ) -> SelfAttentionInputs:
        """Rotary tables and cache mask shared by every block for one forward (see
        :meth:`SelfAttention.prepare <multitower.nn.attention.SelfAttention.prepare>`);
        with ``max_position``, every block's cache records its filled part."""
        if max_position is not None:
            for block in self:
                cache = block.attn.kv_cache
                if cache is not None:
                    cache.mark_filled(max_position)
        return self[0].attn.prepare(positions, dtype, max_position=max_position)

    # -- KV caches -------------------------------------------------------------------------
    @property
    def cache_len(self) -> int:
        """Slots of each block's KV cache (caches must be set up)."""
        cache = self[0].attn.kv_cache
        if cache is None:
            raise ValueError("cache_len: no KV caches are set up")
        return cache.max_len

    def setup_caches(
        self, batch: int, max_len: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        """Preallocate a KV cache of ``max_len`` slots in every block's self-attention."""
        for block in self:
            block.attn.setup_cache(batch, max_len, dtype=dtype, device=device)

    def reset_caches(self) -> None:
        """Zero every block's KV cache (keeps the allocation)."""
        for block in self:
            if block.attn.kv_cache is not None:
                block.attn.kv_cache.reset()

    def remove_caches(self) -> None:
        """Drop every block's KV cache: attention runs on whole sequences again."""
        for block in self:
            block.attn.kv_cache = None

    def reorder_caches(self, index: torch.Tensor) -> None:
        """Reorder the batch rows of every KV cache: row ``i`` becomes old row ``index[i]``."""
        for block in self:
            cache = block.attn.kv_cache
            if cache is not None:
                cache.k.copy_(cache.k.index_select(0, index))
                cache.v.copy_(cache.v.index_select(0, index))

    @property
    def caches_enabled(self) -> bool:
        """Whether KV caches are set up (every block has one, or none has)."""
        return len(self) > 0 and self[0].attn.kv_cache is not None


class CrossAttentionBlock(nn.Module):
    """Pre-norm residual cross-attention: ``x + attn(norm(x), k, v)``.

    Keys and values come from :meth:`CrossAttention.project_kv` of ``self.attn``,
    so a caller computes them once per source (MaMMUT: once per image).

    Args:
        d_model: query width ``D``.
        num_heads: attention heads.
        d_source: width of the source tokens keys and values are projected from.
        norm: ``"rms"`` or ``"layer"``.
    """

    def __init__(self, d_model: int, num_heads: int, d_source: int, *, norm: str) -> None:
        super().__init__()
        self.norm = make_norm(norm, d_model)
        self.attn = CrossAttention(d_model, num_heads, d_source=d_source)

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``(B, Tq, D)``, ``k, v`` ``(B, H, S, Dh)``, ``mask`` ``(B, Tq, S)`` or None."""
        return x + self.attn(self.norm(x), k, v, mask)
