"""Phone labels of synthesised speech, from espeak-ng's phoneme events.

espeak-ng reports every phoneme it speaks (``espeakEVENT_PHONEME``, with
``espeakINITIALIZE_PHONEME_EVENTS``) with the sample at which it starts; the
worker (``_espeak_worker.py``) returns these events with the audio and
:func:`phones_from_events` turns them into a :class:`PhoneAlignment`: segments
that tile the utterance, at the output sample rate. They are used only to
*measure* speech units (:mod:`multitower.eval.units`), never to fit them.

Label set: espeak-ng's ASCII phoneme mnemonics (Kirshenbaum-like: ``D`` as in
"the", ``@`` schwa, ``a`` as in "cat", ``3:`` as in "world", ``oU``, ``tS``...)
as its English voices produce them, so en-us and en-gb phonemes mix (``0`` and
``A:`` for the vowel of "on"). Cleaning (:func:`clean_phone_label`):

* stress and syllable marks are stripped: ``'`` (primary), ``,`` (secondary),
  ``%`` and ``=`` (unstressed / syllabic); digits that are part of a mnemonic
  stay (``@2`` and ``@`` are distinct espeak phonemes);
* every pause phoneme (``_``, ``_:``, ``_!``, ...) becomes ``_`` (silence), and
  the audio before the first phoneme is ``_`` too;
* zero-length events are dropped and consecutive equal labels merged.

Storage, beside a LibriSpeech chapter's ``<speaker>-<chapter>.trans.txt``: one
``<speaker>-<chapter>.phones.json`` (see :func:`write_phone_file`)::

    {"format": "multitower-phones", "version": 1, "sample_rate": 16000,
     "utterances": {"<utt-id>": {"n_samples": N, "starts": [0, ...], "labels": ["_", ...]}}}

Segment ``i`` covers samples ``[starts[i], starts[i + 1])`` (the last one ends
at ``n_samples``); ``starts[0] == 0`` and starts strictly increase.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from multitower.data.errors import BadRecordError
from multitower.io import temporary_file

PHONES_FORMAT = "multitower-phones"
PHONES_FORMAT_VERSION = 1
PHONES_SUFFIX = ".phones.json"
SILENCE = "_"
_STRESS_MARKS = "',%="


def clean_phone_label(name: str) -> str:
    """An espeak-ng mnemonic without stress marks; pauses become ``"_"``.

    Raises:
        ValueError: if nothing is left (the event carried no phoneme name).
    """
    label = "".join(ch for ch in name.strip() if ch not in _STRESS_MARKS)
    if label.startswith(SILENCE):
        return SILENCE
    if not label:
        raise ValueError(f"espeak-ng phoneme event {name!r} has no phoneme name")
    return label


@dataclass(frozen=True)
class PhoneAlignment:
    """Phone segments tiling one utterance.

    Attributes:
        starts: first sample of each segment; ``starts[0] == 0``, strictly increasing.
        labels: one cleaned phone label per segment.
        n_samples: length of the utterance in samples.
        sample_rate: in Hz.
    """

    starts: tuple[int, ...]
    labels: tuple[str, ...]
    n_samples: int
    sample_rate: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", tuple(int(s) for s in self.starts))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.sample_rate <= 0 or self.n_samples <= 0:
            raise ValueError(
                f"PhoneAlignment: sample_rate and n_samples must be positive, got {self.sample_rate}, {self.n_samples}"
            )
        if not self.starts or len(self.starts) != len(self.labels):
            raise ValueError(
                f"PhoneAlignment: need as many starts as labels, at least one; got {len(self.starts)} and {len(self.labels)}"
            )
        if self.starts[0] != 0:
            raise ValueError(
                f"PhoneAlignment: the first segment must start at 0, got {self.starts[0]}"
            )
        if any(b <= a for a, b in zip(self.starts, self.starts[1:])):
            raise ValueError("PhoneAlignment: segment starts must strictly increase")
        if self.starts[-1] >= self.n_samples:
            raise ValueError(
                f"PhoneAlignment: last start {self.starts[-1]} is not inside the audio ({self.n_samples} samples)"
            )
        bad = [
            lab for lab in self.labels if not isinstance(lab, str) or not lab or lab.strip() != lab
        ]
        if bad:
            raise ValueError(f"PhoneAlignment: labels must be non-empty strings, got {bad[:3]}")

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.n_samples / self.sample_rate

    def label_at(self, sample: int) -> str:
        """The label of the segment holding ``sample`` (clamped to the utterance)."""
        sample = min(max(int(sample), 0), self.n_samples - 1)
        return self.labels[bisect.bisect_right(self.starts, sample) - 1]

    def labels_at(self, samples: Iterable[int]) -> list[str]:
        """:meth:`label_at` of each sample."""
        return [self.label_at(s) for s in samples]

    def to_json(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "starts": list(self.starts),
            "labels": list(self.labels),
        }


def phones_from_events(
    events: Sequence[tuple[int, str]], native_rate: int, sample_rate: int, n_samples: int
) -> PhoneAlignment:
    """Clean espeak-ng phoneme events into segments at ``sample_rate``.

    Args:
        events: ``(start sample at native_rate, mnemonic)`` in the order espeak-ng sent them.
        native_rate: espeak-ng's sample rate (22,050 Hz).
        sample_rate: the output audio's rate.
        n_samples: output audio length in samples.

    Returns:
        The alignment; an utterance without events is one silence segment.
    """
    starts: list[int] = [0]
    labels: list[str] = [SILENCE]
    for native_start, name in events:
        start = round(int(native_start) * sample_rate / native_rate)
        if start >= n_samples:
            continue  # the closing pause at the very end
        label = clean_phone_label(name)
        if start < starts[-1]:
            raise ValueError(f"espeak-ng phoneme events out of order at {name!r} ({native_start})")
        if start == starts[-1]:
            labels[-1] = label  # the earlier segment has no length
        else:
            starts.append(start)
            labels.append(label)
        if len(labels) >= 2 and labels[-1] == labels[-2]:
            starts.pop()
            labels.pop()
    return PhoneAlignment(tuple(starts), tuple(labels), n_samples, sample_rate)


def phone_file_path(chapter_dir: Path, speaker: str, chapter: str) -> Path:
    """``chapter_dir/<speaker>-<chapter>.phones.json``."""
    return Path(chapter_dir) / f"{speaker}-{chapter}{PHONES_SUFFIX}"


def write_phone_file(path: Path, alignments: dict[str, PhoneAlignment]) -> None:
    """Write one chapter's phone file atomically (a temporary file renamed into place).

    Raises:
        ValueError: if the alignments are empty or have different sample rates.
    """
    rates = {a.sample_rate for a in alignments.values()}
    if len(rates) != 1:
        raise ValueError(f"{path}: need alignments with one sample rate, got {sorted(rates)}")
    body = {
        "format": PHONES_FORMAT,
        "version": PHONES_FORMAT_VERSION,
        "sample_rate": rates.pop(),
        "utterances": {utt: alignments[utt].to_json() for utt in sorted(alignments)},
    }
    path = Path(path)
    fd, tmp = temporary_file(path)  # mode 0644 under umask 022, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_phone_file(path: Path) -> dict[str, PhoneAlignment]:
    """Read and verify one chapter's phone file.

    Raises:
        BadRecordError: naming the file, if it is not valid JSON, not this
            format and version, or holds an invalid alignment (unordered or
            out-of-audio starts, missing labels, an id of another chapter).
    """
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRecordError(f"{path}: unreadable phone file ({err})") from err
    if (
        not isinstance(body, dict)
        or body.get("format") != PHONES_FORMAT
        or body.get("version") != PHONES_FORMAT_VERSION
        or not isinstance(body.get("utterances"), dict)
        or not isinstance(body.get("sample_rate"), int)
    ):
        raise BadRecordError(
            f"{path}: not a {PHONES_FORMAT} v{PHONES_FORMAT_VERSION} file (needs format, version, sample_rate, utterances)"
        )
    prefix = path.name[: -len(PHONES_SUFFIX)] + "-"
    out: dict[str, PhoneAlignment] = {}
    for utt, entry in body["utterances"].items():
        if not utt.startswith(prefix):
            raise BadRecordError(
                f"{path}: utterance {utt!r} does not belong to chapter {prefix[:-1]}"
            )
        try:
            out[utt] = PhoneAlignment(
                tuple(entry["starts"]),
                tuple(entry["labels"]),
                entry["n_samples"],
                body["sample_rate"],
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BadRecordError(f"{path}: utterance {utt}: bad phone alignment ({err!r})") from err
    return out


def read_phone_alignments(root_or_split_dir: str | Path) -> dict[str, PhoneAlignment]:
    """Every utterance's phones under a LibriSpeech-layout folder.

    Returns:
        ``{utterance id: alignment}``; empty for a tree without phone files
        (a real LibriSpeech download).

    Raises:
        FileNotFoundError: if the folder does not exist.
        BadRecordError: for a malformed phone file (names it).
    """
    root = Path(root_or_split_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech folder not found: {root}")
    out: dict[str, PhoneAlignment] = {}
    for path in sorted(root.rglob("*" + PHONES_SUFFIX)):
        out.update(read_phone_file(path))
    return out
