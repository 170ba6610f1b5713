"""How good are speech units? Phone purity, PNMI, speaker information, cross-voice distance.

Pure functions over unit sequences, phone labels and speaker ids, and
:func:`evaluate_unit_tokenizer`, which runs a fitted tokenizer over a corpus's
held-out speech and applies them (the ``units-report`` command calls it).

Frame-to-phone alignment. Unit ``i`` of an utterance covers samples
``[i * S, (i + 1) * S)`` with ``S`` samples per unit; its phone is the phone
segment holding the unit's centre sample ``i * S + S // 2`` (clamped to the
last sample: the last unit may run past the audio). See
:func:`unit_phone_labels`.

Held-out estimates. Utterances are split into two halves within each speaker:
a speaker's utterances, in the given order, go alternately to half 0 and half
1, so both halves hold every speaker. Every statistic is fitted on one half and scored on the other,
both ways, and the scores are pooled: each frame is scored once, by a model
that never saw its utterance.

* phone purity: accuracy of the majority mapping unit -> most frequent phone
  (a unit unseen in the fitting half maps to the most frequent phone).
* cross-entropies ``CE(t | c)`` in bits: the mean of ``-log2 q(t | c)`` over
  the scored frames, with ``q`` an interpolated back-off model fitted on the
  other half: ``q(t | c) = (n(c, t) + alpha * q(t | c')) / (n(c) + alpha)``,
  where ``c'`` drops the last context variable, down to the add-one marginal
  ``q(t) = (n(t) + 1) / (N + |T|)``. ``alpha`` is chosen per level from
  :data:`ALPHA_GRID` (0.01 to 10,000) for the lowest pooled held-out
  cross-entropy: one number per level, so sparse contexts (a large codebook
  times 70 phones) back off to the coarser model instead of being charged for
  their sparsity, and information a unit does not carry reads as ~0, not as
  a negative number.
* PNMI lower bound: ``(H(phone) - CE(phone | unit)) / H(phone)``, ``H(phone)``
  the plug-in entropy of all frames' phones. A held-out cross-entropy is in
  expectation at least the true conditional entropy, so this bounds the
  phone-normalised mutual information from below (up to the plug-in H).
* speaker information beyond the phone:
  ``(CE(spk | phone) - CE(spk | phone, unit)) / CE(spk | phone)``: the share
  of the speaker uncertainty left by the phone that the unit removes (0: the
  unit says nothing more about the speaker than the phone does).
* normalised edit distance of two unit sequences: Levenshtein distance of the
  de-duplicated sequences divided by the longer one's length (0 identical,
  1 nothing in common). ``cross_voice``: renderings of the same sentence by two
  speakers with different espeak-ng voices at the same rate and pitch.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from multitower.data.speech.phones import PhoneAlignment

if TYPE_CHECKING:
    from multitower.data.speech.corpus import SpeechCorpus
    from multitower.data.speech.synth import Synthesizer
    from multitower.data.speech.units import SpeechUnitTokenizer

# Back-off weights tried per level (see the module docstring).
ALPHA_GRID = tuple(float(10 ** (e / 2)) for e in range(-4, 9))  # 0.01 ... 10,000


# ----------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------
def unit_phone_labels(phones: PhoneAlignment, n_units: int, samples_per_unit: int) -> list[str]:
    """The phone at each unit's centre sample (see the module docstring).

    Args:
        phones: the utterance's phone alignment.
        n_units: units of the utterance (before any de-duplication).
        samples_per_unit: audio samples per unit, at ``phones.sample_rate``.

    Raises:
        ValueError: for a non-positive ``samples_per_unit`` or a unit count that
            does not fit the audio (more than one unit past its end).
    """
    if samples_per_unit <= 0:
        raise ValueError(f"samples_per_unit must be positive, got {samples_per_unit}")
    expected = math.ceil(phones.n_samples / samples_per_unit)
    if abs(n_units - expected) > 1:
        raise ValueError(
            f"{n_units} units do not cover {phones.n_samples} samples at {samples_per_unit} "
            f"samples per unit (expected about {expected})"
        )
    return phones.labels_at(i * samples_per_unit + samples_per_unit // 2 for i in range(n_units))


# ----------------------------------------------------------------------------
# Frame-level measures
# ----------------------------------------------------------------------------
def _codes(values: Sequence[object]) -> tuple[np.ndarray, int]:
    """Integer codes ``(N,)`` of hashable values and the number of distinct ones."""
    index: dict[object, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))
    return codes, len(index)


def _lookup(fit_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """How often each ``query`` key occurs in ``fit_keys``."""
    keys, counts = np.unique(fit_keys, return_counts=True)
    if len(keys) == 0:
        return np.zeros(len(query), np.int64)
    pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    return np.where(keys[pos] == query, counts[pos], 0)


def _held_out_probs(
    target: np.ndarray,
    contexts: Sequence[np.ndarray],
    fold: np.ndarray,
    n_targets: int,
    alpha: float | None,
) -> np.ndarray:
    """Held-out ``q(target | contexts)`` of every frame (module docstring's back-off model).

    Args:
        target: ``(N,)`` codes in ``[0, n_targets)``.
        contexts: context variables, coarsest first, each ``(N,)`` non-negative codes.
        fold: ``(N,)`` 0 or 1; frames of fold ``f`` are scored by a model fitted on the other.
        alpha: back-off weight of every level, or ``None``: per level, the value
            of :data:`ALPHA_GRID` with the lowest pooled held-out cross-entropy.
    """
    folds = [(fold != f, fold == f) for f in (0, 1)]
    q = np.zeros(len(target))
    for fit, ev in folds:
        q[ev] = (_lookup(target[fit], target[ev]) + 1.0) / (int(fit.sum()) + n_targets)
    key = np.zeros(len(target), np.int64)
    for context in contexts:
        key = key * (int(context.max()) + 1) + context
        n_c, n_ct = np.zeros(len(target)), np.zeros(len(target))
        for fit, ev in folds:
            n_c[ev] = _lookup(key[fit], key[ev])
            joint = key * n_targets + target
            n_ct[ev] = _lookup(joint[fit], joint[ev])
        grid = ALPHA_GRID if alpha is None else (alpha,)
        candidates = [(n_ct + a * q) / (n_c + a) for a in grid]
        q = min(candidates, key=lambda c: float(-np.log2(c).sum()))
    return q


def held_out_cross_entropy(
    target: Sequence[object],
    contexts: Sequence[Sequence[object]],
    fold: Sequence[int],
    *,
    alpha: float | None = None,
) -> float:
    """``CE(target | contexts)`` in bits, fitted on one fold and scored on the other.

    Args:
        target: one value per frame.
        contexts: context variables, coarsest first, each one value per frame
            (``[]``: the add-one marginal).
        fold: 0 or 1 per frame (both must occur).
        alpha: back-off weight; ``None`` picks it per level from :data:`ALPHA_GRID`.

    Raises:
        ValueError: for mismatched lengths, a fold that is empty, or ``alpha <= 0``.
    """
    fold_arr = np.asarray(fold, np.int64)
    if alpha is not None and alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if any(len(c) != len(target) for c in contexts) or len(fold_arr) != len(target):
        raise ValueError("target, contexts and fold need one value per frame")
    if set(np.unique(fold_arr).tolist()) != {0, 1}:
        raise ValueError("fold must hold only 0 and 1, each at least once")
    t, n_t = _codes(target)
    probs = _held_out_probs(t, [_codes(c)[0] for c in contexts], fold_arr, n_t, alpha)
    return float(-np.log2(probs).mean())


def entropy(values: Sequence[object]) -> float:
    """Plug-in entropy in bits."""
    counts = np.array(list(Counter(values).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def held_out_purity(units: Sequence[int], phones: Sequence[str], fold: Sequence[int]) -> float:
    """Majority-mapping phone accuracy, each fold mapped by the other's counts."""
    correct = 0
    for f in (0, 1):
        counts: dict[int, Counter[str]] = {}
        overall: Counter[str] = Counter()
        for u, p, g in zip(units, phones, fold):
            if g != f:
                counts.setdefault(u, Counter())[p] += 1
                overall[p] += 1
        fallback = overall.most_common(1)[0][0] if overall else None
        best = {u: c.most_common(1)[0][0] for u, c in counts.items()}
        correct += sum(best.get(u, fallback) == p for u, p, g in zip(units, phones, fold) if g == f)
    return correct / len(units)


@dataclass(frozen=True)
class FrameMeasures:
    """Frame-level unit quality (module docstring).

    Attributes:
        phone_purity: held-out majority-mapping phone accuracy.
        pnmi: held-out PNMI lower bound.
        speaker_info: held-out speaker information beyond the phone.
        phone_entropy: ``H(phone)``, bits.
        ce_phone_given_unit, ce_speaker_given_phone, ce_speaker_given_phone_unit: bits.
        n_frames, n_utterances, n_units_used, n_phones: sizes.
    """

    phone_purity: float
    pnmi: float
    speaker_info: float
    phone_entropy: float
    ce_phone_given_unit: float
    ce_speaker_given_phone: float
    ce_speaker_given_phone_unit: float
    n_frames: int
    n_utterances: int
    n_units_used: int
    n_phones: int


def frame_measures(
    units: Sequence[Sequence[int]],
    phones: Sequence[Sequence[str]],
    speakers: Sequence[str],
    *,
    alpha: float | None = None,
) -> FrameMeasures:
    """Phone purity, PNMI and speaker information of frame-level units.

    Args:
        units: per utterance, one unit id per frame (not de-duplicated).
        phones: per utterance, the phone of each frame (:func:`unit_phone_labels`).
        speakers: per utterance, its speaker id.
        alpha: back-off weight of the held-out models (``None``: chosen per level).

    Raises:
        ValueError: for mismatched lengths, an empty utterance, or no speaker
            with two utterances (then one half would be empty).
    """
    if not len(units) == len(phones) == len(speakers):
        raise ValueError(
            f"need one unit sequence, phone sequence and speaker per utterance, got {len(units)}, {len(phones)}, {len(speakers)}"
        )
    if max(Counter(speakers).values(), default=0) < 2:
        raise ValueError("need a speaker with at least two utterances for held-out estimates")
    for i, (u, p) in enumerate(zip(units, phones)):
        if len(u) != len(p) or len(u) == 0:
            raise ValueError(
                f"utterance {i}: {len(u)} units and {len(p)} phone labels (need equal, non-zero)"
            )
    flat_units = [int(x) for seq in units for x in seq]
    flat_phones = [p for seq in phones for p in seq]
    flat_speakers = [s for s, seq in zip(speakers, units) for _ in range(len(seq))]
    seen: Counter[str] = Counter()
    utt_fold = []
    for s in speakers:
        utt_fold.append(seen[s] % 2)  # alternate within each speaker
        seen[s] += 1
    fold = [f for f, seq in zip(utt_fold, units) for _ in range(len(seq))]
    h_phone = entropy(flat_phones)
    ce_pu = held_out_cross_entropy(flat_phones, [flat_units], fold, alpha=alpha)
    ce_sp = held_out_cross_entropy(flat_speakers, [flat_phones], fold, alpha=alpha)
    ce_spu = held_out_cross_entropy(flat_speakers, [flat_phones, flat_units], fold, alpha=alpha)
    return FrameMeasures(
        phone_purity=held_out_purity(flat_units, flat_phones, fold),
        pnmi=(h_phone - ce_pu) / h_phone if h_phone > 0 else 0.0,
        speaker_info=(ce_sp - ce_spu) / ce_sp if ce_sp > 0 else 0.0,
        phone_entropy=h_phone,
        ce_phone_given_unit=ce_pu,
        ce_speaker_given_phone=ce_sp,
        ce_speaker_given_phone_unit=ce_spu,
        n_frames=len(flat_units),
        n_utterances=len(units),
        n_units_used=len(set(flat_units)),
        n_phones=len(set(flat_phones)),
    )


# ----------------------------------------------------------------------------
# Sequence distances
# ----------------------------------------------------------------------------
def dedup(seq: Sequence[int]) -> list[int]:
    """Merge runs of repeated units."""
    return [int(x) for i, x in enumerate(seq) if i == 0 or x != seq[i - 1]]


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (unit costs), one numpy row at a time."""
    if len(a) < len(b):
        a, b = b, a
    if len(b) == 0:
        return len(a)
    b_arr = np.asarray(b, np.int64)
    j = np.arange(len(b) + 1)
    prev = j.copy()  # row 0: j insertions
    for i, x in enumerate(a, start=1):
        # Deletion or substitution first, then insertions as a running minimum:
        # row[j] = min_k (t[k] + j - k).
        t = np.empty(len(b) + 1, np.int64)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (b_arr != x))
        prev = np.minimum.accumulate(t - j) + j
    return int(prev[-1])


def normalized_edit_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Edit distance of the de-duplicated sequences / the longer one's length (0 if both empty)."""
    a, b = dedup(a), dedup(b)
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


@dataclass(frozen=True)
class RenderingDistances:
    """Mean normalised edit distances between renderings (module docstring).

    Attributes:
        cross_voice: same sentence, different voice, same rate and pitch.
        pitch_differs: same sentence, voice and rate; other pitch.
        rate_differs: same sentence, voice and pitch; other rate.
        any_speaker: same sentence, any two speakers.
        different_sentence_same_speaker: two different sentences, one speaker
            (the reference for "nothing in common").
        n_sentences: sentences with at least two renderings.
    """

    cross_voice: float
    pitch_differs: float
    rate_differs: float
    any_speaker: float
    different_sentence_same_speaker: float
    n_sentences: int


def rendering_distances(
    renderings: Mapping[tuple[str, str], Sequence[int]],
    voices: Mapping[str, tuple[str, int, int]],
) -> RenderingDistances:
    """Distances between unit sequences of the same / different sentences.

    Args:
        renderings: ``{(sentence, speaker): units}``.
        voices: ``{speaker: (espeak voice name, rate, pitch)}`` of every speaker used.

    Returns:
        The means (``nan`` where no pair of that kind exists).

    Raises:
        ValueError: for a speaker missing from ``voices``.
    """
    unknown = sorted({spk for _, spk in renderings} - set(voices))
    if unknown:
        raise ValueError(f"rendering_distances: speakers {unknown} have no voice")
    by_sentence: dict[str, dict[str, Sequence[int]]] = {}
    by_speaker: dict[str, dict[str, Sequence[int]]] = {}
    for (sentence, speaker), units in renderings.items():
        by_sentence.setdefault(sentence, {})[speaker] = units
        by_speaker.setdefault(speaker, {})[sentence] = units
    kinds: dict[str, list[float]] = {
        k: [] for k in ("cross_voice", "pitch_differs", "rate_differs", "any_speaker")
    }
    for spk_units in by_sentence.values():
        for s1, s2 in itertools.combinations(sorted(spk_units), 2):
            (v1, r1, p1), (v2, r2, p2) = voices[s1], voices[s2]
            d = normalized_edit_distance(spk_units[s1], spk_units[s2])
            kinds["any_speaker"].append(d)
            if v1 != v2 and (r1, p1) == (r2, p2):
                kinds["cross_voice"].append(d)
            elif v1 == v2 and r1 == r2 and p1 != p2:
                kinds["pitch_differs"].append(d)
            elif v1 == v2 and p1 == p2 and r1 != r2:
                kinds["rate_differs"].append(d)
    different = []
    for sent_units in by_speaker.values():
        ordered = sorted(sent_units)
        different += [
            normalized_edit_distance(sent_units[a], sent_units[b])
            for a, b in itertools.pairwise(ordered)
        ]

    def mean(xs: list[float]) -> float:
        return float(np.mean(xs)) if xs else math.nan

    return RenderingDistances(
        **{k: mean(v) for k, v in kinds.items()},
        different_sentence_same_speaker=mean(different),
        n_sentences=sum(len(v) >= 2 for v in by_sentence.values()),
    )


@dataclass(frozen=True)
class UnitsReport:
    """Everything ``multitower units-report`` prints and saves.

    Attributes:
        frames: the frame-level measures.
        distances: the rendering distances.
        units_per_second: units per second of audio as the tokenizer emits
            them (after its own de-duplication, if any).
    """

    frames: FrameMeasures
    distances: RenderingDistances
    units_per_second: float

    def to_dict(self) -> dict:
        """The four headline numbers first, then every detail (``nan`` becomes ``None``)."""

        def plain(d: dict) -> dict:
            return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}

        return plain(
            {
                "pnmi": self.frames.pnmi,
                "phone_purity": self.frames.phone_purity,
                "speaker_info": self.frames.speaker_info,
                "cross_voice_distance": self.distances.cross_voice,
                "different_sentence_distance": self.distances.different_sentence_same_speaker,
                "units_per_second": self.units_per_second,
                "frames": plain(asdict(self.frames)),
                "distances": plain(asdict(self.distances)),
            }
        )


