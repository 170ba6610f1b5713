"""Tests of phone labels: espeak-ng phoneme events, their cleaning and their storage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from multitower.data.errors import BadRecordError
from multitower.data.speech.corpus import SpeechCorpusConfig, build_speech_text_corpus
from multitower.data.speech.librispeech import LibriSpeechWriter, read_librispeech
from multitower.data.speech.phones import (
    PhoneAlignment,
    clean_phone_label,
    phones_from_events,
    read_phone_alignments,
)
from multitower.data.speech.synth import Synthesizer, Voice


@pytest.fixture(scope="module")
def synth() -> Iterator[Synthesizer]:
    with Synthesizer() as s:
        yield s


def test_clean_phone_label() -> None:
    assert clean_phone_label("'a") == "a"
    assert clean_phone_label(",aI") == "aI"
    assert clean_phone_label("'3:") == "3:"
    assert clean_phone_label("@2") == "@2"  # a distinct espeak phoneme, not a stress mark
    assert clean_phone_label("_:") == "_"
    assert clean_phone_label("_!") == "_"
    with pytest.raises(ValueError, match="no phoneme name"):
        clean_phone_label("'")


def test_phones_from_events_tiles_the_audio() -> None:
    # 22,050 Hz events -> 16 kHz: starts scale by 16000 / 22050; zero-length and
    # trailing events vanish, equal neighbours merge, the lead-in is silence.
    events = [(441, "D"), (2205, "@2"), (4410, "_:"), (6615, "_"), (6615, "'a"), (22050, "_")]
    ph = phones_from_events(events, 22050, 16000, 16000)
    assert ph.starts == (0, 320, 1600, 3200, 4800)
    assert ph.labels == ("_", "D", "@2", "_", "a")
    assert ph.label_at(0) == "_" and ph.label_at(320) == "D" and ph.label_at(1599) == "D"
    assert ph.label_at(10**9) == "a"  # clamped to the last segment
    with pytest.raises(ValueError, match="out of order"):
        phones_from_events([(4000, "a"), (100, "b")], 22050, 16000, 16000)


def test_alignment_validation() -> None:
    with pytest.raises(ValueError, match="start at 0"):
        PhoneAlignment((5,), ("a",), 10, 16000)
    with pytest.raises(ValueError, match="strictly increase"):
        PhoneAlignment((0, 4, 4), ("a", "b", "c"), 10, 16000)
    with pytest.raises(ValueError, match="inside the audio"):
        PhoneAlignment((0, 10), ("a", "b"), 10, 16000)
    with pytest.raises(ValueError, match="as many starts"):
        PhoneAlignment((0, 3), ("a",), 10, 16000)


def test_synthesised_phones_are_ordered_inside_the_audio_and_plausible(
    synth: Synthesizer,
) -> None:
    audio, ph = synth.synthesize_with_phones("the cat sat on the mat", Voice("en-us"))
    assert ph.n_samples == audio.shape[0] and ph.sample_rate == synth.sample_rate
    assert ph.starts[0] == 0 and all(b > a for a, b in zip(ph.starts, ph.starts[1:]))
    assert ph.starts[-1] < audio.shape[0]
    speech = [lab for lab in ph.labels if lab != "_"]
    # espeak-ng's en-us: D @2 k a t s a t O2 n D @2 m a t (vowel variants aside).
    consonants = [lab for lab in speech if lab in {"D", "k", "t", "s", "n", "m"}]
    assert consonants == ["D", "k", "t", "s", "t", "n", "D", "m", "t"]
    assert speech.count("a") == 3  # the vowel of cat, sat, mat
    assert not any(mark in lab for lab in ph.labels for mark in "',")  # stress stripped
    # Each phone lasts a plausible 20-300 ms.
    durations = [(b - a) / 16000 for a, b in zip(ph.starts, (*ph.starts[1:], ph.n_samples))]
    assert all(0.02 <= d <= 0.3 for d, lab in zip(durations, ph.labels) if lab != "_")
    rate = len(speech) / (audio.shape[0] / 16000)
    assert 8 <= rate <= 20  # phones per second of ordinary speech
    # Phone boundaries scale with the speaking rate.
    _, slow = synth.synthesize_with_phones("the cat sat on the mat", Voice("en-us", rate=120))
    assert slow.labels == ph.labels and slow.n_samples > 1.2 * ph.n_samples


def test_corpus_stores_phones_and_verifies_them(tmp_path: Path, synth: Synthesizer) -> None:
    config = SpeechCorpusConfig(
        n_unaligned=2, n_aligned=2, n_test=1, voices=("en-us", "en+f2"), rates=(170,), pitches=(50,)
    )
    corpus = build_speech_text_corpus(tmp_path / "c", config, quiet=True, synthesizer=synth)
    assert corpus.manifest["version"] == 2
    for split in ("unaligned", "aligned", "test"):
        phones = corpus.phones(split)
        for utt in corpus.utterances(split):
            _, expected = synth.synthesize_with_phones(
                utt.transcript, corpus.speaker_voice(utt.speaker)
            )
            assert phones[utt.id] == expected
    # A malformed file is an error naming it.
    path = next((tmp_path / "c" / "aligned").rglob("*.phones.json"))
    body = json.loads(path.read_text())
    utt = next(iter(body["utterances"]))
    body["utterances"][utt]["starts"] = list(reversed(body["utterances"][utt]["starts"]))
    path.write_text(json.dumps(body))
    with pytest.raises(BadRecordError, match=path.name):
        corpus.phones("aligned")
    path.write_text("{not json")
    with pytest.raises(BadRecordError, match="unreadable phone file"):
        corpus.phones("aligned")
    path.unlink()  # a corpus without phones: a clear error, transcripts still readable
    with pytest.raises(ValueError, match="no phone labels"):
        corpus.phones("aligned")
    assert len(corpus.utterances("aligned")) == 2


def test_reader_accepts_a_tree_without_phone_files(tmp_path: Path) -> None:
    with LibriSpeechWriter(tmp_path / "split") as w:
        w.add(19, 198, 0, "hello world", torch.zeros(1600))
    assert len(read_librispeech(tmp_path / "split")) == 1
    assert read_phone_alignments(tmp_path / "split") == {}
    with (
        LibriSpeechWriter(tmp_path / "other") as w,
        pytest.raises(ValueError, match="phones cover"),
    ):
        w.add(19, 198, 0, "hi", torch.zeros(1600), phones=PhoneAlignment((0,), ("a",), 99, 16000))
