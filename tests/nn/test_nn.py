"""nn blocks against small readable references."""

from __future__ import annotations

import math

import pytest
import torch

from multitower.nn import (
    CrossAttention,
    GatedCrossAttentionBlock,
    SelfAttention,
    TransformerStack,
)
from multitower.nn.attention import merge_heads, split_heads
from multitower.nn.kv_cache import check_slots


def naive_attention(q, k, v, mask):
    """Softmax attention written out: q, k, v (B, H, T, Dh); mask (B, 1|H, Tq, S) bool."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def reference_self_attention(attn: SelfAttention, x, positions, mask):
    q = attn.rotary(split_heads(attn.q_proj(x), attn.num_heads), positions)
    k = attn.rotary(split_heads(attn.k_proj(x), attn.num_heads), positions)
    v = split_heads(attn.v_proj(x), attn.num_heads)
    return attn.out_proj(merge_heads(naive_attention(q, k, v, mask)))


def test_rotary_matches_complex_rotation():
    attn = SelfAttention(16, 2).double()
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    pos = torch.arange(5)[None]
    out = attn.rotary(x, pos)
    inv = attn.rotary.inv_freq.double()
    z = torch.complex(x[..., 0::2], x[..., 1::2])
    rot = z * torch.polar(torch.ones_like(inv), pos[0, :, None].double() * inv)
    ref = torch.stack((rot.real, rot.imag), -1).flatten(-2)
    torch.testing.assert_close(out, ref)


def test_causal_self_attention_matches_naive():
    torch.manual_seed(0)
    attn = SelfAttention(32, 4).double()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    pos = torch.arange(7).expand(2, 7)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()[None, None]
    torch.testing.assert_close(attn(x), reference_self_attention(attn, x, pos, mask))


def test_bidirectional_padding_mask_matches_naive():
    torch.manual_seed(0)
    attn = SelfAttention(32, 4).double()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    pos = torch.arange(6).expand(2, 6)
    out = attn(x, causal=False, key_padding_mask=keep)
    mask = keep[:, None, None, :].expand(2, 1, 6, 6)
    ref = reference_self_attention(attn, x, pos, mask)
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :3], ref[1, :3])  # padded queries are don't-care
    # padding content never leaks into real tokens
    x2 = x.clone()
    x2[1, 3:] = torch.randn(3, 32, dtype=torch.float64)
    out2 = attn(x2, causal=False, key_padding_mask=keep)
    torch.testing.assert_close(out2[1, :3], out[1, :3])


def test_cached_decode_steps_match_naive_and_full():
    torch.manual_seed(0)
    attn = SelfAttention(32, 4).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full = attn(x)
    attn.setup_cache(2, 12, dtype=torch.float64, device=torch.device("cpu"))
    outs = [attn(x[:, :4], positions=torch.arange(4).expand(2, 4))]  # prefill
    for t in range(4, 9):
        outs.append(attn(x[:, t : t + 1], positions=torch.full((2, 1), t)))
    torch.testing.assert_close(torch.cat(outs, 1), full)


def test_cache_with_per_example_positions():
    """Two examples at different offsets of one cache decode like separate runs."""
    torch.manual_seed(0)
    attn = SelfAttention(16, 2).double()
    a, b = torch.randn(1, 5, 16, dtype=torch.float64), torch.randn(1, 3, 16, dtype=torch.float64)
    ref_a, ref_b = attn(a), attn(b)
    attn.setup_cache(2, 8, dtype=torch.float64, device=torch.device("cpu"))
    xb = torch.cat([a[:, :4], torch.cat([b[:, :2], torch.zeros(1, 2, 16).double()], 1)])
    attn(xb, positions=torch.arange(4).expand(2, 4))
    step = torch.cat([a[:, 4:5], b[:, 2:3]])
    out = attn(step, positions=torch.tensor([[4], [2]]))
    torch.testing.assert_close(out[0, 0], ref_a[0, 4])
    torch.testing.assert_close(out[1, 0], ref_b[0, 2])


def test_check_slots_rejects_out_of_range_and_returns_the_largest():
    assert check_slots(torch.tensor([[0, 3], [2, 1]]), 4, "t") == 3
    for bad in ([[4]], [[-1]]):
        with pytest.raises(ValueError, match=r"must lie in \[0, 4\) \(the cache's max_len\)"):
            check_slots(torch.tensor(bad), 4, "t")


def test_stack_with_caches_rejects_out_of_range_positions_once_per_forward():
    """The range check left KVCache.update (one sync per layer) for the stack's forward."""
    stack = TransformerStack(2, 16, 2, 32)
    stack.setup_caches(1, 4, dtype=torch.float32, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="TransformerStack: positions must lie in"):
        stack(torch.zeros(1, 1, 16), positions=torch.tensor([[4]]))


def test_cache_attends_only_its_filled_part():
    """After writing slots 0..2 of 8, a cached step attends 4 slots, not the capacity."""
    torch.manual_seed(0)
    stack = TransformerStack(2, 16, 2, 32).double()
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    full = stack(x)
    stack.setup_caches(1, 8, dtype=torch.float64, device=torch.device("cpu"))
    stack(x[:, :3], positions=torch.arange(3)[None])
    inputs = stack.prepare(torch.tensor([[3]]), torch.float64, max_position=3)
    assert inputs.cache_len == 4 and inputs.cache_mask.shape == (1, 1, 1, 4)
    step = stack(x[:, 3:], positions=torch.tensor([[3]]))
    torch.testing.assert_close(step, full[:, 3:])
    assert all(block.attn.kv_cache.filled == 4 for block in stack)


def test_cross_attention_matches_naive_and_zero_rows():
    torch.manual_seed(0)
    xattn = CrossAttention(32, 4).double()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    src = torch.randn(2, 6, 32, dtype=torch.float64)
    mask = torch.rand(2, 5, 6) > 0.5
    mask[0, 0] = False  # a row that sees nothing
    k, v = xattn.project_kv(src)
    out = xattn(x, k, v, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 0], torch.zeros(32, dtype=torch.float64))
    q = split_heads(xattn.q_proj(x), 4)
    ref = xattn.out_proj(merge_heads(naive_attention(q, k, v, mask[:, None])))
    rows = mask.any(-1)
    torch.testing.assert_close(out[rows], ref[rows])


def test_gated_block_is_identity_at_init_and_gradients_reach_gates():
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(16, 24, 2, 32)
    x, src = torch.randn(2, 4, 16), torch.randn(2, 5, 24)
    k, v = block.source_kv(src)
    out = block(x, k, v, None)
    assert torch.equal(out, x)
    out.sum().backward()
    assert block.gate_attn.grad is not None and block.gate_attn.grad != 0
    assert block.gate_mlp.grad is not None and block.gate_mlp.grad != 0
