"""Tests of espeak-ng synthesis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from multitower.data.speech.synth import Synthesizer, Voice, available_voices

SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def synth() -> Iterator[Synthesizer]:
    with Synthesizer() as s:
        yield s


def _median_f0(audio: torch.Tensor, sr: int = 16000) -> float:
    """Median pitch of the loudest frames, from the autocorrelation peak in 50-400 Hz."""
    frames = audio.unfold(0, 640, 320)  # (n, 640): 40 ms frames
    energy = frames.pow(2).sum(dim=1)
    loud = frames[energy > 0.3 * energy.max()]
    f0 = []
    for frame in loud:
        frame = frame - frame.mean()
        ac = torch.fft.irfft(torch.fft.rfft(frame, n=1280).abs().pow(2))[:640]
        lo, hi = sr // 400, sr // 50
        f0.append(sr / (lo + int(ac[lo:hi].argmax())))
    return float(torch.tensor(f0).median())


def test_synthesis_is_speech_like(synth: Synthesizer) -> None:
    audio = synth.synthesize(SENTENCE)
    assert audio.dtype == torch.float32 and audio.dim() == 1
    seconds = audio.shape[0] / 16000
    assert 1.5 < seconds < 5.0  # nine words at 175 words per minute is about 3 s
    assert float(audio.abs().max()) <= 1.0
    assert float(audio.pow(2).mean().sqrt()) > 0.02  # not silent
    # Speech has pauses and loud parts: frame energies vary a lot.
    energy = audio.unfold(0, 320, 320).pow(2).mean(dim=1)
    assert float(energy.min()) < 1e-4 * float(energy.max())  # pauses
    assert float(energy.max()) > 5 * float(energy.median())  # stressed syllables


def test_same_request_gives_same_samples_regardless_of_order(synth: Synthesizer) -> None:
    voice = Voice("en+f2", rate=160, pitch=45)  # a breathy variant: uses espeak's noise generator
    first = synth.synthesize(SENTENCE, voice)
    synth.synthesize("something else entirely in between", Voice("en-gb-x-rp+m3"))
    synth.synthesize(SENTENCE, Voice("en-us", rate=300))
    assert torch.equal(synth.synthesize(SENTENCE, voice), first)
    with Synthesizer() as fresh:
        assert torch.equal(fresh.synthesize(SENTENCE, voice), first)


def test_voice_rate_and_pitch_change_the_audio(synth: Synthesizer) -> None:
    slow = synth.synthesize(SENTENCE, Voice("en-us", rate=120))
    fast = synth.synthesize(SENTENCE, Voice("en-us", rate=300))
    assert fast.shape[0] < 0.7 * slow.shape[0]
    low = _median_f0(synth.synthesize(SENTENCE, Voice("en-us", pitch=10)))
    high = _median_f0(synth.synthesize(SENTENCE, Voice("en-us", pitch=90)))
    assert high > 1.2 * low, (low, high)
    a = synth.synthesize(SENTENCE, Voice("en-us"))
    b = synth.synthesize(SENTENCE, Voice("en+f2"))
    assert a.shape != b.shape or not torch.equal(a, b)


def test_available_voices_include_the_documented_ones() -> None:
    voices = available_voices()
    assert {"en", "en-us", "en-gb-x-rp"} <= set(voices["languages"])
    assert {"m3", "f2"} <= set(voices["variants"])


def test_bad_requests(synth: Synthesizer) -> None:
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("   ")
    with pytest.raises(ValueError, match="variant 'nosuch'"):
        synth.synthesize("hello", Voice("en+nosuch"))
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        synth.synthesize("hello", Voice("xx-nowhere"))
    # The worker survives errors.
    assert synth.synthesize("hello").shape[0] > 1000
    with pytest.raises(ValueError, match="rate"):
        Voice("en", rate=10)
    with pytest.raises(ValueError, match="pitch"):
        Voice("en", pitch=101)
    with pytest.raises(ValueError, match="name"):
        Voice("en us; rm -rf")


def test_native_rate_output_and_restart_after_close() -> None:
    s = Synthesizer(sample_rate=22050)
    samples, rate = s.synthesize_native("hello world")
    assert rate == 22050 and samples.dtype.itemsize == 2
    audio = s.synthesize("hello world")
    assert audio.shape[0] == samples.shape[0]  # no resampling at the native rate
    s.close()
    assert s.synthesize("hello world").shape == audio.shape  # a new worker starts on demand
    s.close()
