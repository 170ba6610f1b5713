"""Tests of log-mel features, k-means speech units and unit resynthesis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from multitower.data.sentences import generate_sentences
from multitower.data.speech.features import (
    LogMel,
    add_deltas,
    dct_matrix,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    mfcc_from_logmel,
    utterance_cmvn,
)
from multitower.data.speech.kmeans import assign, kmeans
from multitower.data.speech.resynth import (
    ResynthConfig,
    griffin_lim,
    mel_to_linear,
    units_to_logmel,
    units_to_wav,
    units_to_waveform,
)
from multitower.data.speech.synth import Synthesizer, Voice
from multitower.data.speech.units import (
    SpeechUnitTokenizer,
    UnitConfig,
    dedup_units,
    smooth_runs,
)


@pytest.fixture(scope="module")
def speech() -> list[torch.Tensor]:
    voices = [Voice("en-us"), Voice("en+f2", rate=150), Voice("en-gb-x-rp+m3", pitch=60)]
    with Synthesizer() as synth:
        return [
            synth.synthesize(s, voices[i % 3]) for i, s in enumerate(generate_sentences(18, seed=4))
        ]


@pytest.fixture(scope="module")
def tokenizer(speech: list[torch.Tensor]) -> SpeechUnitTokenizer:
    return SpeechUnitTokenizer.fit(speech[:15], UnitConfig(codebook_size=32, kmeans_iters=15))


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------
def test_mel_scale_is_htk() -> None:
    assert float(hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.1)
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    f = torch.tensor([0.0, 440.0, 4000.0, 8000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)), f)


def test_mel_filterbank_matches_loop_reference() -> None:
    n_fft, n_mels, sr, f_min, f_max = 64, 10, 16000, 100.0, 7000.0
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr, f_min=f_min, f_max=f_max)
    mel_lo, mel_hi = 2595 * math.log10(1 + f_min / 700), 2595 * math.log10(1 + f_max / 700)
    corners = [
        700 * (10 ** ((mel_lo + (mel_hi - mel_lo) * i / (n_mels + 1)) / 2595) - 1)
        for i in range(n_mels + 2)
    ]
    ref = torch.zeros(n_fft // 2 + 1, n_mels, dtype=torch.float64)
    for m in range(n_mels):
        lo, centre, hi = corners[m], corners[m + 1], corners[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f <= centre:
                ref[k, m] = (f - lo) / (centre - lo)
            elif centre < f < hi:
                ref[k, m] = (hi - f) / (hi - centre)
    torch.testing.assert_close(fb, ref.float(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="cover no STFT bin"):
        mel_filterbank(17, 40, 16000)


def test_logmel_matches_numpy_dft_reference() -> None:
    sr, n_fft, hop, n_mels = 16000, 64, 16, 8
    x = torch.randn(300, generator=torch.Generator().manual_seed(0)) * 0.1
    got = LogMel(sr, n_fft, hop, n_mels, log_floor=1e-6)(x)
    xn = x.double().numpy()
    padded = np.pad(xn, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr).double().numpy()
    n_frames = 1 + len(xn) // hop
    ref = np.zeros((n_frames, n_mels))
    k = np.arange(n_fft // 2 + 1)
    for t in range(n_frames):
        frame = padded[t * hop : t * hop + n_fft] * window
        dft = np.array(
            [np.sum(frame * np.exp(-2j * np.pi * kk * np.arange(n_fft) / n_fft)) for kk in k]
        )
        ref[t] = np.log(np.maximum(np.abs(dft) ** 2 @ fb, 1e-6))
    assert got.shape == (n_frames, n_mels)
    torch.testing.assert_close(got.double(), torch.from_numpy(ref), atol=1e-3, rtol=1e-4)


def test_logmel_frame_count_and_batching() -> None:
    mel = LogMel(hop_length=320)
    assert mel.frame_rate == 50
    for n in (16000, 16001, 12345, 100):
        assert mel(torch.zeros(n)).shape == (mel.num_frames(n), 80) == (1 + n // 320, 80)
    x = torch.randn(2, 8000)
    torch.testing.assert_close(mel(x)[1], mel(x[1]))
    assert float(mel(torch.zeros(1000)).max()) == pytest.approx(
        math.log(1e-5)
    )  # silence sits on the floor


# ----------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 8, generator=g) * 10  # (6, 8), far apart relative to unit noise
    truth = torch.arange(6).repeat_interleave(200)  # (1200,)
    x = centres[truth] + torch.randn(1200, 8, generator=g)
    result = kmeans(x, 6, n_iter=50, seed=1)
    labels, _ = assign(x, result.centroids)
    # Every true cluster maps to exactly one found cluster, and vice versa.
    pairs = {(int(t), int(p)) for t, p in zip(truth, labels)}
    assert len(pairs) == 6 and len({p for _, p in pairs}) == 6
    mapping = dict(pairs)
    for t in range(6):
        assert float((result.centroids[mapping[t]] - centres[t]).norm()) < 0.5
    assert result.inertia == pytest.approx(
        float(((x - result.centroids[labels]) ** 2).sum()), rel=1e-4
    )
    again = kmeans(x, 6, n_iter=50, seed=1)
    assert torch.equal(again.centroids, result.centroids)


def test_kmeans_keeps_iterating_until_converged() -> None:
    x = torch.randn(3000, 4, generator=torch.Generator().manual_seed(5))  # one blob: slow to settle
    one = kmeans(x, 16, n_iter=1, seed=0)
    many = kmeans(x, 16, n_iter=100, seed=0, tol=1e-6)
    assert 2 < many.n_iter < 100
    assert many.inertia < 0.97 * one.inertia
    # Seeding on a subsample still gives a good solution.
    sub = kmeans(x, 16, n_iter=100, seed=0, tol=1e-6, init_sample=200)
    assert sub.inertia < 1.05 * many.inertia


def test_kmeans_with_fewer_distinct_points_than_clusters() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]).repeat(
        10, 1
    )  # 3 distinct points, 30 rows
    result = kmeans(x, 4, seed=0)
    assert torch.isfinite(result.centroids).all()
    assert result.inertia == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="N >= k"):
        kmeans(torch.randn(3, 2), 4)


def test_assign_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn(50, 5, generator=g), torch.randn(7, 5, generator=g)
    labels, dists = assign(x, c, chunk_size=8)
    brute = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (50, 7)
    assert torch.equal(labels, brute.argmin(dim=1))
    torch.testing.assert_close(dists, brute.min(dim=1).values, atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------
# Speech unit tokenizer
# ----------------------------------------------------------------------------
def test_unit_rate_matches_audio_duration(
    speech: list[torch.Tensor], tokenizer: SpeechUnitTokenizer
) -> None:
    for audio in speech[15:]:
        units = tokenizer.encode(audio)
        assert units.dtype == torch.long and int(units.min()) >= 0 and int(units.max()) < 32
        seconds = audio.shape[0] / 16000
        assert units.shape[0] == math.ceil(seconds * 50)
    # A 25 Hz tokenizer gives half as many units.
    slow = SpeechUnitTokenizer.fit(
        speech[:6],
        UnitConfig(codebook_size=16, unit_rate=25, frames_per_unit=4, context=0, kmeans_iters=5),
    )
    audio = speech[16]
    assert slow.encode(audio).shape[0] == math.ceil(audio.shape[0] / 16000 * 25)
    assert slow.config.hop_length == 160 and slow.config.feature_dim == 4 * 80


def test_units_carry_phonetic_information(
    speech: list[torch.Tensor], tokenizer: SpeechUnitTokenizer
) -> None:
    # Silence and speech must not share units: leading silence gets units that
    # are rare inside loud speech frames.
    audio = speech[15]
    units = tokenizer.encode(audio)
    padded = torch.nn.functional.pad(audio, (0, units.shape[0] * 320 - audio.shape[0]))
    energy = padded.reshape(-1, 320).pow(2).mean(dim=1)  # (n_units,)
    quiet_units = set(units[energy < 1e-7].tolist())
    loud_units = units[energy > energy.median()].tolist()
    assert quiet_units and loud_units
    assert sum(u in quiet_units for u in loud_units) < 0.1 * len(loud_units)
    assert len(set(units.tolist())) >= 8  # many units in use, not a collapsed codebook


def test_dedup(speech: list[torch.Tensor], tokenizer: SpeechUnitTokenizer) -> None:
    values, runs = dedup_units(torch.tensor([3, 3, 1, 1, 1, 3, 7]))
    assert values.tolist() == [3, 1, 3, 7] and runs.tolist() == [2, 3, 1, 1]
    assert dedup_units(torch.zeros(0, dtype=torch.long))[0].numel() == 0
    full = tokenizer.encode(speech[15])
    deduped = tokenizer.encode(speech[15], dedup=True)
    assert torch.equal(deduped, torch.unique_consecutive(full))
    assert deduped.shape[0] < full.shape[0]
    assert tokenizer.mean_run_length > 1.0


def test_save_load_round_trip(
    tmp_path: Path, speech: list[torch.Tensor], tokenizer: SpeechUnitTokenizer
) -> None:
    tokenizer.save(tmp_path / "units")
    loaded = SpeechUnitTokenizer.load(tmp_path / "units")
    assert loaded.config == tokenizer.config and loaded.mean_run_length == tokenizer.mean_run_length
    for audio in speech[15:]:
        assert torch.equal(loaded.encode(audio), tokenizer.encode(audio))
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == [
        "unit_tokenizer.json",
        "unit_tokenizer.safetensors",
    ]


def test_load_rejects_wrong_shapes_and_fields(
    tmp_path: Path, tokenizer: SpeechUnitTokenizer
) -> None:
    d = tmp_path / "units"
    tokenizer.save(d)
    save_file(
        {"centroids": torch.zeros(32, 99), "mean": tokenizer.mean, "std": tokenizer.std},
        str(d / "unit_tokenizer.safetensors"),
    )
    with pytest.raises(ValueError, match="SHA-256 differs"):
        SpeechUnitTokenizer.load(d)  # the config recorded the hash of the saved tensors
    meta = json.loads((d / "unit_tokenizer.json").read_text())
    del meta["tensors_sha256"]  # as in a file saved before hashes: the shapes are still checked
    (d / "unit_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"centroids has shape \(32, 99\), expected \(32, 320\)"):
        SpeechUnitTokenizer.load(d)
    tokenizer.save(d)
    meta = json.loads((d / "unit_tokenizer.json").read_text())
    meta["config"]["codebook_size"] = 64  # config no longer matches the tensors
    (d / "unit_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="centroids"):
        SpeechUnitTokenizer.load(d)
    meta["config"]["mystery"] = 1
    (d / "unit_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown fields"):
        SpeechUnitTokenizer.load(d)
    (d / "unit_tokenizer.safetensors").write_bytes(b"garbage")
    tokenizer.save(tmp_path / "ok")
    (d / "unit_tokenizer.json").write_text((tmp_path / "ok" / "unit_tokenizer.json").read_text())
    with pytest.raises(ValueError, match="safetensors"):
        SpeechUnitTokenizer.load(d)
    with pytest.raises(FileNotFoundError):
        SpeechUnitTokenizer.load(tmp_path / "nothing")


def test_flipped_tensor_bytes_are_detected(tmp_path: Path, tokenizer: SpeechUnitTokenizer) -> None:
    tokenizer.save(tmp_path / "units")
    path = tmp_path / "units" / "unit_tokenizer.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's data: still a readable safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 differs"):
        SpeechUnitTokenizer.load(tmp_path / "units")


def test_unit_config_validation() -> None:
    with pytest.raises(ValueError, match="codebook_size"):
        UnitConfig(codebook_size=1)
    with pytest.raises(ValueError, match="multiple"):
        UnitConfig(
            unit_rate=30, frames_per_unit=1, sample_rate=16000, n_fft=400
        )  # 16000 / 30 not whole
    with pytest.raises(ValueError, match="context"):
        UnitConfig(context=-1)
    assert UnitConfig(unit_rate=50, frames_per_unit=1).hop_length == 320


def test_fit_needs_enough_audio() -> None:
    with pytest.raises(ValueError, match="codebook_size"):
        SpeechUnitTokenizer.fit(
            [torch.randn(1600)], UnitConfig(codebook_size=64, max_fit_vectors=100)
        )
    with pytest.raises(ValueError, match="no audio"):
        SpeechUnitTokenizer.fit([], UnitConfig())


# ----------------------------------------------------------------------------
# Resynthesis
# ----------------------------------------------------------------------------
def test_griffin_lim_recovers_a_consistent_phase(speech: list[torch.Tensor]) -> None:
    mel = LogMel()
    audio = speech[0]
    magnitude = mel.power_spectrogram(audio).sqrt().T  # (F, n_frames)

    def spectral_convergence(n_iter: int) -> float:
        y = griffin_lim(
            magnitude,
            n_fft=400,
            hop_length=160,
            window=mel.window,
            length=audio.shape[0],
            n_iter=n_iter,
        )
        assert y.shape == audio.shape
        return float((mel.power_spectrogram(y).sqrt().T - magnitude).norm() / magnitude.norm())

    assert spectral_convergence(0) > 0.4  # random phase
    assert spectral_convergence(32) < 0.2


def test_mel_to_linear_is_nonnegative_least_squares(speech: list[torch.Tensor]) -> None:
    mel = LogMel()
    power = mel.power_spectrogram(speech[1])  # (n, F)
    target = power @ mel.fb  # (n, M)
    linear = mel_to_linear(target, mel.fb)
    assert float(linear.min()) >= 0
    assert float((linear @ mel.fb - target).norm() / target.norm()) < 0.02


def test_resynthesis_length_and_values(
    tmp_path: Path, speech: list[torch.Tensor], tokenizer: SpeechUnitTokenizer
) -> None:
    units = tokenizer.encode(speech[16])
    fast = ResynthConfig(griffin_lim_iters=8)
    audio = units_to_waveform(units, tokenizer, config=fast)
    assert audio.shape == (units.shape[0] * 320,) and torch.isfinite(audio).all()
    assert float(audio.abs().max()) == pytest.approx(0.9, abs=1e-4)
    # The rendering has the spectral shape the units describe.
    target = units_to_logmel(units, tokenizer)  # (n_frames, 80)
    got = LogMel()(audio)[: target.shape[0]]
    assert float(torch.corrcoef(torch.stack([target.flatten(), got.flatten()]))[0, 1]) > 0.9
    # De-duplicated units with their true run lengths give back the same length.
    values, runs = dedup_units(units)
    assert units_to_waveform(values, tokenizer, run_length=runs, config=fast).shape == audio.shape
    # Without run lengths, each unit is held for the mean run length measured at fit time.
    hold = max(1, round(tokenizer.mean_run_length))
    assert units_to_waveform(values, tokenizer, deduped=True, config=fast).shape == (
        values.shape[0] * hold * 320,
    )
    written = units_to_wav(tmp_path / "u.wav", units[:50], tokenizer, config=fast)
    assert (tmp_path / "u.wav").is_file() and written.shape == (50 * 320,)
    with pytest.raises(ValueError, match="unit ids"):
        units_to_waveform(torch.tensor([0, 32]), tokenizer)


# ----------------------------------------------------------------------------
# Feature options: MFCC, deltas, CMVN, run smoothing
# ----------------------------------------------------------------------------
def test_dct_matches_loop_reference_and_is_orthonormal() -> None:
    n = 8
    ref = torch.zeros(n, n, dtype=torch.float64)
    for m in range(n):
        for k in range(n):
            scale = math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)
            ref[m, k] = scale * math.cos(math.pi * k * (2 * m + 1) / (2 * n))
    torch.testing.assert_close(dct_matrix(n, n), ref.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        dct_matrix(n, n).T @ dct_matrix(n, n), torch.eye(n), atol=1e-5, rtol=0
    )
    x = torch.randn(5, n)
    torch.testing.assert_close(mfcc_from_logmel(x, 3), x @ ref[:, :3].float(), atol=1e-5, rtol=0)


def test_deltas_match_the_regression_formula() -> None:
    x = torch.randn(9, 3)
    d = add_deltas(x, 2)
    assert d.shape == (9, 9)
    torch.testing.assert_close(d[:, :3], x)
    padded = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]])
    for t in range(9):
        expected = (1 * (padded[t + 3] - padded[t + 1]) + 2 * (padded[t + 4] - padded[t])) / 10
        torch.testing.assert_close(d[t, 3:6], expected)
    ramp = torch.arange(10.0)[:, None]  # a linear ramp: delta 1 inside, delta-delta 0
    dd = add_deltas(ramp, 2)
    torch.testing.assert_close(dd[2:-2, 1], torch.ones(6))
    torch.testing.assert_close(dd[4:-4, 2], torch.zeros(2))
    with pytest.raises(ValueError, match="delta order"):
        add_deltas(x, 3)


def test_utterance_cmvn() -> None:
    x = torch.randn(50, 4) * torch.tensor([1.0, 2.0, 3.0, 0.0]) + 7.0
    y = utterance_cmvn(x)
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y[:, :3].std(dim=0, unbiased=False), torch.ones(3), atol=1e-5, rtol=0
    )
    assert torch.equal(y[:, 3], torch.zeros(50))  # a constant dimension is only centred


def test_smooth_runs() -> None:
    units = torch.tensor([5, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4, 6])
    assert smooth_runs(units, 1).tolist() == units.tolist()
    assert smooth_runs(units, 2).tolist() == [1, 1, 1, 1, 1, 3, 3, 3, 4, 4, 4, 4]
    assert smooth_runs(torch.tensor([1, 2, 3]), 2).tolist() == [1, 2, 3]  # no long run
    assert smooth_runs(units, 3).shape == units.shape


def test_feature_options_fit_encode_and_round_trip(
    tmp_path: Path, speech: list[torch.Tensor]
) -> None:
    speakers = ["a", "b", "c"] * 5
    config = UnitConfig(
        codebook_size=16,
        unit_rate=25,
        frames_per_unit=4,
        features="mfcc",
        deltas=2,
        cmvn="speaker",
        min_run=2,
        kmeans_iters=5,
    )
    assert config.frame_dim == 39 and config.feature_dim == 6 * 39
    tok = SpeechUnitTokenizer.fit(speech[:15], config, speakers=speakers)
    assert sorted(tok.speaker_stats) == ["a", "b", "c"]
    units = tok.encode(speech[15], speaker="a", dedup=False)
    assert units.shape == (config.num_units(speech[15].shape[0]),)
    _, runs = dedup_units(units)
    assert int(runs.min()) >= 2  # smoothed: no single-unit runs
    # Speaker statistics change the units; unknown speakers are an error until added.
    assert not torch.equal(units, tok.encode(speech[15], speaker="b", dedup=False))
    with pytest.raises(ValueError, match="pass speaker"):
        tok.encode(speech[15])
    with pytest.raises(ValueError, match="add_speaker"):
        tok.encode(speech[15], speaker="new")
    tok.add_speaker("new", speech[15:])
    tok.encode(speech[15], speaker="new")
    assert tok.centroid_logmel().shape == (16, 4, 80)  # measured at fit time
    tok.save(tmp_path / "t")
    loaded = SpeechUnitTokenizer.load(tmp_path / "t")
    assert loaded.config == config and sorted(loaded.speaker_stats) == ["a", "b", "c", "new"]
    assert torch.equal(loaded.encode(speech[16], speaker="b"), tok.encode(speech[16], speaker="b"))
    torch.testing.assert_close(loaded.centroid_logmel(), tok.centroid_logmel())
    with pytest.raises(ValueError, match="speakers="):
        SpeechUnitTokenizer.fit(speech[:15], config)
    # Utterance CMVN: a quieter copy of an utterance keeps (nearly: the log floor
    # of silent frames is not scale-free) its units; without CMVN most change.
    agreement = {}
    for cmvn in ("utterance", "none"):
        tok = SpeechUnitTokenizer.fit(
            speech[:15], UnitConfig(codebook_size=16, cmvn=cmvn, kmeans_iters=5)
        )
        quiet, loud = tok.encode(speech[16] * 0.25), tok.encode(speech[16])
        agreement[cmvn] = float((quiet == loud).float().mean())
    assert agreement["utterance"] > 0.9 > 0.5 > agreement["none"], agreement


def test_version_1_tokenizer_files_still_load(
    tmp_path: Path, speech: list[torch.Tensor], tokenizer: SpeechUnitTokenizer
) -> None:
    d = tmp_path / "v1"
    tokenizer.save(d)
    meta = json.loads((d / "unit_tokenizer.json").read_text())
    meta["version"] = 1
    del meta["speakers"]
    for name in ("features", "n_mfcc", "deltas", "cmvn", "min_run"):
        del meta["config"][name]  # a v1 file has none of the feature fields
    (d / "unit_tokenizer.json").write_text(json.dumps(meta))
    loaded = SpeechUnitTokenizer.load(d)
    assert loaded.config == tokenizer.config
    assert torch.equal(loaded.encode(speech[16]), tokenizer.encode(speech[16]))
    meta["version"] = 7
    (d / "unit_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 1 or 2"):
        SpeechUnitTokenizer.load(d)


def test_feature_option_validation() -> None:
    for kwargs, field in (
        ({"features": "spectrogram"}, "features"),
        ({"cmvn": "global"}, "cmvn"),
        ({"deltas": 3}, "deltas"),
        ({"n_mfcc": 0}, "n_mfcc"),
        ({"n_mfcc": 81}, "n_mfcc"),
        ({"min_run": 0}, "min_run"),
    ):
        with pytest.raises(ValueError, match=f"UnitConfig.{field}"):
            UnitConfig(**kwargs)


# ----------------------------------------------------------------------------
# VTLN and duration-penalised assignment
def test_penalised_assign_matches_brute_force() -> None:
    import itertools

    from multitower.data.speech.kmeans import penalised_assign

    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(6, 3, generator=g), torch.randn(3, 3, generator=g)
    dist = torch.cdist(x.double(), c.double()).pow(2)  # (6, 3)
    for cost in (0.0, 0.3, 1.0, 3.0, 100.0):
        best = min(
            itertools.product(range(3), repeat=6),
            key=lambda z, cost=cost: (
                sum(float(dist[t, z[t]]) for t in range(6))
                + cost * sum(z[t] != z[t - 1] for t in range(1, 6))
            ),
        )
        assert penalised_assign(x, c, cost).tolist() == list(best), cost
    assert torch.equal(penalised_assign(x, c, 0.0), assign(x, c)[0])
    assert penalised_assign(x, c, 1e6).unique().numel() == 1  # one run
    with pytest.raises(ValueError, match="switch_cost"):
        penalised_assign(x, c, -1.0)


def test_warped_filterbank() -> None:
    from multitower.data.speech.features import VTLN_WARPS, warp_frequencies

    f = torch.linspace(0, 8000, 201, dtype=torch.float64)
    for w in VTLN_WARPS:
        fw = warp_frequencies(f, w, 8000.0)
        assert float(fw[0]) == 0 and abs(float(fw[-1]) - 8000) < 1e-6
        assert bool((fw.diff() > 0).all())  # monotonic: no band folds over
    torch.testing.assert_close(
        mel_filterbank(201, 80, 16000, warp=1.0), mel_filterbank(201, 80, 16000)
    )
    # A tone at f Hz peaks in the warp-w filterbank where the plain one sees w * f.
    plain, up = mel_filterbank(201, 40, 16000), mel_filterbank(201, 40, 16000, warp=1.2)
    bin_1000, bin_1200 = 25, 30  # 40 Hz per bin
    assert int(up[bin_1000].argmax()) == int(plain[bin_1200].argmax())
    with pytest.raises(ValueError, match="warp"):
        mel_filterbank(201, 80, 16000, warp=3.0)


def test_vtln_and_run_penalty_fit_encode_and_round_trip(
    tmp_path: Path, speech: list[torch.Tensor]
) -> None:
    from multitower.data.speech.features import VTLN_WARPS

    base = {
        "codebook_size": 16,
        "features": "mfcc",
        "deltas": 2,
        "cmvn": "utterance",
        "kmeans_iters": 5,
    }
    tok = SpeechUnitTokenizer.fit(
        speech[:15], UnitConfig(**base, vtln=True, vtln_iters=1, run_penalty=2.0)
    )
    plain = SpeechUnitTokenizer.fit(speech[:15], UnitConfig(**base))
    assert tok.switch_cost > 0 and plain.switch_cost == 0
    warps = {tok.warp(a) for a in speech}
    assert warps <= set(VTLN_WARPS) and len(warps) > 1  # three voices: not all one warp
    assert plain.warp(speech[0]) == 1.0
    # The chosen warp is the one closest to the codebook.
    power = tok._power(speech[16])
    scores = {
        w: float(assign(tok._vectors_at(power, w, None), tok.centroids)[1].mean())
        for w in VTLN_WARPS
    }
    assert tok.warp(speech[16]) == min(scores, key=scores.__getitem__)
    # The penalty lengthens runs: fewer changes of unit than the nearest centroid.
    feats = tok.features(speech[16])
    penalised = tok.encode(speech[16], dedup=False)
    nearest = assign(feats, tok.centroids)[0]
    assert penalised.shape == nearest.shape
    assert int((penalised.diff() != 0).sum()) < int((nearest.diff() != 0).sum())
    assert tok.centroid_logmel().shape == (16, 2, 80)  # unwarped log-mel, for resynthesis
    tok.save(tmp_path / "t")
    loaded = SpeechUnitTokenizer.load(tmp_path / "t")
    assert loaded.config == tok.config and loaded.switch_cost == tok.switch_cost
    for a in speech[15:]:
        assert torch.equal(loaded.encode(a), tok.encode(a))


def test_vtln_option_validation() -> None:
    for kwargs, match in (
        ({"vtln": True, "cmvn": "speaker"}, "vtln"),
        ({"vtln_iters": 0}, "vtln_iters"),
        ({"run_penalty": -1.0}, "run_penalty"),
        ({"run_penalty": float("nan")}, "run_penalty"),
    ):
        with pytest.raises(ValueError, match=match):
            UnitConfig(**kwargs)
    assert not UnitConfig(vtln=True).plain_logmel  # warped centroids are not the speech's log-mel