# ----------------------------------------------------------------------------
# A tokenizer on a corpus
# ----------------------------------------------------------------------------
def speaker_balanced(utterances: Sequence[Any], n: int | None) -> list[Any]:
    """The first ``n`` utterances taken round-robin over their speakers.

    A split is stored speaker by speaker, so its first ``n`` utterances may hold
    only a few speakers (the first 1,000 of 4,000 over 16 speakers hold 4); taking
    one per speaker in turn keeps every speaker in the measures. Within a speaker
    the stored order is kept. ``None``: all of them.
    """
    by_speaker: dict[Any, list[Any]] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    queues = list(by_speaker.values())
    out: list[Any] = []
    depth = 0
    while queues and (n is None or len(out) < n):
        queues = [q for q in queues if depth < len(q)]
        for q in queues:
            if n is not None and len(out) >= n:
                break
            out.append(q[depth])
        depth += 1
    return out


def evaluate_unit_tokenizer(
    tokenizer: SpeechUnitTokenizer,
    corpus: SpeechCorpus,
    *,
    split: str = "aligned",
    max_utterances: int | None = 1000,
    n_sentences: int = 24,
    synthesizer: Synthesizer | None = None,
) -> UnitsReport:
    """Measure a unit tokenizer on a corpus's held-out speech.

    Frame-level measures use ``max_utterances`` utterances (taken round-robin over the speakers) of
    ``split`` (the tokenizer should have been fitted on ``unaligned`` only);
    the rendering distances use the first ``n_sentences`` sentences of the
    ``test`` split (or of ``split`` when ``test`` is empty) spoken by every
    speaker of the corpus, synthesised here.

    Raises:
        ValueError: if the corpus has no phone labels, the split is too small,
            or the tokenizer's sample rate is not the corpus's.
    """
    from multitower.data.speech.audio import read_audio
    from multitower.data.speech.synth import Synthesizer

    cfg = tokenizer.config
    if cfg.sample_rate != corpus.config.sample_rate:
        raise ValueError(
            f"the unit tokenizer expects {cfg.sample_rate} Hz audio, the corpus {corpus.root} is {corpus.config.sample_rate} Hz"
        )
    utterances = speaker_balanced(corpus.utterances(split), max_utterances)
    if len(utterances) < 2:
        raise ValueError(
            f"{corpus.split_dir(split)}: need at least two utterances, got {len(utterances)}"
        )
    phones = corpus.phones(split)
    units, labels, speakers = [], [], []
    emitted = 0
    seconds = 0.0
    for utt in utterances:
        audio = read_audio(utt.path, cfg.sample_rate)  # (T,)
        frame_units = tokenizer.encode(audio, dedup=False, speaker=utt.speaker).tolist()
        units.append(frame_units)
        labels.append(unit_phone_labels(phones[utt.id], len(frame_units), cfg.samples_per_unit))
        speakers.append(utt.speaker)
        # What encode() emits by default: the frame units, de-duplicated if configured.
        emitted += len(dedup(frame_units)) if cfg.dedup else len(frame_units)
        seconds += audio.shape[0] / cfg.sample_rate
    frames = frame_measures(units, labels, speakers)

    source = corpus.utterances("test") or utterances
    sentences = [u.transcript for u in source[:n_sentences]]
    voices = {
        spk: (v["voice"], v["rate"], v["pitch"]) for spk, v in corpus.manifest["speakers"].items()
    }
    owned = Synthesizer(cfg.sample_rate) if synthesizer is None else None
    synth = synthesizer if synthesizer is not None else owned
    assert synth is not None
    try:
        renderings = {
            (sentence, spk): tokenizer.encode(
                synth.synthesize(sentence, corpus.speaker_voice(spk)), speaker=spk
            ).tolist()
            for sentence in sentences
            for spk in voices
        }
    finally:
        if owned is not None:
            owned.close()
    return UnitsReport(frames, rendering_distances(renderings, voices), emitted / seconds)
