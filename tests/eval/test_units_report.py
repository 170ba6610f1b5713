"""Tests of the speech-units report: measures with known answers, a reference, the CLI."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from multitower.cli.main import main
from multitower.data.speech.corpus import SpeechCorpusConfig, build_speech_text_corpus
from multitower.data.speech.phones import PhoneAlignment
from multitower.data.speech.synth import Synthesizer
from multitower.data.speech.units import SpeechUnitTokenizer, UnitConfig
from multitower.eval.units import (
    ALPHA_GRID,
    edit_distance,
    frame_measures,
    held_out_cross_entropy,
    normalized_edit_distance,
    rendering_distances,
    unit_phone_labels,
)

PHONES = [f"p{i}" for i in range(12)]
SPEAKERS = ["s0", "s1", "s2", "s3"]


def _corpus(n_utts: int = 60, length: int = 80, seed: int = 0):
    """Random phone strings (runs of 1-4 frames), one speaker per utterance in turn."""
    rng = random.Random(seed)
    phones, speakers = [], []
    for i in range(n_utts):
        seq: list[str] = []
        while len(seq) < length:
            seq += [rng.choice(PHONES)] * rng.randint(1, 4)
        phones.append(seq[:length])
        speakers.append(SPEAKERS[i % len(SPEAKERS)])
    return phones, speakers


def test_units_equal_to_phones_are_pure_and_informative() -> None:
    phones, speakers = _corpus()
    units = [[PHONES.index(p) for p in seq] for seq in phones]
    m = frame_measures(units, phones, speakers)
    assert m.phone_purity == 1.0
    assert m.pnmi > 0.99
    assert abs(m.speaker_info) < 0.02  # the unit is the phone: nothing more about the speaker
    assert m.n_frames == 60 * 80 and m.n_units_used == 12 and m.n_phones == 12


def test_random_units_carry_no_phone_information() -> None:
    phones, speakers = _corpus()
    rng = random.Random(1)
    units = [[rng.randrange(16) for _ in seq] for seq in phones]
    m = frame_measures(units, phones, speakers)
    assert abs(m.pnmi) < 0.02
    assert m.phone_purity < 0.15  # ~ 1/12 chance
    assert abs(m.speaker_info) < 0.05


def test_units_that_encode_the_speaker_carry_speaker_information() -> None:
    phones, speakers = _corpus()
    units = [
        [PHONES.index(p) * len(SPEAKERS) + SPEAKERS.index(s) for p in seq]
        for seq, s in zip(phones, speakers)
    ]
    m = frame_measures(units, phones, speakers)
    assert m.speaker_info > 0.95
    assert m.pnmi > 0.97 and m.phone_purity == 1.0


def _reference_cross_entropy(target, context, fold, alpha=1.0):
    """Two-level back-off CE(target | context), written out with dictionaries."""
    values = sorted(set(target))
    total = 0.0
    for f in (0, 1):
        fit = [(t, c) for t, c, g in zip(target, context, fold) if g != f]
        n_t = Counter(t for t, _ in fit)
        n_c = Counter(c for _, c in fit)
        n_ct = Counter(fit)
        for t, c, g in zip(target, context, fold):
            if g == f:
                q0 = (n_t[t] + 1) / (len(fit) + len(values))
                q = (n_ct[(t, c)] + alpha * q0) / (n_c[c] + alpha)
                total -= math.log2(q)
    return total / len(target)


def test_cross_entropy_matches_a_readable_reference() -> None:
    rng = random.Random(3)
    target = [rng.choice("abcd") for _ in range(200)]
    context = [t if rng.random() < 0.6 else rng.choice("xyz") for t in target]
    fold = [i % 2 for i in range(200)]
    for alpha in (0.5, 1.0, 4.0):
        ours = held_out_cross_entropy(target, [context], fold, alpha=alpha)
        assert ours == pytest.approx(
            _reference_cross_entropy(target, context, fold, alpha), rel=1e-12
        )
    # Without a fixed alpha: the best of the grid.
    best = min(_reference_cross_entropy(target, context, fold, a) for a in ALPHA_GRID)
    assert held_out_cross_entropy(target, [context], fold) == pytest.approx(best, rel=1e-12)
    # No context: the add-one marginal.
    counts0 = Counter(target[1::2])
    expected = -sum(math.log2((counts0[t] + 1) / (100 + 4)) for t in target[0::2])
    counts1 = Counter(target[0::2])
    expected -= sum(math.log2((counts1[t] + 1) / (100 + 4)) for t in target[1::2])
    assert held_out_cross_entropy(target, [], fold) == pytest.approx(expected / 200)
    with pytest.raises(ValueError, match="fold"):
        held_out_cross_entropy(target, [context], [0] * 200)


def _reference_edit_distance(a, b) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
    return d[-1][-1]


def test_edit_distance_against_reference() -> None:
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 12))]
        b = [rng.randrange(4) for _ in range(rng.randrange(0, 12))]
        assert edit_distance(a, b) == _reference_edit_distance(a, b), (a, b)
    assert normalized_edit_distance([1, 1, 2, 3, 3], [1, 2, 2, 3]) == 0.0  # identical after dedup
    assert normalized_edit_distance([1, 2, 3, 4], [5, 6]) == 1.0
    assert normalized_edit_distance([1, 2, 3, 4], [1, 2, 3]) == 0.25


def test_rendering_distances_group_pairs_by_what_differs() -> None:
    voices = {
        "a": ("en-us", 150, 40),
        "b": ("en+f2", 150, 40),
        "c": ("en-us", 150, 60),
        "d": ("en-us", 190, 40),
    }
    same = [1, 2, 3, 4]
    renderings = {
        ("s1", "a"): same,
        ("s1", "b"): [9, 9, 9, 9],  # another voice: nothing shared
        ("s1", "c"): same,  # other pitch: identical
        ("s1", "d"): [1, 2, 3, 5],  # other rate: one substitution
        ("s2", "a"): [5, 6, 7, 8],
    }
    d = rendering_distances(renderings, voices)
    assert d.cross_voice == 1.0 and d.pitch_differs == 0.0 and d.rate_differs == 0.25
    assert d.different_sentence_same_speaker == 1.0  # speaker a: s1 vs s2
    assert d.n_sentences == 1
    assert d.any_speaker == pytest.approx((1 + 0 + 0.25 + 1 + 1 + 0.25) / 6)
    with pytest.raises(ValueError, match="no voice"):
        rendering_distances({("s1", "zz"): same}, voices)


def test_unit_phone_labels_take_the_phone_at_each_unit_centre() -> None:
    # 640 samples per unit (25 Hz at 16 kHz): centres at 320, 960, 1600, 2240.
    ph = PhoneAlignment((0, 500, 1000, 1700), ("_", "k", "a", "t"), 2500, 16000)
    assert unit_phone_labels(ph, 4, 640) == ["_", "k", "a", "t"]
    ph = PhoneAlignment((0, 961), ("a", "b"), 2500, 16000)
    assert unit_phone_labels(ph, 4, 640) == ["a", "a", "b", "b"]  # 960 is still "a"
    with pytest.raises(ValueError, match="do not cover"):
        unit_phone_labels(ph, 9, 640)


# ----------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    config = SpeechCorpusConfig(
        n_unaligned=16,
        n_aligned=16,
        n_test=2,
        voices=("en-us", "en+f2"),
        rates=(170,),
        pitches=(40, 60),
    )
    with Synthesizer() as synth:
        corpus = build_speech_text_corpus(root / "corpus", config, quiet=True, synthesizer=synth)
    fit = corpus.utterances("unaligned")
    config = UnitConfig(
        codebook_size=16,
        unit_rate=25,
        frames_per_unit=4,
        features="mfcc",
        deltas=2,
        cmvn="speaker",  # the report must pass each utterance's speaker
        dedup=True,
        kmeans_iters=5,
    )
    tok = SpeechUnitTokenizer.fit([u.path for u in fit], config, speakers=[u.speaker for u in fit])
    tok.save(root / "units" / "tokenizer")
    return root


def test_units_report_command(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["units-report", str(run_dir), "--sentences", "2"]) == 0
    printed = capsys.readouterr().out
    assert "pnmi" in printed and "cross_voice_distance" in printed
    report = json.loads((run_dir / "results" / "units_report.json").read_text())
    for key in ("pnmi", "phone_purity", "speaker_info", "cross_voice_distance", "units_per_second"):
        assert isinstance(report[key], float), key
    assert 0 < report["pnmi"] < 1 and 0 < report["phone_purity"] <= 1
    assert 0 <= report["cross_voice_distance"] <= 1
    assert report["frames"]["n_utterances"] == 16 and report["distances"]["n_sentences"] == 2
    assert report["unit_config"]["codebook_size"] == 16
    # 25 Hz units, deduplicated: fewer than 25 per second.
    assert 5 < report["units_per_second"] <= 25


def test_units_report_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["units-report", str(tmp_path / "empty")]) == 1
    assert "no unit tokenizer" in capsys.readouterr().err
    shutil.copytree(run_dir / "units", tmp_path / "no_corpus" / "units")
    assert main(["units-report", str(tmp_path / "no_corpus")]) == 1
    assert "no speech corpus" in capsys.readouterr().err
    # A corpus without phone labels (built before they were stored).
    shutil.copytree(run_dir, tmp_path / "old")
    for path in (tmp_path / "old" / "corpus" / "aligned").rglob("*.phones.json"):
        path.unlink()
    assert main(["units-report", str(tmp_path / "old")]) == 1
    assert "no phone labels" in capsys.readouterr().err


def test_a_truncated_report_set_holds_every_speaker() -> None:
    from types import SimpleNamespace

    from multitower.eval.units import speaker_balanced

    # stored speaker by speaker, as a corpus split is
    utts = [SimpleNamespace(speaker=s, id=f"{s}-{i}") for s in "abcd" for i in range(5)]
    picked = speaker_balanced(utts, 8)
    assert [u.speaker for u in picked] == list("abcdabcd")
    assert [u.id for u in picked[:4]] == ["a-0", "b-0", "c-0", "d-0"]
    uneven = utts[:2] + utts[5:10]  # a: 2, b: 5
    assert [u.id for u in speaker_balanced(uneven, None)] == [
        "a-0", "b-0", "a-1", "b-1", "b-2", "b-3", "b-4",
    ]  # fmt: skip
    assert len(speaker_balanced(utts, 100)) == 20
