"""Zipper fusion: identity at init, causality, masks, freezing, N towers, config errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multitower.generation import generate
from multitower.interleave import Segment, collate_interleaved, cross_attention_mask
from multitower.losses import interleaved_next_token_loss
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.zipper import Zipper, ZipperConfig, fusion_points

TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=4, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=48, num_layers=6, num_heads=4)


def make_zipper(input_projection="residual", *, gates=0.0, seed=0, **kw) -> Zipper:
    torch.manual_seed(seed)
    z = Zipper(
        ZipperConfig({"text": TEXT, "speech": SPEECH}, input_projection=input_projection, **kw)
    )
    with torch.no_grad():
        for name, p in z.named_parameters():
            if "gate" in name:
                p.fill_(gates)
    return z.double()


EXAMPLES = [
    [Segment("speech", [5, 6, 7, 8, 9]), Segment("text", [3, 4, 5])],
    [Segment("text", [7, 8]), Segment("speech", [10, 11, 12, 13])],
    [
        Segment("text", [9]),
        Segment("speech", [4, 5]),
        Segment("text", [6, 7, 8]),
        Segment("speech", [3]),
    ],
    [Segment("speech", [20, 21, 22])],  # text absent
]


def test_fusion_parameters_live_under_one_prefix_and_tower_keys_are_kept():
    z = make_zipper()
    tower = DecoderTower(TEXT)
    assert set(z.towers["text"].state_dict()) == set(tower.state_dict())
    for name, _ in z.named_parameters():
        assert name.startswith("towers.") or name.startswith("fusion."), name
    # a standalone tower loads strictly into the zip
    z.load_tower("text", tower.double())
    for k, v in tower.state_dict().items():
        assert torch.equal(z.towers["text"].state_dict()[k], v)


def test_relative_depth_alignment():
    points = fusion_points(ZipperConfig({"text": TEXT, "speech": SPEECH}, cross_attention_every=2))
    got = {(p.query, p.depth): p.source_depth for p in points}
    assert got == {
        ("text", 2): 3,
        ("text", 4): 6,
        ("speech", 2): 1,
        ("speech", 4): 3,
        ("speech", 6): 4,
    }


def test_fresh_residual_zip_equals_standalone_towers():
    z = make_zipper("residual").eval()
    batch = collate_interleaved(EXAMPLES, z.modalities)
    logits = z(batch)
    for name in ("text", "speech"):
        alone = z.towers[name](batch[name].tokens)
        valid = batch[name].valid
        torch.testing.assert_close(logits[name][valid], alone[valid], rtol=0, atol=0)


@pytest.mark.parametrize("projection", ["paper", "residual"])
def test_changing_a_later_token_never_changes_earlier_logits(projection):
    z = make_zipper(projection, gates=0.8).eval()
    mods = z.modalities
    base = collate_interleaved(EXAMPLES, mods)
    ref = z(base)
    for ex_i, example in enumerate(EXAMPLES):
        gpos = 0
        for seg_i, seg in enumerate(example):
            for tok_i in range(len(seg.tokens)):
                changed_gpos = gpos + 1 + tok_i  # bos comes first
                new = [list(s.tokens) for s in example]
                new[seg_i][tok_i] = (new[seg_i][tok_i] + 1) % (
                    mods[seg.modality].vocab_size - 3
                ) + 3
                examples = list(EXAMPLES)
                examples[ex_i] = [Segment(s.modality, t) for s, t in zip(example, new)]
                out = z(collate_interleaved(examples, mods))
                for tower in ("text", "speech"):
                    tb = base[tower]
                    earlier = tb.valid[ex_i] & (tb.global_positions[ex_i] < changed_gpos)
                    torch.testing.assert_close(
                        out[tower][ex_i][earlier], ref[tower][ex_i][earlier], rtol=0, atol=0
                    )
                    later = tb.valid[ex_i] & (tb.global_positions[ex_i] >= changed_gpos)
                    if later.any():  # the change is visible downstream (test can fail)
                        assert not torch.equal(out[tower][ex_i][later], ref[tower][ex_i][later])
            gpos += len(seg.tokens) + 2


def test_masks_follow_the_interleaved_order_and_never_nan():
    z = make_zipper("paper", gates=1.0)
    batch = collate_interleaved(EXAMPLES, z.modalities, loss_weights={"text": 1.0, "speech": 1.0})
    t, s = batch["text"], batch["speech"]
    mask = cross_attention_mask(t.global_positions, t.valid, s.global_positions, s.valid)
    # example 0: text bos sits after the whole closed speech segment (7 tokens)
    assert mask[0, 0].sum() == 7
    # example 1: the first text tokens precede every speech token: they see nothing
    assert not mask[1, :4].any()
    # example 3 has no text at all
    assert not t.valid[3].any() and not mask[3].any()
    logits = z(batch)
    assert all(torch.isfinite(v).all() for v in logits.values())
    loss = interleaved_next_token_loss(logits, batch)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in z.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_frozen_towers_get_no_gradient_and_stay_bit_identical():
    z = make_zipper("paper", gates=0.5)
    z.freeze_towers(["text", "speech"])
    before = {k: v.clone() for k, v in z.state_dict().items()}
    opt = torch.optim.AdamW([p for p in z.parameters() if p.requires_grad], lr=1e-2)
    batch = collate_interleaved(EXAMPLES, z.modalities, loss_weights={"text": 1.0})
    interleaved_next_token_loss(z(batch), batch).backward()
    for name, p in z.named_parameters():
        if name.startswith("towers."):
            assert p.grad is None, name
    opt.step()
    after = z.state_dict()
    changed_fusion = 0
    for k, v in before.items():
        if k.startswith("towers."):
            assert torch.equal(after[k], v), k
        elif not torch.equal(after[k], v):
            changed_fusion += 1
    assert changed_fusion > 10


def test_three_towers_train_a_step_and_decode():
    torch.manual_seed(0)
    image = DecoderConfig(vocab_size=20, d_model=16, num_layers=2, num_heads=2)
    z = Zipper(
        ZipperConfig(
            {"text": TEXT, "speech": SPEECH, "image": image}, pair_intervals={"image<-text": 1}
        )
    )
    assert {p.key for p in z.points} == {
        "text_from_speech",
        "text_from_image",
        "speech_from_text",
        "speech_from_image",
        "image_from_text",
        "image_from_speech",
    }
    examples = [[Segment("image", [5, 6]), Segment("speech", [7, 8]), Segment("text", [9])]] * 2
    batch = collate_interleaved(examples, z.modalities, loss_weights={"text": 1.0, "speech": 0.5})
    opt = torch.optim.AdamW(z.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = interleaved_next_token_loss(z(batch), batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    z.eval()
    prompts = [[Segment("image", [5, 6])]]
    cached = generate(z, prompts, ["speech", "text"], max_new_tokens=4)
    full = generate(z, prompts, ["speech", "text"], max_new_tokens=4, use_cache=False)
    assert cached == full
    assert [s.modality for s in cached[0]] == ["speech", "text"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(cross_attention_every=0), "cross_attention_every=0 must lie in"),
        (dict(cross_attention_every=5), r"must lie in \[1, 4\]"),
        (dict(pair_intervals={"text<-video": 1}), "unknown pair 'text<-video'"),
        (dict(input_projection="mlp"), "input_projection must be one of"),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZipperConfig({"text": TEXT, "speech": SPEECH}, **kwargs)


def test_bad_widths_modalities_and_tokens_are_rejected():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by num_heads \(4\)"):
        DecoderConfig(vocab_size=10, d_model=30, num_layers=1, num_heads=4)
    z = make_zipper()
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        collate_interleaved([[Segment("video", [1])]], z.modalities)
    with pytest.raises(ValueError, match=r"token id 40 is outside its vocabulary \[0, 40\)"):
        collate_interleaved([[Segment("text", [40])]], z.modalities)
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        generate(z, [[Segment("text", [4])]], ["video"])
    with pytest.raises(ValueError, match="unknown tower"):
        z({"video": collate_interleaved([[Segment("text", [4])]], z.modalities)["text"]})
    with pytest.raises(ValueError, match="config"):
        z.load_tower("text", DecoderTower(SPEECH))


segments_strategy = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["text", "speech"]), st.lists(st.integers(3, 29), max_size=4)),
        max_size=4,
    ),
    min_size=1,
    max_size=3,
)


def reference_visibility(example, query: str, source: str) -> list[list[bool]]:
    """Which ``source`` tokens each ``query`` token may see, from the raw segment order.

    Each segment is ``[bos] tokens [eos]``; tokens are numbered in the example's
    linear order (segment by segment), and a query token sees exactly the source
    tokens numbered before it.
    """
    order: dict[str, list[int]] = {"text": [], "speech": []}
    n = 0
    for seg in example:
        for _ in range(len(seg.tokens) + 2):
            order[seg.modality].append(n)
            n += 1
    return [[j < i for j in order[source]] for i in order[query]]


@settings(max_examples=25, deadline=None)
@given(segments_strategy)
def test_mask_matches_the_segment_order_for_any_interleaving(raw):
    examples = [[Segment(m, toks) for m, toks in ex] for ex in raw]
    z = make_zipper("paper", gates=1.0)
    batch = collate_interleaved(examples, z.modalities)
    for q, s in (("text", "speech"), ("speech", "text")):
        qb, sb = batch[q], batch[s]
        mask = cross_attention_mask(qb.global_positions, qb.valid, sb.global_positions, sb.valid)
        for b, example in enumerate(examples):
            expected = reference_visibility(example, q, s)
            nq = len(expected)
            ns = sum(len(seg.tokens) + 2 for seg in example if seg.modality == s)
            # the tower's tokens come first in each row, padding after them sees nothing
            got = mask[b, :nq, :ns].tolist()
            assert got == expected
            assert not mask[b, nq:].any() and not mask[b, :, ns:].any()
    logits = z(batch)
    assert all(torch.isfinite(v).all() for v in logits.values())


# -- cross-attention with positions on a shared axis (fusion.position_scales) ---------------
SCALES = {"text": 2.5, "speech": 1.0}


@pytest.mark.parametrize("bias", [False, True], ids=["rotary", "rotary+distance_bias"])
def test_positioned_cached_steps_equal_the_full_forward_logits(bias):
    """Prefill the speech, then feed the text one token at a time through the caches:
    every step's logits equal the full interleaved forward (keys rotated once, when
    cached, by the source's positions; queries by their own; with the distance bias,
    a cached key's distance comes from its slot)."""
    from multitower.interleave import TowerBatch

    z = make_zipper(gates=0.7, position_scales=SCALES, cross_distance_bias=bias).eval()
    speech, text = [5, 6, 7, 8, 9], [3, 4, 5, 6]
    full = z(
        collate_interleaved([[Segment("speech", speech), Segment("text", text)]], z.modalities)
    )
    prompt = collate_interleaved([[Segment("speech", speech)]], z.modalities)
    n_prompt = int(prompt["speech"].valid.sum())
    z.setup_caches(1, {"speech": n_prompt, "text": len(text) + 2})
    try:
        z({"speech": prompt["speech"]})
        mod = z.modalities["text"]
        for i, tok in enumerate([mod.bos_id, *text]):
            tb = TowerBatch(
                torch.tensor([[tok + mod.offset]]),
                torch.tensor([[i]]),
                torch.tensor([[n_prompt + i]]),
                torch.tensor([[True]]),
            )
            step = z({"text": tb})["text"][0, -1]
            torch.testing.assert_close(step, full["text"][0, i], rtol=1e-9, atol=1e-9)
    finally:
        z.remove_caches()


