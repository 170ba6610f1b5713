"""Tests of the LibriSpeech layout and of the generated speech-text corpus."""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch

from multitower.data.errors import BadRecordError
from multitower.data.speech import corpus as corpus_module
from multitower.data.speech.audio import read_audio
from multitower.data.speech.corpus import (
    SPLITS,
    SpeechCorpusConfig,
    build_speech_text_corpus,
    plan_corpus,
)
from multitower.data.speech.librispeech import LibriSpeechWriter, read_librispeech
from multitower.data.speech.phones import PhoneAlignment
from multitower.data.speech.synth import Synthesizer, Voice
from multitower.progress import Progress


def _tone(seconds: float, freq: float = 220.0, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * math.pi * freq * t)


@pytest.fixture(scope="module")
def synth() -> Iterator[Synthesizer]:
    with Synthesizer() as s:
        yield s


# ----------------------------------------------------------------------------
# LibriSpeech layout
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_librispeech_write_read_round_trip(tmp_path: Path, fmt: str) -> None:
    items = [
        (19, 198, 0, "Hello, world!", 0.5),
        (19, 198, 1, "it's fine", 0.3),
        (27, 5, 0, "another speaker", 0.4),
    ]
    with LibriSpeechWriter(tmp_path / "train", audio_format=fmt) as writer:
        for spk, ch, idx, text, sec in items:
            writer.add(spk, ch, idx, text, _tone(sec))
    trans = (tmp_path / "train" / "19" / "198" / "19-198.trans.txt").read_text()
    assert trans == "19-198-0000 HELLO WORLD\n19-198-0001 IT'S FINE\n"
    utts = read_librispeech(tmp_path / "train")
    assert [u.id for u in utts] == ["19-198-0000", "19-198-0001", "27-5-0000"]
    assert [u.transcript for u in utts] == ["hello world", "it's fine", "another speaker"]
    assert [u.speaker for u in utts] == ["19", "19", "27"] and utts[0].chapter == "198"
    assert all(u.path.suffix == "." + fmt for u in utts)
    audio = read_audio(utts[1].path)
    torch.testing.assert_close(audio, _tone(0.3), atol=1.5 / 32768, rtol=0)
    assert read_librispeech(tmp_path) == utts  # a root with splits reads the same


def test_reads_real_librispeech_layout(tmp_path: Path) -> None:
    """The distribution's own layout: LibriSpeech/test-clean/<spk>/<chapter>/..., flac, upper case."""
    chapter = tmp_path / "LibriSpeech" / "test-clean" / "1089" / "134686"
    chapter.mkdir(parents=True)
    lines = [
        "1089-134686-0000 HE HOPED THERE WOULD BE STEW FOR DINNER",
        "1089-134686-0001 STUFF IT INTO YOU HIS BELLY COUNSELLED HIM",
    ]
    (chapter / "1089-134686.trans.txt").write_text("\n".join(lines) + "\n")
    for i in range(2):
        sf.write(chapter / f"1089-134686-000{i}.flac", _tone(0.2).numpy(), 16000, format="FLAC")
    utts = read_librispeech(tmp_path / "LibriSpeech" / "test-clean")
    assert [u.transcript for u in utts] == [
        "he hoped there would be stew for dinner",
        "stuff it into you his belly counselled him",
    ]
    assert utts[0].speaker == "1089" and utts[0].path.name == "1089-134686-0000.flac"


def _one_chapter(tmp_path: Path) -> Path:
    with LibriSpeechWriter(tmp_path / "s") as writer:
        writer.add(1, 2, 0, "one", _tone(0.1))
        writer.add(1, 2, 1, "two", _tone(0.1))
    return tmp_path / "s" / "1" / "2"


def test_missing_audio_is_a_bad_record(tmp_path: Path) -> None:
    chapter = _one_chapter(tmp_path)
    (chapter / "1-2-0001.flac").unlink()
    with pytest.raises(BadRecordError, match=r"1-2\.trans\.txt:2.*no audio"):
        read_librispeech(tmp_path / "s")
    with pytest.warns(UserWarning, match="skipping"):
        assert read_librispeech(tmp_path / "s", strict=False) == []


def test_audio_without_transcript_line_is_a_bad_record(tmp_path: Path) -> None:
    chapter = _one_chapter(tmp_path)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 ONE\n")
    with pytest.raises(BadRecordError, match=r"1-2-0001\.flac.*no transcript"):
        read_librispeech(tmp_path / "s")


def test_malformed_transcripts_are_bad_records(tmp_path: Path) -> None:
    chapter = _one_chapter(tmp_path)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 ONE\n9-9-0001 TWO\n")
    with pytest.raises(BadRecordError, match="does not match"):
        read_librispeech(tmp_path / "s")
    (chapter / "1-2.trans.txt").write_text("1-2-0000 ONE\n1-2-0001 ...\n")
    with pytest.raises(BadRecordError, match="empty transcript"):
        read_librispeech(tmp_path / "s")
    (chapter / "1-2.trans.txt").write_bytes(b"1-2-0000 \xff\xfe\n")
    with pytest.raises(BadRecordError, match="not UTF-8"):
        read_librispeech(tmp_path / "s")
    with pytest.raises(FileNotFoundError):
        read_librispeech(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"trans\.txt"):
        read_librispeech(tmp_path / "empty")


