"""The generated speech-text corpus of the Zipper speech experiment.

Three disjoint splits, each a LibriSpeech-layout folder (see
:mod:`.librispeech`), every utterance a distinct generated sentence
(:func:`~multitower.data.sentences.generate_unique_sentences`) spoken by espeak-ng:

* ``unaligned``: speech for pre-training the speech tower (and fitting the
  speech-unit tokenizer). Its transcripts are written only to keep the layout
  standard; speech-only pre-training must not use them.
* ``aligned``: (speech, transcript) pairs for fine-tuning the fused model.
* ``test``: held-out pairs for ASR / TTS evaluation.

Every utterance also has its phone alignment (espeak-ng's phoneme events,
:mod:`.phones`) in ``<speaker>-<chapter>.phones.json`` beside its transcript:
for measuring speech units (:meth:`SpeechCorpus.phones`), never for fitting them.

Speakers are the combinations (voice, rate, pitch) of the config, numbered
from 100 in a fixed order; each split cycles through them in a seeded shuffled
order. Test sentences are drawn first and aligned second, so growing
``n_unaligned`` never changes the other two splits.

Caching and crash safety: ``manifest.json`` holds the config and a hash of
everything that determines the audio (config, generator version, espeak-ng
version, corpus format). A call with an identical hash reuses the corpus;
otherwise it is rebuilt in a hidden sibling folder named after that hash
(``.corpus.building-<hash>``) that is renamed into place only when complete, so an
interrupted build never leaves a corpus that looks finished. Synthesis is
deterministic per utterance (see :mod:`.synth`), so a rebuild gives identical audio.

Resuming: the build proceeds in shards of :data:`SHARD_SIZE` utterances; after a
shard's audio is written, its transcripts and phones are recorded in
``.shards/<split>-<k>.json`` inside the partial folder. An interrupted build
(Ctrl-C, a crash) keeps the partial folder, and the next call with the same
settings re-synthesises only the shards without a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch

from multitower.data.sentences import GENERATOR_VERSION, MAX_WORDS, generate_unique_sentences
from multitower.data.speech.librispeech import (
    LibriSpeechWriter,
    Utterance,
    read_librispeech,
    utterance_id,
)
from multitower.data.speech.phones import PhoneAlignment, read_phone_alignments
from multitower.data.speech.synth import Synthesizer, Voice
from multitower.data.speech_config import SpeechCorpusConfig
from multitower.io import write_json_atomic
from multitower.progress import Progress, log_line

CORPUS_FORMAT = "multitower-speech-corpus"
# 2: phone alignments stored with every chapter (a v1 cache has none and is rebuilt).
CORPUS_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SPLITS = ("unaligned", "aligned", "test")
_CHAPTER = {"unaligned": 1, "aligned": 2, "test": 3}
FIRST_SPEAKER_ID = 100


@dataclass(frozen=True)
class SpeechCorpus:
    """A built corpus: its root folder and manifest.

    Attributes:
        root: the corpus folder (``root/<split>/<speaker>/<chapter>/...``).
        manifest: the parsed ``manifest.json``.
        reused: True when the call found an up-to-date corpus and built nothing.
    """

    root: Path
    manifest: dict
    reused: bool = False

    @property
    def config(self) -> SpeechCorpusConfig:
        return SpeechCorpusConfig.from_dict(self.manifest["config"])

    def split_dir(self, split: str) -> Path:
        """Folder of one split.

        Raises:
            ValueError: for a split name not in ``SPLITS``.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        return self.root / split

    def utterances(self, split: str) -> list[Utterance]:
        """The split's utterances (an empty split gives ``[]``)."""
        if self.manifest["splits"][split]["n_utterances"] == 0:
            return []
        return read_librispeech(self.split_dir(split))

    def phones(self, split: str) -> dict[str, PhoneAlignment]:
        """Phone alignment of every utterance of the split, by utterance id.

        Raises:
            ValueError: if an utterance of the split has no phones (a corpus
                built before phones were stored; rebuild it), naming the folder.
            BadRecordError: for a malformed phone file (names it).
        """
        utterances = self.utterances(split)
        if not utterances:
            return {}
        phones = read_phone_alignments(self.split_dir(split))
        missing = [u.id for u in utterances if u.id not in phones]
        if missing:
            raise ValueError(
                f"{self.split_dir(split)}: {len(missing)} of {len(utterances)} utterances have no phone "
                f"labels (*.phones.json), e.g. {missing[0]}; rebuild the corpus with this version"
            )
        return phones

    def speaker_voice(self, speaker: str) -> Voice:
        """The espeak-ng voice of a speaker id."""
        s = self.manifest["speakers"][speaker]
        return Voice(s["voice"], s["rate"], s["pitch"])


