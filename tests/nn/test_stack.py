"""TransformerStack and CrossAttentionBlock against readable references and invariants."""

from __future__ import annotations

import math

import torch

from multitower.nn import CrossAttentionBlock, SelfAttention, TransformerStack
from multitower.nn.attention import merge_heads, split_heads

CPU = torch.device("cpu")


def make_stack(**kw) -> TransformerStack:
    torch.manual_seed(0)
    return TransformerStack(3, 32, 4, 64, **kw).double()


def naive_attention(q, k, v, mask):
    """Softmax attention written out: q (B, H, Tq, Dh), k, v (B, H, S, Dh), mask (Tq, S) bool."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def test_stack_is_its_blocks_in_order_with_extra_layers_after_the_named_ones():
    stack = make_stack()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    shift = {0: lambda h: h + 1.0, 2: lambda h: h * 0.5}
    ref = x
    for i, block in enumerate(stack):
        ref = block(ref)
        if i in shift:
            ref = shift[i](ref)
    torch.testing.assert_close(stack(x, after_block=shift), ref, rtol=0, atol=0)
    assert not torch.allclose(stack(x), ref)  # the extra layers did run


def test_parameter_names_are_those_of_a_plain_module_list_of_blocks():
    names = [n for n, _ in make_stack().named_parameters()]
    assert names[:6] == [
        "0.norm_attn.weight",
        "0.attn.q_proj.weight",
        "0.attn.k_proj.weight",
        "0.attn.v_proj.weight",
        "0.attn.out_proj.weight",
        "0.norm_mlp.weight",
    ]
    assert names[-1] == "2.mlp.fc_out.weight"


def test_causal_stack_never_lets_a_later_token_change_an_earlier_output():
    stack = make_stack()
    x = torch.randn(2, 8, 32, dtype=torch.float64)
    y = x.clone()
    y[:, 5:] = torch.randn(2, 3, 32, dtype=torch.float64)
    torch.testing.assert_close(stack(x)[:, :5], stack(y)[:, :5], rtol=0, atol=0)
    assert not torch.allclose(stack(x)[:, 5:], stack(y)[:, 5:])


def test_non_causal_mode_is_bidirectional_and_ignores_padded_keys():
    """The recogniser's and MaMMUT's contrastive mode: every real token sees every real token."""
    stack = make_stack()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    keep = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    out = stack(x, causal=False, key_padding_mask=keep)
    later = x.clone()
    later[:, 3] = torch.randn(2, 32, dtype=torch.float64)  # a real token of both rows
    assert not torch.allclose(stack(later, causal=False, key_padding_mask=keep)[:, 0], out[:, 0])
    padded = x.clone()
    padded[1, 4:] = torch.randn(2, 32, dtype=torch.float64)  # padding of row 1 only
    again = stack(padded, causal=False, key_padding_mask=keep)
    torch.testing.assert_close(again[1, :4], out[1, :4], rtol=0, atol=0)
    # Without padding, non-causal equals a stack of attention without any mask.
    torch.testing.assert_close(stack(x, causal=False)[0], out[0])


def test_cached_decoding_matches_the_full_causal_run():
    stack = make_stack()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    other = torch.randn(2, 3, 32, dtype=torch.float64)
    full, full_other = stack(x), stack(other)
    stack.setup_caches(2, 12, dtype=torch.float64, device=CPU)
    assert stack.caches_enabled
    outs = [stack(x[:, :4], positions=torch.arange(4).expand(2, 4))]  # prefill
    for t in range(4, 9):
        outs.append(stack(x[:, t : t + 1], positions=torch.full((2, 1), t)))
    torch.testing.assert_close(torch.cat(outs, 1), full)
    # reset: the caches forget the first sequences, another one decodes from scratch
    stack.reset_caches()
    assert all(
        not block.attn.kv_cache.k.any() and not block.attn.kv_cache.v.any() for block in stack
    )
    torch.testing.assert_close(stack(other, positions=torch.arange(3).expand(2, 3)), full_other)
    stack.remove_caches()
    assert not stack.caches_enabled
    torch.testing.assert_close(stack(x), full, rtol=0, atol=0)


def test_reordered_caches_continue_the_reordered_sequences():
    stack = make_stack()
    x = torch.randn(3, 6, 32, dtype=torch.float64)
    index = torch.tensor([2, 0, 0])
    full = stack(x[index])
    stack.setup_caches(3, 8, dtype=torch.float64, device=CPU)
    stack(x[:, :5], positions=torch.arange(5).expand(3, 5))
    stack.reorder_caches(index)
    last = stack(x[index][:, 5:], positions=torch.full((3, 1), 5))
    torch.testing.assert_close(last, full[:, 5:])


def test_attention_without_rotary_matches_naive_and_is_permutation_equivariant():
    """The ViT's attention: positions come from the embedding, none inside attention."""
    torch.manual_seed(0)
    attn = SelfAttention(32, 4, rope_base=None, bias=True).double()
    assert attn.rotary is None and attn.q_proj.bias is not None
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    out = attn(x, causal=False)
    H = attn.num_heads
    q, k, v = (split_heads(p(x), H) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    ref = attn.out_proj(merge_heads(naive_attention(q, k, v, torch.ones(6, 6, dtype=torch.bool))))
    torch.testing.assert_close(out, ref)
    perm = torch.randperm(6)
    torch.testing.assert_close(attn(x[:, perm], causal=False), out[:, perm])
    stack = TransformerStack(2, 32, 4, 64, rope_base=None, bias=True).double()
    torch.testing.assert_close(stack(x[:, perm], causal=False), stack(x, causal=False)[:, perm])


def test_cross_attention_block_matches_naive_residual_cross_attention():
    torch.manual_seed(0)
    block = CrossAttentionBlock(32, 4, 24, norm="layer").double()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    source = torch.randn(2, 7, 24, dtype=torch.float64)
    k, v = block.attn.project_kv(source)  # (B, H, S, Dh)
    q = split_heads(block.attn.q_proj(block.norm(x)), 4)
    everything = torch.ones(5, 7, dtype=torch.bool)
    ref = x + block.attn.out_proj(merge_heads(naive_attention(q, k, v, everything)))
    torch.testing.assert_close(block(x, k, v), ref)
    # a query that sees no key adds exactly nothing
    mask = torch.ones(2, 5, 7, dtype=torch.bool)
    mask[1, 2] = False
    out = block(x, k, v, mask)
    torch.testing.assert_close(out[1, 2], x[1, 2], rtol=0, atol=0)
    torch.testing.assert_close(out[0], ref[0])
