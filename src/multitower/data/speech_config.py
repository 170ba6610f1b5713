"""The settings of the speech data (:mod:`multitower.data.speech`), without torch.

* :class:`Voice`: one synthetic speaker (:mod:`~multitower.data.speech.synth`);
* :class:`SpeechCorpusConfig`: sizes and speakers of the generated corpus
  (:mod:`~multitower.data.speech.corpus`);
* :class:`UnitConfig`: the speech-unit tokenizer (:mod:`~multitower.data.speech.units`).

They live outside the ``speech`` package because its ``__init__`` imports the
torch modules, and an experiment config must be checkable without loading torch
(``multitower run`` refusing a bad value at once). Each is re-exported by the module
named above, so ``from multitower.data.speech.units import UnitConfig`` works.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, fields

from multitower.data.sentences import MAX_WORDS, check_grammar_args

_VOICE_NAME = re.compile(r"[A-Za-z0-9_-]+(\+[A-Za-z0-9_]+)?")
FEATURES = ("logmel", "mfcc")  # UnitConfig.features
CMVN = ("none", "utterance", "speaker")  # UnitConfig.cmvn


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice at a speaking rate and pitch.

    Args:
        name: espeak-ng voice, a language with an optional variant, e.g.
            ``"en-us"``, ``"en-gb-x-rp"``, ``"en+m3"``, ``"en-us+f2"``.
        rate: speaking rate in words per minute, 80-450 (espeak default 175).
        pitch: base pitch, 0-100 (espeak default 50).
    """

    name: str = "en-us"
    rate: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not _VOICE_NAME.fullmatch(self.name):
            raise ValueError(f"Voice.name must look like 'en-us' or 'en+m3', got {self.name!r}")
        if not 80 <= self.rate <= 450:
            raise ValueError(f"Voice.rate must be in [80, 450] words per minute, got {self.rate}")
        if not 0 <= self.pitch <= 100:
            raise ValueError(f"Voice.pitch must be in [0, 100], got {self.pitch}")

    @property
    def label(self) -> str:
        """Readable id, e.g. ``"en+m3/r175/p50"``."""
        return f"{self.name}/r{self.rate}/p{self.pitch}"


