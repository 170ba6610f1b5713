"""Gated cross-attention block (Flamingo, arXiv 2204.14198; Zipper section 2).

::

    h_other --source_proj--> k_proj/v_proj ---------------.
                                                           v
    x --norm--> q_proj --> CrossAttention(mask) --> * tanh(gate_attn) --(+)--> x'
    x' --norm--> MLP --> * tanh(gate_mlp) --(+)--> out

Both gates start at 0, so a freshly inserted block is the identity and the tower
it sits in behaves exactly as it did alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multitower.nn.attention import CrossAttention, CrossMask, split_heads
from multitower.nn.kv_cache import CrossKVCache
from multitower.nn.mlp import MLP
from multitower.nn.norms import make_norm
from multitower.nn.rotary import RotaryTables


class GatedCrossAttentionBlock(nn.Module):
    """Tanh-gated cross-attention plus tanh-gated feed-forward.

    Args:
        d_model: width of the tower the block sits in (queries).
        d_source: width of the tower it reads (projected to ``d_model`` first).
        num_heads: attention heads.
        mlp_hidden: hidden width of the gated feed-forward.
        norm: ``"rms"`` or ``"layer"``.
        rope_base: rotate queries and keys by caller-given positions (RoPE with this
            base), or None for position-free cross-attention (the paper's).
        distance_bias: learned per-head ALiBi slopes on caller-given distances
            (see :class:`~multitower.nn.attention.CrossAttention`).
    """

    def __init__(
        self,
        d_model: int,
        d_source: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        norm: str = "rms",
        rope_base: float | None = None,
        distance_bias: bool = False,
    ) -> None:
        super().__init__()
        self.source_proj = nn.Linear(d_source, d_model, bias=False)
        self.norm_attn = make_norm(norm, d_model)
        self.cross_attn = CrossAttention(
            d_model, num_heads, rope_base=rope_base, distance_bias=distance_bias
        )
        self.gate_attn = nn.Parameter(torch.zeros(()))
        self.norm_mlp = make_norm(norm, d_model)
        self.mlp = MLP(d_model, mlp_hidden)
        self.gate_mlp = nn.Parameter(torch.zeros(()))
        self.kv_cache: CrossKVCache | None = None

    def gate_parameters(self) -> list[nn.Parameter]:
        """The two tanh-gate scalars (an optimizer may give them their own learning rate)."""
        return [self.gate_attn, self.gate_mlp]

    def source_kv(
        self, source: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Other tower's states ``(B, S, d_source)`` -> keys, values ``(B, H, S, Dh)``.

        ``positions`` ``(B, S)``: the keys' rotary positions (rotary blocks only).

        ``k_proj(source_proj(h))`` is linear in ``h``: for many tokens it is cheaper to
        multiply the two weight matrices once and apply the product (same result).
        """
        attn = self.cross_attn
        n_tokens = source.shape[0] * source.shape[1]
        if n_tokens <= attn.q_proj.in_features or attn.k_proj.bias is not None:
            return attn.project_kv(self.source_proj(source), positions)
        w_kv = torch.cat([attn.k_proj.weight, attn.v_proj.weight]) @ self.source_proj.weight
        k, v = F.linear(source, w_kv).chunk(2, dim=-1)  # (B, S, D) each
        k = attn.rotate(split_heads(k, attn.num_heads), positions, "key")
        return k, split_heads(v, attn.num_heads)

    def setup_cache(
        self, batch: int, max_len: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        attn = self.cross_attn
        self.kv_cache = CrossKVCache(
            batch, attn.num_heads, max_len, attn.head_dim, dtype=dtype, device=device
        )

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        mask: torch.Tensor | CrossMask | None,
        positions: torch.Tensor | None = None,
        *,
        query_rope: RotaryTables | None = None,
        distance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block to ``x`` ``(B, T, d_model)`` given source keys/values and mask.

        ``k = v = None`` means there is no source token at all: the attention branch
        contributes exactly zero and only the gated feed-forward runs. ``positions``
        ``(B, T)``: the queries' rotary positions (rotary blocks only), or ``query_rope``
        their tables (shared by several blocks; see :class:`~multitower.nn.attention.CrossAttention`).
        ``distance`` ``(B, 1, T, S)``: query-key distances (distance-bias blocks only).
        """
        if k is not None and v is not None:
            attn = self.cross_attn(
                self.norm_attn(x), k, v, mask, positions, query_rope=query_rope, distance=distance
            )
            x = x + torch.tanh(self.gate_attn) * attn
        return x + torch.tanh(self.gate_mlp) * self.mlp(self.norm_mlp(x))
