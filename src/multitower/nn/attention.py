"""Self- and cross-attention on ``F.scaled_dot_product_attention``.

Self-attention applies rotary positions from explicit per-token positions (or none,
for the ViT, whose positions are a learned embedding) and can run causally
(decoder), bidirectionally with a padding mask (MaMMUT's contrastive pass, the unit
recogniser, the ViT), or against a preallocated :class:`~multitower.nn.kv_cache.KVCache`.
Cross-attention takes a boolean visibility mask; a query row that sees no key gets
an output of exactly zero instead of the NaN an all-masked softmax would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multitower.nn.checks import check_heads
from multitower.nn.kv_cache import KVCache
from multitower.nn.rotary import Rotary, RotaryTables, apply_rotary


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, Dh)."""
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, Dh) -> (B, T, D)."""
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)


@dataclass(frozen=True)
class SelfAttentionInputs:
    """What a self-attention layer needs for one forward besides ``x``, computed once.

    Every layer of a stack has the same ``head_dim``, rotary base and cache size, so
    a stack builds this once per forward (:meth:`SelfAttention.prepare`) and all its
    layers share it, instead of each rebuilding the rotary tables and cache mask.

    Attributes:
        positions: ``(B, T)`` token positions (cache slots written, with a cache).
        rope: rotary ``(cos, sin)``, each ``(B, 1, T, Dh/2)``, or None without rotary.
        cache_len: cache slots attended (the filled part), or None without a cache.
        cache_mask: ``(B, 1, T, cache_len)`` True where a query at position p sees slot
            ``<= p``, or None without a cache.
    """

    positions: torch.Tensor
    rope: RotaryTables | None
    cache_len: int | None
    cache_mask: torch.Tensor | None


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions and an optional KV cache.

    Args:
        d_model: width ``D``; ``num_heads`` must divide it.
        num_heads: attention heads ``H``.
        rope_base: rotary base, or None for no rotary positions (the ViT).
        bias: biases on the four projections.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        rope_base: float | None = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = None if rope_base is None else Rotary(self.head_dim, rope_base)
        self.kv_cache: KVCache | None = None

    def setup_cache(
        self, batch: int, max_len: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.kv_cache = KVCache(
            batch, self.num_heads, max_len, self.head_dim, dtype=dtype, device=device
        )

    def prepare(
        self, positions: torch.Tensor, dtype: torch.dtype, *, max_position: int | None = None
    ) -> SelfAttentionInputs:
        """The rotary tables and cache mask for ``positions`` ``(B, T)``.

        Args:
            dtype: dtype of the rotary tables (the residual stream's).
            max_position: the largest position of this forward, read once by the
                caller (:func:`~multitower.nn.kv_cache.check_slots`); with it the
                layer attends only the filled part of its cache, without it the
                whole cache (static shapes, as ``torch.compile`` wants).
        """
        rope = None if self.rotary is None else self.rotary.tables(positions, dtype)
        cache = self.kv_cache
        if cache is None:
            return SelfAttentionInputs(positions, rope, None, None)
        S = cache.max_len if max_position is None else cache.mark_filled(max_position)
        slots = torch.arange(S, device=positions.device)
        mask = slots[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, S)
        return SelfAttentionInputs(positions, rope, S, mask)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
        inputs: SelfAttentionInputs | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` ``(B, T, D)``.

        Args:
            positions: ``(B, T)`` token positions (rotation angles, unused without
                rotary); default ``arange(T)``. With a KV cache they are also the cache
                slots written, and a query at position p sees cache slots ``<= p``.
            causal: causal mask (ignored with a cache, which is always causal).
            key_padding_mask: ``(B, T)`` True for real tokens (no-cache path only).
            inputs: rotary tables and cache mask from :meth:`prepare` (shared by the
                layers of a stack); replaces ``positions``. Default: built here.
        """
        B, T, _ = x.shape
        if inputs is None:
            if positions is None:
                positions = torch.arange(T, device=x.device).expand(B, T)
            inputs = self.prepare(positions, x.dtype)
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, T, Dh)
        k = split_heads(self.k_proj(x), self.num_heads)  # (B, H, T, Dh)
        v = split_heads(self.v_proj(x), self.num_heads)  # (B, H, T, Dh)
        if inputs.rope is not None:
            q, k = apply_rotary(q, inputs.rope), apply_rotary(k, inputs.rope)  # (B, H, T, Dh)
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(inputs.positions, k, v)  # (B, H, S_max, Dh)
            S = inputs.cache_len
            k, v = k[:, :, :S], v[:, :, :S]  # (B, H, S, Dh): the filled part
            if k.dtype != q.dtype:
                k, v = k.to(q.dtype), v.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=inputs.cache_mask)
        elif key_padding_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
            if causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            # A padded query row may see nothing; let it see itself to stay finite.
            mask = mask | torch.eye(T, dtype=torch.bool, device=x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(merge_heads(out))


@dataclass(frozen=True)
class CrossMask:
    """A cross-attention visibility mask prepared once for every block that reads the
    same keys (Zipper: all fusion blocks of one query tower reading one source tower).

    Attributes:
        safe: ``(B, 1, Tq, S)`` the mask, with rows that see no key opened to every key
            (an all-masked softmax would be NaN).
        keep: ``(B, Tq, 1)`` 1 where the row sees some key, 0 where its output is zeroed.
    """

    safe: torch.Tensor
    keep: torch.Tensor

    @classmethod
    def from_visibility(cls, mask: torch.Tensor, dtype: torch.dtype) -> CrossMask:
        """From ``mask`` ``(B, Tq, S)``, True where the query may see the key."""
        has_any = mask.any(dim=-1, keepdim=True)  # (B, Tq, 1)
        return cls((mask | ~has_any)[:, None], has_any.to(dtype))


class CrossAttention(nn.Module):
    """Multi-head attention from queries ``(B, Tq, D)`` to source keys/values.

    Keys and values are produced by :meth:`project_kv` so that callers can cache
    them (image tokens once per image; another tower's states as it generates).

    With ``rope_base`` set, queries and keys are rotated (RoPE) by positions the
    caller gives, so that attention can depend on where a query and a key sit
    relative to each other (positions of two sequences on one shared axis); then
    :meth:`project_kv` and :meth:`forward` require their ``positions``.

    With ``distance_bias``, head ``h`` subtracts ``slope_h * distance`` from its
    logits (ALiBi, arXiv 2108.12409), the caller giving each query-key distance;
    the slopes are learned (``log_slopes``), initialised ``2 ** (-8 (h + 1) / H)``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        d_source: int | None = None,
        bias: bool = False,
        rope_base: float | None = None,
        distance_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        d_source = d_model if d_source is None else d_source
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_source, d_model, bias=bias)
        self.v_proj = nn.Linear(d_source, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rotary = None if rope_base is None else Rotary(self.head_dim, rope_base)
        self.distance_bias = distance_bias
        if distance_bias:
            exponents = -8.0 * torch.arange(1, num_heads + 1) / num_heads
            self.log_slopes = nn.Parameter(exponents * math.log(2.0))  # (H,)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor | None, what: str) -> torch.Tensor:
        """Rotate queries or keys ``(B, H, T, Dh)`` by ``positions`` ``(B, T)`` (rotary only)."""
        if self.rotary is None:
            if positions is not None:
                raise ValueError(f"{what} positions given to a cross-attention without rotary")
            return x
        if positions is None:
            raise ValueError(f"this cross-attention is rotary: {what} positions are required")
        return self.rotary(x, positions)

    def project_kv(
        self, source: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Source ``(B, S, d_source)`` -> keys, values ``(B, H, S, Dh)``.

        ``positions`` ``(B, S)``: the keys' rotary positions (rotary attention only).
        """
        k = split_heads(self.k_proj(source), self.num_heads)
        v = split_heads(self.v_proj(source), self.num_heads)
        return self.rotate(k, positions, "key"), v

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | CrossMask | None,
        positions: torch.Tensor | None = None,
        *,
        query_rope: RotaryTables | None = None,
        distance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` ``(B, Tq, D)`` to ``k, v`` ``(B, H, S, Dh)``.

        Args:
            mask: ``(B, Tq, S)`` True where the query may see the key (or the same
                prepared once as a :class:`CrossMask`), or None for all. Rows with no
                visible key produce exactly zero.
            positions: ``(B, Tq)`` the queries' rotary positions (rotary attention only;
                the keys were rotated by :meth:`project_kv`).
            query_rope: the queries' rotary tables (:meth:`Rotary.tables
                <multitower.nn.rotary.Rotary.tables>` of ``positions``), instead of
                ``positions``, when several blocks share them.
            distance: ``(B, 1, Tq, S)`` query-key distances, required with
                ``distance_bias`` (refused without).
        """
        if (distance is None) == self.distance_bias:
            raise ValueError(
                "this cross-attention has a distance bias: distances are required"
                if self.distance_bias
                else "distances given to a cross-attention without a distance bias"
            )
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, Tq, Dh)
        if query_rope is None:
            q = self.rotate(q, positions, "query")
        elif self.rotary is None:
            raise ValueError("query rotary tables given to a cross-attention without rotary")
        else:
            q = apply_rotary(q, query_rope)
        if k.dtype != q.dtype:
            k, v = k.to(q.dtype), v.to(q.dtype)
        bias = None
        if distance is not None:
            slopes = self.log_slopes.exp().to(q.dtype)[None, :, None, None]  # (1, H, 1, 1)
            bias = -slopes * distance.to(q.dtype)  # (B, H, Tq, S)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, Tq, Dh)
            return self.out_proj(merge_heads(out))
        if not isinstance(mask, CrossMask):
            # Empty rows would softmax over nothing (NaN); let them see everything, then zero them.
            mask = CrossMask.from_visibility(mask, q.dtype)
        attn_mask = mask.safe if bias is None else torch.where(mask.safe, bias, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, Tq, Dh)
        keep = mask.keep if mask.keep.dtype == q.dtype else mask.keep.to(q.dtype)
        return self.out_proj(merge_heads(out)) * keep
