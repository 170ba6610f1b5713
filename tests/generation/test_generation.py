"""Decoding: cache parity, per-example stopping, sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multitower.generation import generate, sample_next_token
from multitower.interleave import Segment
from multitower.models.baseline import expand_vocabulary
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.zipper import Zipper, ZipperConfig

TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=4, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=48, num_layers=2, num_heads=4)


class EosWhenDivisible(nn.Module):
    """Wraps a model so that after a token id divisible by 5 its eos gets a large logit.

    The bias depends only on the token at that position, so cached and uncached
    decoding must agree, while examples stop at different steps.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def modalities(self):
        return self.model.modalities

    @property
    def max_seq_lens(self):
        return self.model.max_seq_lens

    def setup_caches(self, batch, max_len):
        self.model.setup_caches(batch, max_len)

    def remove_caches(self):
        self.model.remove_caches()

    def forward(self, batch):
        out = self.model(batch)
        for m in self.modalities.values():
            if m.tower in out:
                tok = batch[m.tower].tokens
                hit = (tok % 5 == 0) & (tok >= m.offset + 3) & (tok < m.offset + m.vocab_size)
                out[m.tower][..., m.offset + m.eos_id] += 30.0 * hit
        return out


def zipper(**kw) -> Zipper:
    torch.manual_seed(0)
    z = Zipper(ZipperConfig({"text": TEXT, "speech": SPEECH}, input_projection="paper", **kw))
    with torch.no_grad():
        for name, p in z.named_parameters():
            if "gate" in name:
                p.fill_(0.6)
    return z.double().eval()


def positioned_zipper() -> Zipper:
    """Cross-attention with rotary positions on a shared axis (text token = 2.5 units)."""
    return zipper(position_scales={"text": 2.5, "speech": 1.0})


def biased_zipper() -> Zipper:
    """Positioned cross-attention plus the learned distance bias (ALiBi slopes)."""
    return zipper(position_scales={"text": 2.5, "speech": 1.0}, cross_distance_bias=True)


def baseline():
    torch.manual_seed(0)
    return expand_vocabulary(DecoderTower(TEXT), "text", {"speech": 30}).double().eval()


PROMPTS = {
    "asr": (
        [
            [Segment("speech", [5, 6, 7, 8, 9, 10])],
            [Segment("speech", [4, 4])],
            [Segment("speech", [11] * 9)],
        ],
        ["text"],
    ),
    "tts": (
        [[Segment("text", [5, 6, 7])], [Segment("text", [8])], [Segment("text", [9, 9, 9, 9, 12])]],
        ["speech"],
    ),
    "two_outputs": (
        [[Segment("speech", [5, 6])], [Segment("speech", [7, 8, 9, 11])]],
        ["text", "speech"],
    ),
}


@pytest.mark.parametrize(
    "build",
    [zipper, positioned_zipper, biased_zipper, baseline],
    ids=["zipper", "positioned", "distance_bias", "baseline"],
)
@pytest.mark.parametrize("case", sorted(PROMPTS))
def test_greedy_cache_parity_with_per_example_stopping(build, case):
    model = EosWhenDivisible(build())
    prompts, outputs = PROMPTS[case]
    cached = generate(model, prompts, outputs, max_new_tokens=10)
    full = generate(model, prompts, outputs, max_new_tokens=10, use_cache=False)
    assert cached == full
    for example in cached:
        assert [s.modality for s in example] == outputs
        assert all(len(s.tokens) <= 10 for s in example)


def test_examples_stop_independently():
    model = EosWhenDivisible(zipper())
    prompts, outputs = PROMPTS["asr"]
    g = torch.Generator().manual_seed(0)
    out = generate(model, prompts, outputs, max_new_tokens=25, temperature=1.0, generator=g)
    lengths = [len(ex[0].tokens) for ex in out]
    assert len(set(lengths)) > 1, lengths
    for ex in out:  # a token divisible by 5 makes eos (almost) certain: it can only come last
        assert all(t % 5 for t in ex[0].tokens[:-1])


def test_sampled_decoding_is_seeded_and_cache_independent():
    model = zipper()
    prompts, outputs = PROMPTS["two_outputs"]
    kw = dict(max_new_tokens=8, temperature=1.0, top_k=10, top_p=0.9)
    a = generate(model, prompts, outputs, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(
        model, prompts, outputs, generator=torch.Generator().manual_seed(3), use_cache=False, **kw
    )
    c = generate(model, prompts, outputs, generator=torch.Generator().manual_seed(4), **kw)
    assert a == b
    assert a != c


def test_max_new_tokens_per_modality():
    out = generate(
        zipper(),
        PROMPTS["two_outputs"][0],
        ["text", "speech"],
        max_new_tokens={"text": 3, "speech": 5},
    )
    for ex in out:
        assert len(ex[0].tokens) <= 3 and len(ex[1].tokens) <= 5
    with pytest.raises(ValueError, match="no entry for output modality"):
        generate(zipper(), PROMPTS["asr"][0], ["text"], max_new_tokens={"speech": 3})


def test_baseline_only_emits_the_requested_modality_ids():
    model = baseline()
    out = generate(model, PROMPTS["tts"][0], ["speech"], max_new_tokens=12)
    for ex in out:
        assert all(3 <= t < 30 for t in ex[0].tokens)


def test_prompts_longer_than_a_towers_max_seq_len_are_refused():
    short = DecoderConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, max_seq_len=16)
    model = Zipper(ZipperConfig({"text": short, "speech": SPEECH})).eval()
    long_text = [[Segment("text", [5] * 20)]]  # 22 tokens with bos/eos
    with pytest.raises(
        ValueError, match=r"22 tokens long in tower 'text', longer than its max_seq_len 16"
    ):
        generate(model, long_text, ["speech"], max_new_tokens=4)
    # the prompt fits, but not with the room its own tower's output needs
    with pytest.raises(ValueError, match=r"tower 'text' takes at most max_seq_len 16 .* need 19"):
        generate(model, [[Segment("text", [5] * 5)]], ["text"], max_new_tokens=10)
    # the other tower's output counts against that tower only: 7 + 2 + 7 <= 16
    out = generate(model, [[Segment("speech", [5] * 5)]], ["text"], max_new_tokens=7)
    assert len(out[0][0].tokens) <= 7
    joint = expand_vocabulary(DecoderTower(short), "text", {"speech": 30}).eval()
    with pytest.raises(ValueError, match=r"in tower 'joint', longer than its max_seq_len 16"):
        generate(joint, long_text, ["speech"], max_new_tokens=4)


def test_sample_next_token_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert sample_next_token(logits).item() == 3
    g = torch.Generator().manual_seed(0)
    picks = {sample_next_token(logits, g, temperature=1.0, top_k=2).item() for _ in range(200)}
    assert picks == {2, 3}
    # top_p: probabilities ~ [0.03, 0.09, 0.24, 0.64]: 0.6 keeps only the top token
    picks = {sample_next_token(logits, g, temperature=1.0, top_p=0.6).item() for _ in range(100)}
    assert picks == {3}
    picks = {sample_next_token(logits, g, temperature=1.0, top_p=0.8).item() for _ in range(300)}
    assert picks == {2, 3}
    with pytest.raises(ValueError, match="top_p"):
        sample_next_token(logits, g, temperature=1.0, top_p=0.0)