def test_positioned_cross_attention_depends_on_the_shared_positions():
    """Same weights, same tokens: the speech-to-text logits change with the text's
    position scale (the rotation is used) and equal a position-free zip's only
    when every block sees no source (gates closed)."""
    batch = collate_interleaved(EXAMPLES[:2], make_zipper().modalities)

    def run(**kw) -> dict[str, torch.Tensor]:
        z = make_zipper(gates=0.7, **kw).eval()
        with torch.no_grad():  # peaked attention (std 0.02 weights attend almost uniformly)
            for name, p in z.named_parameters():
                if "q_proj" in name or "k_proj" in name:
                    p.mul_(40.0)
        return z(batch)

    plain, a, b = (
        run(),
        run(position_scales=SCALES),
        run(position_scales={"text": 4.0, "speech": 1.0}),
    )
    valid = batch["text"].valid
    assert not torch.allclose(a["text"][valid], plain["text"][valid])
    assert not torch.allclose(a["text"][valid], b["text"][valid])
    closed = make_zipper(gates=0.0, position_scales=SCALES).eval()(batch)
    torch.testing.assert_close(closed["text"][valid], make_zipper().eval()(batch)["text"][valid])


def test_rotary_cross_attention_sees_only_relative_positions():
    """Shifting every query and key position by one offset leaves the output unchanged
    (RoPE: scores depend on position differences only); shifting only the keys does not."""
    from multitower.nn import GatedCrossAttentionBlock

    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(16, 24, 4, 32, rope_base=100.0).double()
    with torch.no_grad():
        block.gate_attn.fill_(1.0)
    x, src = torch.randn(2, 5, 16).double(), torch.randn(2, 7, 24).double()
    qpos = torch.arange(5.0).expand(2, 5) * 1.5
    kpos = torch.arange(7.0).expand(2, 7)

    def out(dq: float, dk: float) -> torch.Tensor:
        k, v = block.source_kv(src, kpos + dk)
        return block(x, k, v, None, qpos + dq)

    torch.testing.assert_close(out(0, 0), out(3.25, 3.25))
    assert not torch.allclose(out(0, 0), out(0, 3.25))
    with pytest.raises(ValueError, match="positions are required"):
        block.source_kv(src)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"position_scales": {"text": 1.0}}, "every tower"),
        ({"position_scales": {"text": 1.0, "speech": 0.0}}, r"position_scales\['speech'\]"),
        ({"position_scales": {"text": 1.0, "speech": True}}, "positive number"),
        ({"cross_rope_base": 1.0}, "cross_rope_base"),
    ],
)
def test_position_scale_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZipperConfig({"text": TEXT, "speech": SPEECH}, **kwargs)