def test_writer_rejects_duplicates_and_empty_text(tmp_path: Path) -> None:
    writer = LibriSpeechWriter(tmp_path)
    writer.add(1, 1, 0, "a", _tone(0.05))
    with pytest.raises(ValueError, match="duplicate"):
        writer.add(1, 1, 0, "b", _tone(0.05))
    with pytest.raises(ValueError, match="empty"):
        writer.add(1, 1, 1, "?!", _tone(0.05))


# ----------------------------------------------------------------------------
# Generated corpus
# ----------------------------------------------------------------------------
TINY = SpeechCorpusConfig(
    n_unaligned=6,
    n_aligned=4,
    n_test=3,
    seed=1,
    voices=("en-us", "en+f2"),
    rates=(170,),
    pitches=(40, 60),
)


def _audio_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.flac"))
    }


def test_corpus_splits_are_disjoint_librispeech_folders(tmp_path: Path, synth: Synthesizer) -> None:
    corpus = build_speech_text_corpus(tmp_path / "c", TINY, quiet=True, synthesizer=synth)
    assert not corpus.reused
    texts = {split: [u.transcript for u in corpus.utterances(split)] for split in SPLITS}
    assert {split: len(t) for split, t in texts.items()} == {
        "unaligned": 6,
        "aligned": 4,
        "test": 3,
    }
    all_texts = [t for ts in texts.values() for t in ts]
    assert len(set(all_texts)) == len(all_texts)  # no sentence shared between or within splits
    assert corpus.manifest["splits"]["test"]["n_utterances"] == 3
    assert set(corpus.manifest["speakers"]) == {"100", "101", "102", "103"}
    assert corpus.speaker_voice("101") == Voice("en-us", 170, 60)
    # Each split cycles through the speakers: 6 utterances over 4 speakers use them all.
    assert {u.speaker for u in corpus.utterances("unaligned")} == {"100", "101", "102", "103"}
    # The audio is the speaker's voice saying the transcript.
    utt = corpus.utterances("aligned")[0]
    expected = synth.synthesize(utt.transcript, corpus.speaker_voice(utt.speaker))
    torch.testing.assert_close(read_audio(utt.path), expected, atol=1.5 / 32768, rtol=0)
    assert corpus.config == TINY
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]  # no temporary folders left


def test_corpus_cache_reuse_and_rebuild(tmp_path: Path, synth: Synthesizer) -> None:
    out = tmp_path / "c"
    first = build_speech_text_corpus(out, TINY, quiet=True, synthesizer=synth)
    digest = _audio_digest(out)
    mtime = (out / "manifest.json").stat().st_mtime_ns
    again = build_speech_text_corpus(out, TINY, quiet=True, synthesizer=synth)
    assert again.reused and again.manifest == first.manifest
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    bigger = SpeechCorpusConfig(**{**TINY.__dict__, "n_unaligned": 8})
    rebuilt = build_speech_text_corpus(out, bigger, quiet=True, synthesizer=synth)
    assert not rebuilt.reused and len(rebuilt.utterances("unaligned")) == 8
    # Test and aligned splits do not depend on n_unaligned, and synthesis is deterministic.
    new_digest = _audio_digest(out)
    for name, h in digest.items():
        if not name.startswith("unaligned"):
            assert new_digest[name] == h, name
    assert plan_corpus(bigger)["test"] == plan_corpus(TINY)["test"]


def test_empty_split_and_damaged_cache(tmp_path: Path, synth: Synthesizer) -> None:
    config = SpeechCorpusConfig(
        n_unaligned=2, n_aligned=0, n_test=1, voices=("en-us",), rates=(170,), pitches=(50,)
    )
    corpus = build_speech_text_corpus(tmp_path / "c", config, quiet=True, synthesizer=synth)
    assert corpus.utterances("aligned") == []
    assert build_speech_text_corpus(tmp_path / "c", config, quiet=True, synthesizer=synth).reused
    shutil.rmtree(tmp_path / "c" / "test")  # a damaged corpus is rebuilt, not reused
    again = build_speech_text_corpus(tmp_path / "c", config, quiet=True, synthesizer=synth)
    assert not again.reused and len(again.utterances("test")) == 1


class _CrashingSynth:
    """Stands in for the synthesiser and fails part-way through a build."""

    def __init__(
        self, real: Synthesizer, fail_after: int, error: type[BaseException] = RuntimeError
    ) -> None:
        self.real, self.fail_after, self.calls, self.error = real, fail_after, 0, error

    @property
    def espeak_version(self) -> str:
        return self.real.espeak_version

    def synthesize_with_phones(
        self, text: str, voice: Voice | None = None
    ) -> tuple[torch.Tensor, PhoneAlignment]:
        self.calls += 1
        if self.calls > self.fail_after:
            raise self.error("simulated crash")
        return self.real.synthesize_with_phones(text, voice)