SHARD_SIZE = 200  # utterances per resumable unit of a build
_SHARD_FORMAT = "multitower-corpus-shard"


class SynthesizerLike(Protocol):
    """What the corpus builder needs from a synthesiser (:class:`~.synth.Synthesizer`)."""

    @property
    def espeak_version(self) -> str: ...

    def synthesize_with_phones(
        self, text: str, voice: Voice | None = None
    ) -> tuple[torch.Tensor, PhoneAlignment]: ...


def corpus_hash(config: SpeechCorpusConfig, espeak_version: str) -> str:
    """Hash of everything that determines the corpus content."""
    fields = asdict(config)
    # Grammar settings at their defaults are left out, so corpora built before
    # they existed keep their hash (and are reused, not rebuilt).
    for name, default in (("words_per_list", None), ("max_words", MAX_WORDS)):
        if fields[name] == default:
            del fields[name]
    key = {
        "config": fields,
        "format_version": CORPUS_FORMAT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "espeak_version": espeak_version,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def plan_corpus(config: SpeechCorpusConfig) -> dict[str, list[tuple[str, int]]]:
    """Sentences and speaker indices of every split, without synthesising.

    Returns:
        ``{split: [(sentence, speaker_index), ...]}``; sentences are distinct
        across all splits.
    """
    sizes = [config.n_test, config.n_aligned, config.n_unaligned]
    sentences = generate_unique_sentences(
        sum(sizes), config.seed, words_per_list=config.words_per_list, max_words=config.max_words
    )
    by_split = {
        "test": sentences[: sizes[0]],
        "aligned": sentences[sizes[0] : sizes[0] + sizes[1]],
        "unaligned": sentences[sizes[0] + sizes[1] :],
    }
    n_speakers = len(config.speakers())
    plan: dict[str, list[tuple[str, int]]] = {}
    for split in SPLITS:
        rng = random.Random(f"{config.seed}/{split}")
        order: list[int] = []
        items = []
        for sentence in by_split[split]:
            if not order:
                order = list(range(n_speakers))
                rng.shuffle(order)
            items.append((sentence, order.pop()))
        plan[split] = items
    return plan


def _resume_shard(
    record_path: Path,
    writer: LibriSpeechWriter,
    items: list[tuple[str, int, int]],
    chapter: int,
    config: SpeechCorpusConfig,
) -> list[int] | None:
    """Register a shard an interrupted build finished; the length of each of its
    utterances in samples, or None when it has no valid record (or lost an audio
    file) and must be synthesised."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format") != _SHARD_FORMAT or len(record["phones"]) != len(items):
            return None
        phones = [
            PhoneAlignment(p["starts"], p["labels"], p["n_samples"], config.sample_rate)
            for p in record["phones"]
        ]
        folder = writer.split_dir
        ext = config.audio_format
        if not all(
            (folder / str(s) / str(chapter) / f"{utterance_id(s, chapter, i)}.{ext}").is_file()
            for _, s, i in items
        ):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for (sentence, speaker_id, index), p in zip(items, phones):
        writer.add_written(speaker_id, chapter, index, sentence, phones=p)
    return [p.n_samples for p in phones]


def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (
        manifest if isinstance(manifest, dict) and manifest.get("format") == CORPUS_FORMAT else None
    )


def load_speech_corpus(root: str | Path) -> SpeechCorpus:
    """Open a corpus built by :func:`build_speech_text_corpus`, without checking its hash.

    Raises:
        FileNotFoundError: if ``root`` holds no valid ``manifest.json`` or misses a split folder.
    """
    root = Path(root)
    manifest = _read_manifest(root) if root.is_dir() else None
    if manifest is None:
        raise FileNotFoundError(f"{root} is not a speech corpus (no valid {MANIFEST})")
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise FileNotFoundError(f"speech corpus {root} has no split folder {missing[0]!r}")
    return SpeechCorpus(root, manifest, reused=True)


def build_speech_text_corpus(
    out_dir: str | Path,
    config: SpeechCorpusConfig | None = None,
    *,
    quiet: bool = False,
    synthesizer: SynthesizerLike | None = None,
) -> SpeechCorpus:
    """Build (or reuse) the speech-text corpus in ``out_dir``.

    Args:
        out_dir: corpus folder; created, reused if its manifest matches, or
            replaced if it holds a corpus built with other settings.
        config: sizes, seed and speakers (default ``SpeechCorpusConfig()``).
        quiet: no progress on stderr (a run log still gets the plain lines).
        synthesizer: a :class:`~.synth.Synthesizer` to use (one is created and
            closed otherwise).

    Returns:
        The :class:`SpeechCorpus`.

    Raises:
        FileExistsError: if ``out_dir`` exists, is not empty and is not a corpus
            built by this function (nothing is deleted then).
    """
    config = config or SpeechCorpusConfig()
    out_dir = Path(out_dir)
    owned_synth = Synthesizer(config.sample_rate) if synthesizer is None else None
    synth: SynthesizerLike = synthesizer if synthesizer is not None else owned_synth  # type: ignore[assignment]
    try:
        digest = corpus_hash(config, synth.espeak_version)
        existing = _read_manifest(out_dir) if out_dir.is_dir() else None
        if (
            existing is not None
            and existing.get("config_hash") == digest
            and all((out_dir / split).is_dir() for split in SPLITS)
        ):
            return SpeechCorpus(out_dir, existing, reused=True)
        if (
            out_dir.exists()
            and existing is None
            and (not out_dir.is_dir() or any(out_dir.iterdir()))
        ):
            raise FileExistsError(
                f"{out_dir} exists and is not a speech corpus built by multitower (no valid {MANIFEST}); refusing to overwrite it"
            )
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # Named after the settings, so an interrupted build of the same corpus resumes.
        tmp = out_dir.parent / f".{out_dir.name}.building-{digest[:16]}"
        try:
            manifest = _build_into(tmp, config, digest, synth, quiet=quiet)
        except BaseException:
            if tmp.is_dir():
                log_line(
                    f"speech corpus: stopped; the finished shards are kept in {tmp}: run the "
                    "same command again to continue from there"
                )
            raise
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
        return SpeechCorpus(out_dir, manifest, reused=False)
    finally:
        if owned_synth is not None:
            owned_synth.close()


def _build_into(
    root: Path, config: SpeechCorpusConfig, digest: str, synth: SynthesizerLike, *, quiet: bool
) -> dict:
    """Synthesise every split into ``root`` (resuming its recorded shards) and write
    the manifest last."""
    root.mkdir(parents=True, exist_ok=True)
    shards = root / ".shards"
    shards.mkdir(exist_ok=True)
    plan = plan_corpus(config)
    speakers = config.speakers()
    progress = Progress(
        sum(len(items) for items in plan.values()),
        "speech corpus",
        unit="utterances",
        mode="off" if quiet else "auto",
    )
    splits: dict[str, dict] = {}
    for split in SPLITS:
        seconds = 0.0
        counters: dict[int, int] = {}
        (root / split).mkdir(exist_ok=True)  # present even when the split is empty
        with LibriSpeechWriter(
            root / split, sample_rate=config.sample_rate, audio_format=config.audio_format
        ) as writer:
            for first in range(0, len(plan[split]), SHARD_SIZE):
                items = []  # (sentence, speaker id, index) of this shard
                for sentence, speaker_index in plan[split][first : first + SHARD_SIZE]:
                    speaker_id = FIRST_SPEAKER_ID + speaker_index
                    index = counters.get(speaker_id, 0)
                    counters[speaker_id] = index + 1
                    items.append((sentence, speaker_id, index))
                record_path = shards / f"{split}-{first // SHARD_SIZE:05d}.json"
                done = _resume_shard(record_path, writer, items, _CHAPTER[split], config)
                if done is not None:
                    for n_samples in done:  # summed one by one, as when synthesised
                        seconds += n_samples / config.sample_rate
                    progress.skip(len(items))  # made by an earlier run: not in the rate
                    continue
                entries = []
                for sentence, speaker_id, index in items:
                    audio, phones = synth.synthesize_with_phones(
                        sentence, speakers[speaker_id - FIRST_SPEAKER_ID]
                    )
                    writer.add(speaker_id, _CHAPTER[split], index, sentence, audio, phones=phones)
                    seconds += audio.shape[0] / config.sample_rate
                    entries.append(phones.to_json())
                    progress.update(progress.count + 1)
                write_json_atomic(record_path, {"format": _SHARD_FORMAT, "phones": entries})
        splits[split] = {"n_utterances": len(plan[split]), "seconds": round(seconds, 3)}
    progress.close()
    shutil.rmtree(shards)
    manifest = {
        "format": CORPUS_FORMAT,
        "version": CORPUS_FORMAT_VERSION,
        "config_hash": digest,
        "config": asdict(config),
        "espeak_version": synth.espeak_version,
        "generator_version": GENERATOR_VERSION,
        "splits": splits,
        "speakers": {
            str(FIRST_SPEAKER_ID + i): {"voice": v.name, "rate": v.rate, "pitch": v.pitch}
            for i, v in enumerate(speakers)
        },
        "notes": "unaligned: speech for speech-tower pre-training and unit fitting; its transcripts are not to be used. aligned: pairs for fusion fine-tuning. test: held out.",
    }
    text = json.dumps(manifest, indent=2)
    (root / MANIFEST).write_text(text, encoding="utf-8")
    return json.loads(text)  # the same plain-JSON form a reused corpus returns
