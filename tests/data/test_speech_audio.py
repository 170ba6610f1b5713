"""Tests of audio reading/writing and the polyphase sinc resampler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from multitower.data.errors import BadRecordError
from multitower.data.speech.audio import (
    _sinc_kernel,
    audio_info,
    load_audio,
    read_audio,
    resample,
    write_audio,
    write_wav,
)


def _sine(freq: float, sr: int, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return torch.sin(2 * math.pi * freq * t)


def _peak_frequency(x: torch.Tensor, sr: int) -> float:
    spectrum = torch.fft.rfft(x * torch.hann_window(x.shape[0], dtype=x.dtype)).abs()
    return float(spectrum.argmax()) * sr / x.shape[0]


@pytest.mark.parametrize(
    ("orig", "new", "freq"),
    [(22050, 16000, 1000.0), (16000, 8000, 440.0), (8000, 16000, 2500.0), (44100, 16000, 6000.0)],
)
def test_resampled_sine_keeps_its_frequency_and_amplitude(orig: int, new: int, freq: float) -> None:
    y = resample(_sine(freq, orig), orig, new)
    assert y.shape == (math.ceil(orig * new / orig),)
    assert abs(_peak_frequency(y, new) - freq) <= new / y.shape[0]  # within one FFT bin
    # Away from the edges, the output is the same sine sampled at the new rate.
    t = torch.arange(y.shape[0], dtype=torch.float64) / new
    expected = torch.sin(2 * math.pi * freq * t)
    inner = slice(200, -200)
    torch.testing.assert_close(y[inner], expected[inner], atol=2e-3, rtol=0)


def test_resampler_removes_frequencies_above_the_new_nyquist() -> None:
    # 10 kHz cannot exist at 16 kHz: it must be filtered, not folded to 6 kHz.
    y = resample(_sine(10_000.0, 44100), 44100, 16000)
    rms = float(y[200:-200].pow(2).mean().sqrt())
    assert rms < 1e-3 * math.sqrt(0.5)  # more than 60 dB down


def test_resampler_matches_direct_sum_reference() -> None:
    """Each output sample is sum_i x[i] * h((i/orig - j/new) * cutoff), written as a loop."""
    orig_sr, new_sr = 22050, 16000
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    zc, rolloff, beta = 16, 0.945, 8.555
    cutoff = min(orig, new) * rolloff
    x = torch.randn(600, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = resample(x, orig_sr, new_sr)
    i0_beta = float(torch.special.i0(torch.tensor(beta, dtype=torch.float64)))
    for j in range(0, y.shape[0], 37):
        acc = 0.0
        for i in range(x.shape[0]):
            t = (i / orig - j / new) * cutoff
            if abs(t) >= zc:
                continue
            window = (
                float(
                    torch.special.i0(
                        torch.tensor(beta * math.sqrt(1 - (t / zc) ** 2), dtype=torch.float64)
                    )
                )
                / i0_beta
            )
            sinc = 1.0 if t == 0 else math.sin(math.pi * t) / (math.pi * t)
            acc += float(x[i]) * sinc * window * cutoff / orig
        assert abs(float(y[j]) - acc) < 1e-9, j
    kernels, width = _sinc_kernel(orig, new, zc, rolloff, beta)
    assert kernels.shape == (new, 1, 2 * width + orig)


def test_resample_batch_and_identity() -> None:
    x = torch.randn(2, 1000)
    y = resample(x, 16000, 8000)
    assert y.shape == (2, 500)
    torch.testing.assert_close(y[1], resample(x[1], 16000, 8000))
    assert torch.equal(resample(x, 16000, 16000), x)
    with pytest.raises(ValueError, match="floating"):
        resample(torch.zeros(10, dtype=torch.int16), 16000, 8000)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_read_round_trip(tmp_path: Path, suffix: str) -> None:
    x = (0.5 * _sine(300.0, 16000, 0.5)).float()
    path = tmp_path / f"a{suffix}"
    write_audio(path, x, 16000)
    y = read_audio(path, 16000)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1.5 / 32768, rtol=0)  # 16-bit quantisation
    assert audio_info(path) == (x.shape[0], 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_read_resamples_and_mixes_to_mono(tmp_path: Path) -> None:
    left = 0.5 * _sine(500.0, 22050).numpy()
    stereo = np.stack([left, left * 0.0], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 22050, subtype="FLOAT")
    y = read_audio(tmp_path / "s.wav", target_sr=16000)
    assert y.shape == (16000,)
    assert abs(_peak_frequency(y.double(), 16000) - 500.0) <= 1.0
    assert abs(float(y.abs().max()) - 0.25) < 0.01  # mean of the two channels


def test_load_audio_says_what_it_converted(tmp_path: Path) -> None:
    tone = 0.5 * _sine(440.0, 8000).numpy()  # one second at 8 kHz
    sf.write(tmp_path / "low.wav", np.stack([tone, tone], axis=1), 8000)
    loaded = load_audio(tmp_path / "low.wav", 16000)
    assert loaded.conversions == ["down-mixed 2 channels to mono", "resampled 8000 Hz to 16000 Hz"]
    assert loaded.audio.shape == (16000,) and loaded.seconds == 1.0
    assert abs(_peak_frequency(loaded.audio.double(), 16000) - 440.0) <= 1.0
    sf.write(tmp_path / "plain.wav", tone, 8000)
    assert load_audio(tmp_path / "plain.wav", 8000).conversions == []
    with pytest.raises(BadRecordError, match="is a directory, not an audio file"):
        load_audio(tmp_path)
    with pytest.raises(BadRecordError, match="is a directory, not an audio file"):
        audio_info(tmp_path)


def test_write_wav_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.wav"):
        write_wav(tmp_path / "a.flac", torch.zeros(10), 16000)
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "a.wav", torch.tensor([0.0, float("nan")]), 16000)
    with pytest.raises(ValueError, match="1-D"):
        write_wav(tmp_path / "a.wav", torch.zeros(2, 10), 16000)
    with pytest.raises(ValueError, match="suffix"):
        write_audio(tmp_path / "a.mp3", torch.zeros(10), 16000)
    write_wav(tmp_path / "loud.wav", torch.tensor([2.0, -3.0, 0.5]), 16000)  # clipped, not wrapped
    assert read_audio(tmp_path / "loud.wav").tolist() == pytest.approx(
        [32767 / 32768, -1.0, 0.5], abs=1e-4
    )


def test_bad_audio_files_raise_bad_record_error(tmp_path: Path) -> None:
    with pytest.raises(BadRecordError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(BadRecordError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "garbage.flac").write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(BadRecordError, match=r"garbage\.flac"):
        read_audio(tmp_path / "garbage.flac")
    with pytest.raises(BadRecordError, match=r"garbage\.flac"):
        audio_info(tmp_path / "garbage.flac")
    sf.write(tmp_path / "nosamples.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(BadRecordError, match="no samples"):
        read_audio(tmp_path / "nosamples.wav")
