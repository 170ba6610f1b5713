"""Zipper's fusion schedule: hand-written schedules, invariants on any config, and the
forward against a reference that defines every state by recursion instead of a schedule."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multitower.interleave import Segment, TowerBatch, collate_interleaved, cross_attention_mask
from multitower.models.decoder import DecoderConfig
from multitower.models.zipper import (
    CrossAttend,
    FusionOp,
    FusionPoint,
    RunLayers,
    ShareState,
    Zipper,
    ZipperConfig,
    fusion_points,
    fusion_schedule,
)


def tower(num_layers: int, vocab_size: int = 24, d_model: int = 16) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab_size, d_model=d_model, num_layers=num_layers, num_heads=2)


def fp(query: str, depth: int, source: str, source_depth: int) -> FusionPoint:
    return FusionPoint(query, source, depth, source_depth)


def test_schedule_of_the_docstring_example_written_by_hand():
    config = ZipperConfig({"text": tower(2), "speech": tower(4)}, cross_attention_every=1)
    assert fusion_schedule(config, ["text", "speech"]) == [
        RunLayers("text", 0, 1),
        ShareState("text", 1, (fp("speech", 1, "text", 1), fp("speech", 2, "text", 1))),
        # text waits for speech@2
        RunLayers("speech", 0, 1),
        CrossAttend(fp("speech", 1, "text", 1)),
        RunLayers("speech", 1, 2),
        ShareState("speech", 2, (fp("text", 1, "speech", 2),)),
        CrossAttend(fp("speech", 2, "text", 1)),
        RunLayers("speech", 2, 3),
        # speech waits for text@2
        CrossAttend(fp("text", 1, "speech", 2)),
        RunLayers("text", 1, 2),
        ShareState("text", 2, (fp("speech", 3, "text", 2), fp("speech", 4, "text", 2))),
        # text waits for speech@4
        CrossAttend(fp("speech", 3, "text", 2)),
        RunLayers("speech", 3, 4),
        ShareState("speech", 4, (fp("text", 2, "speech", 4),)),
        CrossAttend(fp("speech", 4, "text", 2)),
        CrossAttend(fp("text", 2, "speech", 4)),
    ]


def test_embeddings_are_shared_before_any_tower_runs_and_blocks_merge():
    # text@1 reads one@0 (round(1 / 4) = 0): it need not wait for one's turn.
    config = ZipperConfig({"text": tower(4), "one": tower(1)}, cross_attention_every=1)
    text_points = [fp("text", d, "one", 0 if d == 1 else 1) for d in (1, 2, 3, 4)]
    assert fusion_schedule(config, ["one", "text"]) == [
        ShareState("one", 0, (text_points[0],)),
        RunLayers("text", 0, 1),
        CrossAttend(text_points[0]),
        RunLayers("text", 1, 2),
        # text waits for one@1
        RunLayers("one", 0, 1),
        ShareState("one", 1, tuple(text_points[1:])),
        # one waits for text@4
        CrossAttend(text_points[1]),
        RunLayers("text", 2, 3),
        CrossAttend(text_points[2]),
        RunLayers("text", 3, 4),
        ShareState("text", 4, (fp("one", 1, "text", 4),)),
        CrossAttend(text_points[3]),
        CrossAttend(fp("one", 1, "text", 4)),
    ]
    # Alone, text waits for nothing and its blocks between fusion depths merge;
    # with text's fusion every 2 blocks, blocks 0 and 1 run as one op.
    config = ZipperConfig(
        {"text": tower(4), "one": tower(1)},
        cross_attention_every=1,
        pair_intervals={"text<-one": 2},
    )
    alone = fusion_schedule(config, ["text"])
    assert alone == [
        RunLayers("text", 0, 2),
        CrossAttend(fp("text", 2, "one", 1)),
        RunLayers("text", 2, 4),
        ShareState("text", 4, (fp("one", 1, "text", 4),)),  # still feeds one's cache
        CrossAttend(fp("text", 4, "one", 1)),
    ]


def test_unknown_towers_are_rejected_and_schedules_are_cached_per_set():
    config = ZipperConfig({"text": tower(2), "speech": tower(4)})
    with pytest.raises(ValueError, match=r"unknown tower\(s\) \['video'\]"):
        fusion_schedule(config, ["text", "video"])
    torch.manual_seed(0)
    z = Zipper(config)
    assert z.schedule(["speech", "text"]) is z.schedule({"text", "speech"})
    assert z.schedule(["text"]) is not z.schedule(["speech"])
    assert list(z.schedule(["text"])) == fusion_schedule(config, ["text"])


def check_schedule(config: ZipperConfig, active: set[str], ops: list[FusionOp]) -> None:
    """Every invariant the forward relies on."""
    points = fusion_points(config)
    depth = dict.fromkeys(active, 0)
    shared: set[tuple[str, int]] = set()
    attended: list[FusionPoint] = []
    for i, op in enumerate(ops):
        match op:
            case RunLayers(t, start, stop):
                # each tower's blocks run once, in order; consecutive runs are merged
                assert t in active and start == depth[t] < stop, op
                last = ops[i - 1] if i else None
                assert not (isinstance(last, RunLayers) and last.tower == t), op
                depth[t] = stop
            case ShareState(t, d, readers):
                assert t in active and depth[t] == d and (t, d) not in shared, op
                # shared before the tower's own fusion blocks at that depth ran
                assert not [p for p in attended if (p.query, p.depth) == (t, d)], op
                assert readers == tuple(p for p in points if (p.source, p.source_depth) == (t, d))
                shared.add((t, d))
            case CrossAttend(p):
                assert p.query in active and depth[p.query] == p.depth, op
                if p.source in active:  # its source state was computed and shared
                    assert (p.source, p.source_depth) in shared, op
                attended.append(p)
    assert depth == {t: config.towers[t].num_layers for t in active}
    # every fusion block of a running tower, exactly once
    assert sorted(attended, key=points.index) == [p for p in points if p.query in active]
    assert shared == {(p.source, p.source_depth) for p in points if p.source in active}


@st.composite
def configs_and_active(draw) -> tuple[ZipperConfig, set[str]]:
    names = ["a", "b", "c"][: draw(st.integers(2, 3))]
    depths = {n: draw(st.integers(1, 7)) for n in names}
    intervals = {
        f"{q}<-{s}": draw(st.integers(1, depths[q])) for q in names for s in names if q != s
    }
    config = ZipperConfig(
        {n: tower(d) for n, d in depths.items()}, cross_attention_every=1, pair_intervals=intervals
    )
    active = draw(st.sets(st.sampled_from(names), min_size=1))
    return config, active


@settings(max_examples=200, deadline=None)
@given(configs_and_active())
def test_schedule_invariants_on_any_config(case):
    config, active = case
    check_schedule(config, active, fusion_schedule(config, active))


def test_check_schedule_catches_a_broken_schedule():
    config = ZipperConfig({"text": tower(2), "speech": tower(4)}, cross_attention_every=1)
    ops = fusion_schedule(config, ["text", "speech"])
    share = next(i for i, op in enumerate(ops) if isinstance(op, ShareState))
    with pytest.raises(AssertionError):  # a fusion block reading a state not yet computed
        check_schedule(config, {"text", "speech"}, ops[:share] + ops[share + 1 :])
    with pytest.raises(AssertionError):  # a block run twice
        check_schedule(config, {"text", "speech"}, [*ops, RunLayers("text", 1, 2)])


def reference_forward(z: Zipper, batch: dict[str, TowerBatch]) -> dict[str, torch.Tensor]:
    """The forward as a definition, with no schedule at all.

    ``state(t, d)`` is tower ``t`` after ``d`` blocks, before its fusion blocks at
    depth ``d``; ``fused(t, d)`` is it after them. A fusion block at ``(t, d)``
    reads ``state(source, source_depth)``.
    """
    proj = z.fusion["input_proj"] if z.config.input_projection != "none" else None

    @functools.cache
    def state(t: str, d: int) -> torch.Tensor:
        if d == 0:
            h = z.towers[t].embed_tokens(batch[t].tokens)
            return proj[t](h) if proj is not None else h
        return z.towers[t].blocks[d - 1](fused(t, d - 1), positions=None)

    @functools.cache
    def fused(t: str, d: int) -> torch.Tensor:
        h = state(t, d)
        for p in z.points:
            if (p.query, p.depth) != (t, d):
                continue
            if p.source not in batch:
                h = z.block(p)(h, None, None, None)
                continue
            q, s = batch[t], batch[p.source]
            k, v = z.block(p).source_kv(state(p.source, p.source_depth))
            mask = cross_attention_mask(q.global_positions, q.valid, s.global_positions, s.valid)
            h = z.block(p)(h, k, v, mask)
        return h

    return {
        t: z.towers[t].head(fused(t, z.config.towers[t].num_layers)) for t in z.towers if t in batch
    }


TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=4, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=48, num_layers=6, num_heads=4)
IMAGE = DecoderConfig(vocab_size=20, d_model=16, num_layers=2, num_heads=2)
EXAMPLES = [
    [Segment("image", [5, 6]), Segment("speech", [7, 8, 9]), Segment("text", [9, 4])],
    [Segment("text", [4, 5, 6]), Segment("image", [7]), Segment("speech", [3, 4])],
    [Segment("speech", [10, 11, 12, 13]), Segment("text", [3])],
]


@pytest.mark.parametrize(
    ("names", "kwargs"),
    [
        (("text", "speech"), dict(cross_attention_every=1)),
        (("text", "speech"), dict(cross_attention_every=2, input_projection="paper")),
        (("text", "speech"), dict(cross_attention_every=3, input_projection="none")),
        (("speech", "text"), dict(cross_attention_every=3, pair_intervals={"text<-speech": 1})),
        (("text", "speech", "image"), dict(cross_attention_every=1)),
        (("text", "speech", "image"), dict(cross_attention_every=2)),
    ],
)
def test_forward_equals_the_recursive_reference(names, kwargs):
    configs = {"text": TEXT, "speech": SPEECH, "image": IMAGE}
    torch.manual_seed(0)
    z = Zipper(ZipperConfig({n: configs[n] for n in names}, **kwargs)).double()
    with torch.no_grad():
        for block in (z.block(p) for p in z.points):  # open the gates: fusion matters
            block.gate_attn.fill_(0.8)
            block.gate_mlp.fill_(-0.6)
    examples = [[s for s in ex if s.modality in names] for ex in EXAMPLES]
    batch = collate_interleaved(examples, z.modalities)
    with torch.no_grad():
        for subset in ([*names], [names[0]], [names[1]]):
            sub = {t: batch[t] for t in subset}
            got, want = z(sub), reference_forward(z, sub)
            assert list(got) == list(want) == [t for t in z.towers if t in sub]
            for t in got:
                torch.testing.assert_close(got[t], want[t], rtol=0, atol=0)
                if len(subset) > 1:  # the other towers change the logits (the test can fail)
                    assert not torch.allclose(got[t], z.towers[t](batch[t].tokens))