def test_distance_bias_matches_a_hand_written_attention():
    """Block output = softmax(q.k / sqrt(d) - slope_h |p_q - p_k|) v through the
    projections, masked keys excluded; each head's slope starts at 2^(-8(h+1)/H)."""
    from multitower.nn import GatedCrossAttentionBlock
    from multitower.nn.attention import merge_heads, split_heads

    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(16, 16, 4, 32, distance_bias=True).double()
    attn = block.cross_attn
    torch.testing.assert_close(
        attn.log_slopes.exp(), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8]).double()
    )
    with torch.no_grad():
        attn.log_slopes.copy_(torch.tensor([1.0, 0.0, -1.0, -3.0]))
    x, src = torch.randn(2, 3, 16).double(), torch.randn(2, 5, 16).double()
    distance = (torch.rand(2, 1, 3, 5) * 6).double()
    visible = torch.ones(2, 3, 5, dtype=torch.bool)
    visible[1, :, 3:] = False  # the second example has 3 source tokens
    k, v = block.source_kv(src)
    got = attn(x, k, v, visible, distance=distance)
    q = split_heads(attn.q_proj(x), 4)  # (B, H, Tq, Dh)
    scores = q @ k.transpose(-1, -2) / 2.0 - attn.log_slopes.exp()[:, None, None] * distance
    probs = scores.masked_fill(~visible[:, None], float("-inf")).softmax(-1)
    torch.testing.assert_close(got, attn.out_proj(merge_heads(probs @ v)))
    with pytest.raises(ValueError, match="distances are required"):
        attn(x, k, v, visible)
    with pytest.raises(ValueError, match="without a distance bias"):
        GatedCrossAttentionBlock(16, 16, 4, 32).double().cross_attn(
            x, k, v, visible, distance=distance
        )