@dataclass(frozen=True)
class SpeechCorpusConfig:
    """Sizes and speakers of the generated corpus.

    Args:
        n_unaligned, n_aligned, n_test: utterances per split.
        seed: seed of the sentences and of the speaker assignment.
        voices: espeak-ng voice names (``"en-us"``, ``"en+m3"``, ...).
        rates: speaking rates in words per minute.
        pitches: base pitches, 0-100.
        sample_rate: audio sample rate in Hz.
        audio_format: ``"flac"`` or ``"wav"``.
        words_per_list, max_words: the sentence grammar's vocabulary and longest
            sentence (:func:`~multitower.data.sentences.generate_sentences`).
    """

    n_unaligned: int = 2000
    n_aligned: int = 1000
    n_test: int = 200
    seed: int = 0
    voices: tuple[str, ...] = ("en-us", "en-gb-x-rp", "en+m3", "en+f2")
    rates: tuple[int, ...] = (150, 190)
    pitches: tuple[int, ...] = (40, 60)
    sample_rate: int = 16000
    audio_format: str = "flac"
    words_per_list: int | None = None
    max_words: int = MAX_WORDS

    def __post_init__(self) -> None:
        try:
            check_grammar_args(self.words_per_list, self.max_words)
        except ValueError as e:
            raise ValueError(f"SpeechCorpusConfig.{e}") from None
        for name in ("voices", "rates", "pitches"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"SpeechCorpusConfig.{name} must not be empty")
        for name in ("n_unaligned", "n_aligned", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"SpeechCorpusConfig.{name} must be >= 0, got {getattr(self, name)}"
                )
        if self.n_unaligned + self.n_aligned + self.n_test == 0:
            raise ValueError("SpeechCorpusConfig: all splits are empty")
        if self.audio_format not in ("flac", "wav"):
            raise ValueError(
                f"SpeechCorpusConfig.audio_format must be 'flac' or 'wav', got {self.audio_format!r}"
            )
        if self.sample_rate <= 0:
            raise ValueError(
                f"SpeechCorpusConfig.sample_rate must be positive, got {self.sample_rate}"
            )
        self.speakers()  # validates every voice, rate and pitch

    def speakers(self) -> list[Voice]:
        """All (voice, rate, pitch) combinations; speaker id = 100 + list index."""
        return [
            Voice(name, rate, pitch)
            for name, rate, pitch in itertools.product(self.voices, self.rates, self.pitches)
        ]

    def split_size(self, split: str) -> int:
        return {"unaligned": self.n_unaligned, "aligned": self.n_aligned, "test": self.n_test}[
            split
        ]

    @classmethod
    def from_dict(cls, d: dict) -> SpeechCorpusConfig:
        """Build from a dict (e.g. a manifest), rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"SpeechCorpusConfig: unknown fields {unknown}; known: {sorted(known)}"
            )
        return cls(**d)


@dataclass(frozen=True)
class UnitConfig:
    """Settings of a :class:`~multitower.data.speech.units.SpeechUnitTokenizer`.

    Args:
        codebook_size: number of units (k-means centroids); 256-1024 in the
            experiments, anything in [2, 4096] allowed.
        unit_rate: units per second (50 or 25 typically).
        frames_per_unit: log-mel frames per unit; the feature frame rate is
            ``unit_rate * frames_per_unit`` (50 Hz x 2 = 100 Hz, hop 160 at 16 kHz).
        context: neighbouring frames stacked on each side of a unit's frames.
        sample_rate: audio sample rate in Hz.
        n_fft: FFT size of the log-mel features.
        n_mels: mel bands.
        features: ``"logmel"`` (the log-mel frames) or ``"mfcc"`` (their first
            ``n_mfcc`` DCT coefficients).
        n_mfcc: cepstra kept with ``features="mfcc"``, in [1, n_mels].
        deltas: 0, 1 (append deltas) or 2 (deltas and delta-deltas); MFCC 13
            with ``deltas=2`` is the classic 39-dimensional frame.
        cmvn: ``"none"``, ``"utterance"`` (mean/variance-normalise each frame
            dimension over the utterance before stacking) or ``"speaker"``
            (over all fit frames of the utterance's speaker: speaker ids are
            then needed to fit and encode, see :meth:`~multitower.data.speech.units.SpeechUnitTokenizer.add_speaker`).
        min_run: runs of fewer than this many identical units are absorbed by
            the preceding run (1: off).
        vtln: vocal tract length normalisation without transcripts: each
            utterance's mel filterbank is warped by the factor of
            :data:`~multitower.data.speech.features.VTLN_WARPS` (0.80 to 1.20) whose features lie closest to
            the codebook (lowest mean squared distance); fitting alternates
            k-means and the warp choice ``vtln_iters`` times.
        vtln_iters: warp-choice rounds when fitting with ``vtln``.
        run_penalty: with ``> 0``, an utterance's units are the sequence that
            minimises the summed squared distances to the chosen centroids plus
            ``run_penalty`` x (the fit data's mean squared distance) per change
            of unit (a Viterbi pass, duration-penalised as in Kamper's DPDP),
            instead of each vector's nearest centroid: fewer spurious flips
            between neighbouring codes.
        normalize: mean/variance-normalise each stacked feature dimension
            (statistics of the fit data).
        dedup: default of :meth:`~multitower.data.speech.units.SpeechUnitTokenizer.encode`'s ``dedup``.
        kmeans_iters: maximum Lloyd iterations.
        max_fit_vectors: at most this many unit vectors (sampled evenly across
            utterances) are used to fit the normalisation and k-means.
        seed: seed of the sampling and the k-means++ initialisation.
    """

    codebook_size: int = 256
    unit_rate: int = 50
    frames_per_unit: int = 2
    context: int = 1
    sample_rate: int = 16000
    n_fft: int = 400
    n_mels: int = 80
    features: str = "logmel"
    n_mfcc: int = 13
    deltas: int = 0
    cmvn: str = "none"
    min_run: int = 1
    vtln: bool = False
    vtln_iters: int = 2
    run_penalty: float = 0.0
    normalize: bool = True
    dedup: bool = False
    kmeans_iters: int = 30
    max_fit_vectors: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.codebook_size <= 4096:
            raise ValueError(
                f"UnitConfig.codebook_size must be in [2, 4096], got {self.codebook_size}"
            )
        if self.unit_rate <= 0 or self.frames_per_unit <= 0:
            raise ValueError(
                f"UnitConfig.unit_rate and frames_per_unit must be positive, got {self.unit_rate}, {self.frames_per_unit}"
            )
        if self.sample_rate % (self.unit_rate * self.frames_per_unit):
            raise ValueError(
                f"UnitConfig: sample_rate={self.sample_rate} must be a multiple of unit_rate * frames_per_unit = "
                f"{self.unit_rate * self.frames_per_unit} (e.g. unit_rate 50 or 25 with frames_per_unit 2 or 4)"
            )
        if self.context < 0:
            raise ValueError(f"UnitConfig.context must be >= 0, got {self.context}")
        if self.n_fft < 2 or self.n_mels < 1:
            raise ValueError(
                f"UnitConfig.n_fft must be >= 2 and n_mels >= 1, got {self.n_fft}, {self.n_mels}"
            )
        if self.features not in FEATURES:
            raise ValueError(
                f"UnitConfig.features must be one of {FEATURES}, got {self.features!r}"
            )
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(
                f"UnitConfig.n_mfcc must be in [1, n_mels={self.n_mels}], got {self.n_mfcc}"
            )
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"UnitConfig.deltas must be 0, 1 or 2, got {self.deltas}")
        if self.cmvn not in CMVN:
            raise ValueError(f"UnitConfig.cmvn must be one of {CMVN}, got {self.cmvn!r}")
        if self.min_run < 1:
            raise ValueError(f"UnitConfig.min_run must be >= 1, got {self.min_run}")
        if self.vtln and self.cmvn == "speaker":
            raise ValueError(
                "UnitConfig: vtln warps each utterance, cmvn='speaker' pools a speaker's unwarped "
                "frames; use vtln with cmvn 'utterance' or 'none'"
            )
        if self.vtln_iters < 1:
            raise ValueError(f"UnitConfig.vtln_iters must be >= 1, got {self.vtln_iters}")
        if not (math.isfinite(self.run_penalty) and self.run_penalty >= 0):
            raise ValueError(
                f"UnitConfig.run_penalty must be a finite number >= 0, got {self.run_penalty}"
            )
        if self.kmeans_iters < 1:
            raise ValueError(f"UnitConfig.kmeans_iters must be >= 1, got {self.kmeans_iters}")
        if self.max_fit_vectors < self.codebook_size:
            raise ValueError(
                f"UnitConfig.max_fit_vectors={self.max_fit_vectors} must be >= codebook_size={self.codebook_size}"
            )

    @property
    def hop_length(self) -> int:
        """Samples between log-mel frames."""
        return self.sample_rate // (self.unit_rate * self.frames_per_unit)

    @property
    def samples_per_unit(self) -> int:
        return self.hop_length * self.frames_per_unit

    @property
    def frames_per_vector(self) -> int:
        """Log-mel frames stacked into one unit vector."""
        return self.frames_per_unit + 2 * self.context

    @property
    def frame_dim(self) -> int:
        """Values per feature frame (before stacking)."""
        base = self.n_mfcc if self.features == "mfcc" else self.n_mels
        return base * (1 + self.deltas)

    @property
    def feature_dim(self) -> int:
        return self.frames_per_vector * self.frame_dim

    @property
    def plain_logmel(self) -> bool:
        """Features are the log-mel frames themselves (centroids give log-mel directly)."""
        return (
            self.features == "logmel" and self.deltas == 0 and self.cmvn == "none" and not self.vtln
        )

    def num_units(self, num_samples: int) -> int:
        """Units produced (before dedup) for ``num_samples`` samples."""
        return math.ceil(num_samples / self.samples_per_unit)

    @classmethod
    def from_dict(cls, d: dict) -> UnitConfig:
        """Build from a dict, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"UnitConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)
