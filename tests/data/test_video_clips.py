"""Generated clips: determinism, texts that follow the events, and order-dependent questions
that no order-free model can answer (the reversed clip has the same frames and another answer)."""

from __future__ import annotations

import numpy as np
import pytest

from multitower.data.image_datasets import COLOUR_RGB
from multitower.data.video_clips import (
    ClipConfig,
    _qa_with_order,
    generate_clip,
    generate_clips,
    render_frames,
)

CONFIG = ClipConfig(image_size=32, num_frames=6)


def test_same_seed_same_clips_and_index_independent_of_count():
    a = generate_clips(5, seed=3, config=CONFIG)
    b = generate_clips(8, seed=3, config=CONFIG)
    for x, y in zip(a, b):
        assert np.array_equal(x.frames, y.frames) and x.captions == y.captions and x.qa == y.qa
    c = generate_clips(5, seed=4, config=CONFIG)
    assert any(not np.array_equal(x.frames, y.frames) for x, y in zip(a, c))
    assert a[0].frames.shape == (6, 32, 32, 3) and a[0].frames.dtype == np.uint8


def test_reversing_the_events_reverses_the_frames_and_flips_the_order_answers():
    for i in range(40):
        clip = generate_clip(i, seed=0, config=CONFIG)
        back = [ev.reversed(CONFIG.num_frames) for ev in clip.events]
        assert np.array_equal(render_frames(back, CONFIG), clip.frames[::-1])
        assert [ev.reversed(CONFIG.num_frames) for ev in back] == clip.events


def test_order_questions_have_another_answer_on_the_same_frames_backwards():
    """So an order-free model (shuffled frames) answers at most one of each pair right."""
    seen = 0
    for i in range(60):
        clip = generate_clip(i, seed=1, config=CONFIG)
        back = [ev.reversed(CONFIG.num_frames) for ev in clip.events]
        backwards_qa = _qa_with_order(back, CONFIG.num_frames)
        for here, there in zip(clip.qa, backwards_qa):
            assert here.question == there.question
            assert (here.answer != there.answer) == here.needs_order == there.needs_order
            seen += here.needs_order
    assert seen > 30


def test_the_reversal_coin_is_fair_and_order_questions_are_common():
    clips = generate_clips(400, seed=0, config=CONFIG)
    backwards = sum(c.reversed for c in clips)
    assert 160 < backwards < 240  # Binomial(400, 0.5): +-4 standard deviations
    qa = [q for c in clips for q in c.qa]
    share = sum(q.needs_order for q in qa) / len(qa)
    assert 0.3 < share < 0.7
    kinds = {q.question.split(" the ")[0] for q in qa if q.needs_order}
    assert {"which way does", "does", "what colour does", "how many shapes are there at"} <= kinds


def has_colour(frame: np.ndarray, colour: str) -> bool:
    return bool((frame == np.array(COLOUR_RGB[colour], dtype=np.uint8)).all(-1).any())


def test_captions_and_answers_follow_the_events():
    bounces = 0
    for i in range(30):
        clip = generate_clip(i, seed=2, config=CONFIG)
        answers = dict((q.question, q.answer) for q in clip.qa)
        for ev in clip.events:
            first, last = clip.frames[0], clip.frames[-1]
            if ev.kind == "move":
                assert answers[f"which way does the {ev.shape} move"] == ev.direction
                dx = ev.end[0] - ev.start[0]
                dy = ev.end[1] - ev.start[1]
                expected = {"left": dx < 0, "right": dx > 0, "up": dy < 0, "down": dy > 0}
                assert expected[ev.direction]
                assert any(ev.direction in c for c in clip.captions)
            elif ev.kind == "appear":
                assert not has_colour(first, ev.colour) or any(
                    o is not ev and o.colour_at(0) == ev.colour for o in clip.events
                )
                assert has_colour(last, ev.colour)
                assert answers[f"does the {ev.shape} appear or disappear"] == "appear"
            elif ev.kind == "change":
                assert answers[f"what colour does the {ev.shape} turn"] == ev.colour_after
                assert any(f"turns {ev.colour_after}" in c for c in clip.captions)
            elif ev.kind == "bounce":
                assert answers[f"which side does the {ev.shape} bounce off"] == ev.direction
                assert f"{ev.name} bounces off the {ev.direction} side" in " ".join(clip.captions)
                if sum(o.colour == ev.colour for o in clip.events) == 1:
                    # the shape is nearest the edge it bounces off at the touch frame
                    cols = [
                        np.nonzero((f == COLOUR_RGB[ev.colour]).all(-1).any(0))[0]
                        for f in clip.frames
                    ]
                    near = [c.min() if ev.direction == "left" else -c.max() for c in cols]
                    assert int(np.argmin(near)) == ev.frame and 0 < ev.frame < CONFIG.num_frames - 1
                    assert min(near[0], near[-1]) > near[ev.frame] + 4
                bounces += 1
    assert bounces >= 3


def test_two_shapes_keep_to_their_halves():
    for i in range(40):
        clip = generate_clip(i, seed=5, config=CONFIG)
        if len(clip.events) == 2:
            top, bottom = clip.events
            assert max(top.start[1], top.end[1]) + top.side <= 16
            assert min(bottom.start[1], bottom.end[1]) >= 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 2}, r"ClipConfig\.num_frames"),
        ({"max_objects": 3}, r"ClipConfig\.max_objects"),
        ({"events": ("move", "fly")}, r"ClipConfig\.events"),
        ({"colours": ("red",)}, r"ClipConfig\.colours"),
        ({"background": "red"}, r"ClipConfig\.background"),
    ],
)
def test_bad_clip_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipConfig(**kwargs)