def test_distance_bias_needs_positions_and_a_bool():
    with pytest.raises(ValueError, match="needs position_scales"):
        Zipper(ZipperConfig({"text": TEXT, "speech": SPEECH}, cross_distance_bias=True))
    with pytest.raises(ValueError, match="cross_distance_bias must be true or false"):
        ZipperConfig({"text": TEXT, "speech": SPEECH}, cross_distance_bias="yes")


def test_a_freshly_biased_zip_is_the_towers_and_the_slopes_train():
    """Gates at 0: the distance bias changes nothing; open gates: the slopes get gradient."""
    batch = collate_interleaved(EXAMPLES, make_zipper().modalities)
    plain = make_zipper().eval()(batch)
    biased = make_zipper(position_scales=SCALES, cross_distance_bias=True).eval()(batch)
    for tower, logits in plain.items():
        valid = batch[tower].valid
        torch.testing.assert_close(biased[tower][valid], logits[valid])
    z = make_zipper(gates=0.7, position_scales=SCALES, cross_distance_bias=True)
    sum(out.sum() for out in z(batch).values()).backward()
    slopes = [p for n, p in z.named_parameters() if n.endswith("log_slopes")]
    assert len(slopes) == len(z.points) and all(s.grad.abs().sum() > 0 for s in slopes)
    assert all(any(s is f for f in z.fusion_parameters()) for s in slopes)


def test_a_positioned_zipper_saves_and_loads_with_its_scales(tmp_path):
    from multitower.models.pretrained import load_pretrained, save_pretrained

    z = make_zipper(gates=0.7, position_scales=SCALES).float().eval()
    save_pretrained(z, tmp_path / "m")
    back = load_pretrained(tmp_path / "m", Zipper).eval()
    assert back.config.position_scales == SCALES
    batch = collate_interleaved(EXAMPLES, z.modalities)
    for tower, logits in z(batch).items():
        torch.testing.assert_close(back(batch)[tower], logits, rtol=0, atol=0)
