"""Compiled cached decoding: one graph per generating tower, the same tokens as eager."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from multitower.generation import CompileOptions, generate
from multitower.interleave import Segment
from multitower.models.decoder import DecoderConfig
from multitower.models.zipper import Zipper, ZipperConfig

TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=32, num_layers=2, num_heads=4)
PROMPTS = [[Segment("speech", [5, 6])], [Segment("speech", [7, 8, 9, 11])]]


def zipper() -> Zipper:
    torch.manual_seed(0)
    z = Zipper(ZipperConfig({"text": TEXT, "speech": SPEECH}, input_projection="paper"))
    with torch.no_grad():
        for name, p in z.named_parameters():
            if "gate" in name:
                p.fill_(0.6)  # open gates: the fusion blocks change the logits
    return z.eval()


def test_compiled_decode_step_has_no_graph_break_and_same_tokens():
    model = zipper()
    eager = generate(model, PROMPTS, ["text", "speech"], max_new_tokens=6)
    torch._dynamo.reset()
    counters.clear()
    # Trace only (backend "eager"): the graph, not the kernels, is what this checks.
    options = CompileOptions(backend="eager", fullgraph=True)  # fullgraph: a break raises
    for _ in range(2):  # a second call (new caches) must reuse the graphs
        compiled = generate(model, PROMPTS, ["text", "speech"], max_new_tokens=6, compile=options)
        assert compiled == eager
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 2  # one step graph per generating tower


def test_compile_needs_the_cache():
    with pytest.raises(ValueError, match="use_cache"):
        generate(zipper(), PROMPTS, ["text"], max_new_tokens=2, use_cache=False, compile=True)
    with pytest.raises(ValueError, match="mode"):
        CompileOptions(mode="fast")


@pytest.mark.slow
def test_inductor_compiled_decoding_gives_the_eager_tokens():
    model = zipper()
    eager = generate(model, PROMPTS, ["speech"], max_new_tokens=8)
    torch._dynamo.reset()
    assert generate(model, PROMPTS, ["speech"], max_new_tokens=8, compile=True) == eager