def test_crash_mid_build_leaves_no_corpus(tmp_path: Path, synth: Synthesizer) -> None:
    out = tmp_path / "c"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_speech_text_corpus(
            out, TINY, quiet=True, synthesizer=_CrashingSynth(synth, fail_after=5)
        )
    # only the hidden partial build, kept to resume from; nothing that looks finished
    assert [p.name.startswith(".c.building-") for p in tmp_path.iterdir()] == [True]
    # An existing good corpus survives a failed rebuild with other settings.
    build_speech_text_corpus(out, TINY, quiet=True, synthesizer=synth)
    before = _audio_digest(out)
    other = SpeechCorpusConfig(**{**TINY.__dict__, "seed": 2})
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_speech_text_corpus(
            out, other, quiet=True, synthesizer=_CrashingSynth(synth, fail_after=2)
        )
    assert _audio_digest(out) == before
    assert build_speech_text_corpus(out, TINY, quiet=True, synthesizer=synth).reused
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["c"]


def _all_files_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_interrupted_build_resumes_from_its_finished_shards(
    tmp_path: Path, synth: Synthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_module, "SHARD_SIZE", 2)
    build_speech_text_corpus(tmp_path / "fresh", TINY, quiet=True, synthesizer=synth)
    out = tmp_path / "resumed" / "c"
    # Ctrl-C at the 8th utterance: the 3 shards of unaligned (6) are done, aligned's first is not
    with pytest.raises(KeyboardInterrupt):
        build_speech_text_corpus(
            out, TINY, quiet=True, synthesizer=_CrashingSynth(synth, 7, KeyboardInterrupt)
        )
    assert not out.exists()
    counting = _CrashingSynth(synth, fail_after=10**6)
    bars: list[Progress] = []

    class Recorded(Progress):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(corpus_module, "Progress", Recorded)
    corpus = build_speech_text_corpus(out, TINY, quiet=True, synthesizer=counting)
    assert counting.calls == 13 - 6  # only what was not recorded is synthesised again
    # the count shown is all 13, the rate and the ETA count only the 7 made now
    assert [(bar.count, bar.count - bar.initial) for bar in bars] == [(13, 7)]
    assert not corpus.reused and corpus.phones("aligned")
    # the same bytes as an uninterrupted build: audio, transcripts, phones, manifest
    assert _all_files_digest(out) == _all_files_digest(tmp_path / "fresh")
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == ["c"]


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path, synth: Synthesizer) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing"):
        build_speech_text_corpus(tmp_path / "mine", TINY, quiet=True, synthesizer=synth)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_corpus_config_validation() -> None:
    with pytest.raises(ValueError, match="n_test"):
        SpeechCorpusConfig(n_test=-1)
    with pytest.raises(ValueError, match="voices"):
        SpeechCorpusConfig(voices=())
    with pytest.raises(ValueError, match="rate"):
        SpeechCorpusConfig(rates=(20,))
    with pytest.raises(ValueError, match="audio_format"):
        SpeechCorpusConfig(audio_format="mp3")
    with pytest.raises(ValueError, match="unknown fields"):
        SpeechCorpusConfig.from_dict({"n_test": 1, "colour": "red"})
    assert SpeechCorpusConfig(voices=["en"]).voices == ("en",)  # lists become tuples
    with pytest.raises(ValueError, match=r"SpeechCorpusConfig\.words_per_list"):
        SpeechCorpusConfig(words_per_list=0)
    with pytest.raises(ValueError, match=r"SpeechCorpusConfig\.max_words"):
        SpeechCorpusConfig(max_words=1)


def test_grammar_settings_reach_the_plan_and_the_hash() -> None:
    base = SpeechCorpusConfig(n_unaligned=30, n_aligned=30, n_test=10)
    short = SpeechCorpusConfig(**{**base.__dict__, "max_words": 5, "words_per_list": 4})
    plan = plan_corpus(short)
    assert all(len(s.split()) <= 5 for split in SPLITS for s, _ in plan[split])
    assert plan != plan_corpus(base)
    h = corpus_module.corpus_hash
    assert h(short, "1.51") != h(base, "1.51")
    # A default grammar hashes as before the settings existed: old corpora are reused.
    old_key = {k: v for k, v in base.__dict__.items() if k not in ("words_per_list", "max_words")}
    key = {
        "config": old_key,
        "format_version": corpus_module.CORPUS_FORMAT_VERSION,
        "generator_version": corpus_module.GENERATOR_VERSION,
        "espeak_version": "1.51",
    }
    expected = hashlib.sha256(corpus_module.json.dumps(key, sort_keys=True).encode()).hexdigest()
    assert h(base, "1.51") == expected
