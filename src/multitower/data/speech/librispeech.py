"""LibriSpeech folder layout: a writer for generated corpora and a reader for both.

Layout (as in the LibriSpeech distribution)::

    root/
      <split>/                         e.g. test-clean, or aligned
        <speaker>/<chapter>/
          <speaker>-<chapter>-<utt>.flac     (or .wav)
          <speaker>-<chapter>.trans.txt      lines "<speaker>-<chapter>-<utt> TRANSCRIPT"

A generated corpus also keeps ``<speaker>-<chapter>.phones.json`` beside each
transcript file: the phone alignment of every utterance (:mod:`.phones`);
:func:`~.phones.read_phone_alignments` reads them, and a tree without them
(real LibriSpeech) is still read by :func:`read_librispeech`.

Speaker and chapter ids are decimal integers; ``<utt>`` is zero-padded to four
digits; transcripts are upper case. :func:`read_librispeech` reads this layout
from a corpus root or one split folder, real LibriSpeech included, and returns
transcripts normalised with :func:`~multitower.data.text.normalize_text`.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from multitower.data.errors import BadRecordError
from multitower.data.speech.audio import write_audio
from multitower.data.speech.phones import PhoneAlignment, phone_file_path, write_phone_file
from multitower.data.text import normalize_text
from multitower.io import temporary_file

AUDIO_SUFFIXES = (".flac", ".wav")
_UTT_ID = re.compile(r"(\d+)-(\d+)-(\d+)")


@dataclass(frozen=True)
class Utterance:
    """One utterance of a LibriSpeech-layout corpus.

    Attributes:
        id: ``"<speaker>-<chapter>-<utt>"``.
        path: the audio file.
        transcript: normalised, lower case.
        speaker: speaker id (the speaker folder name).
        chapter: chapter id (the chapter folder name).
    """

    id: str
    path: Path
    transcript: str
    speaker: str
    chapter: str


def utterance_id(speaker: int, chapter: int, index: int) -> str:
    """``"<speaker>-<chapter>-<index:04d>"``.

    Raises:
        ValueError: for negative ids.
    """
    if min(speaker, chapter, index) < 0:
        raise ValueError(
            f"speaker, chapter and index must be >= 0, got {speaker}, {chapter}, {index}"
        )
    return f"{speaker}-{chapter}-{index:04d}"


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = temporary_file(path)  # mode 0644 under umask 022, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LibriSpeechWriter:
    """Writes utterances into one split folder in the LibriSpeech layout.

    Audio is written as it arrives; the ``*.trans.txt`` files (and the
    ``*.phones.json`` files of chapters whose utterances came with phones) are
    written by :meth:`close` (use the writer as a context manager).

    Args:
        split_dir: the split folder (created if missing).
        sample_rate: sample rate of the audio given to :meth:`add`.
        audio_format: ``"flac"`` (LibriSpeech's) or ``"wav"``.
    """

    def __init__(
        self, split_dir: str | Path, *, sample_rate: int = 16000, audio_format: str = "flac"
    ) -> None:
        if audio_format not in ("flac", "wav"):
            raise ValueError(f"audio_format must be 'flac' or 'wav', got {audio_format!r}")
        self.split_dir = Path(split_dir)
        self.sample_rate = sample_rate
        self.audio_format = audio_format
        self._transcripts: dict[tuple[int, int], list[tuple[str, str]]] = {}
        self._phones: dict[tuple[int, int], dict[str, PhoneAlignment]] = {}
        self._ids: set[str] = set()

    def add(
        self,
        speaker: int,
        chapter: int,
        index: int,
        transcript: str,
        audio: torch.Tensor,
        *,
        phones: PhoneAlignment | None = None,
    ) -> Utterance:
        """Write one utterance's audio and remember its transcript (and phones).

        Args:
            speaker, chapter, index: the id parts.
            transcript: text; it is normalised and must stay non-empty.
            audio: ``(T,)`` float waveform at ``sample_rate``.
            phones: the utterance's phone alignment, if known; it must cover
                exactly ``audio`` at ``sample_rate``.

        Raises:
            ValueError: for a duplicate id, a transcript that is empty after
                normalisation, or phones that do not match the audio.
        """
        utt = utterance_id(speaker, chapter, index)
        if utt in self._ids:
            raise ValueError(f"duplicate utterance id {utt}")
        text = normalize_text(transcript)
        if not text:
            raise ValueError(
                f"utterance {utt}: transcript {transcript!r} is empty after normalisation"
            )
        if phones is not None and (
            phones.n_samples != audio.shape[-1] or phones.sample_rate != self.sample_rate
        ):
            raise ValueError(
                f"utterance {utt}: phones cover {phones.n_samples} samples at {phones.sample_rate} Hz, "
                f"the audio is {audio.shape[-1]} samples at {self.sample_rate} Hz"
            )
        folder = self.split_dir / str(speaker) / str(chapter)
        path = folder / f"{utt}.{self.audio_format}"
        write_audio(path, audio, self.sample_rate)
        if phones is not None:
            self._phones.setdefault((speaker, chapter), {})[utt] = phones
        self._ids.add(utt)
        self._transcripts.setdefault((speaker, chapter), []).append((utt, text))
        return Utterance(
            id=utt, path=path, transcript=text, speaker=str(speaker), chapter=str(chapter)
        )

    def add_written(
        self,
        speaker: int,
        chapter: int,
        index: int,
        transcript: str,
        *,
        phones: PhoneAlignment | None = None,
    ) -> Path:
        """Remember an utterance whose audio an earlier, interrupted writer already wrote.

        Returns:
            The audio path.

        Raises:
            FileNotFoundError: the audio file is not there.
            ValueError: a duplicate id or an empty transcript.
        """
        utt = utterance_id(speaker, chapter, index)
        path = self.split_dir / str(speaker) / str(chapter) / f"{utt}.{self.audio_format}"
        if not path.is_file():
            raise FileNotFoundError(f"utterance {utt}: no audio file {path} to resume from")
        text = normalize_text(transcript)
        if utt in self._ids or not text:
            raise ValueError(f"utterance {utt}: duplicate id or empty transcript {transcript!r}")
        if phones is not None:
            self._phones.setdefault((speaker, chapter), {})[utt] = phones
        self._ids.add(utt)
        self._transcripts.setdefault((speaker, chapter), []).append((utt, text))
        return path

    def close(self) -> None:
        """Write every ``<speaker>-<chapter>.trans.txt`` (upper case, sorted by id)
        and ``<speaker>-<chapter>.phones.json``."""
        for (speaker, chapter), lines in sorted(self._transcripts.items()):
            folder = self.split_dir / str(speaker) / str(chapter)
            body = "".join(f"{utt} {text.upper()}\n" for utt, text in sorted(lines))
            _atomic_write_text(folder / f"{speaker}-{chapter}.trans.txt", body)
            if (speaker, chapter) in self._phones:
                write_phone_file(
                    phone_file_path(folder, str(speaker), str(chapter)),
                    self._phones[(speaker, chapter)],
                )

    def __enter__(self) -> LibriSpeechWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()


def _read_chapter(trans_path: Path) -> list[Utterance]:
    """Utterances listed in one ``*.trans.txt``; checks every audio file is accounted for."""
    folder = trans_path.parent
    chapter, speaker = folder.name, folder.parent.name
    prefix = trans_path.name[: -len(".trans.txt")]
    try:
        lines = trans_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise BadRecordError(f"{trans_path}: transcript file is not UTF-8 text ({err})") from err
    out: list[Utterance] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        where = f"{trans_path}:{line_no}"
        if not _UTT_ID.fullmatch(utt) or not utt.startswith(prefix + "-"):
            raise BadRecordError(
                f"{where}: utterance id {utt!r} does not match '{prefix}-<number>'"
            )
        transcript = normalize_text(text)
        if not transcript:
            raise BadRecordError(f"{where}: utterance {utt} has an empty transcript")
        path = next(
            (folder / (utt + s) for s in AUDIO_SUFFIXES if (folder / (utt + s)).is_file()), None
        )
        if path is None:
            raise BadRecordError(f"{where}: no audio file {folder / utt}.flac or .wav")
        out.append(
            Utterance(id=utt, path=path, transcript=transcript, speaker=speaker, chapter=chapter)
        )
    listed = {u.id for u in out}
    for audio in sorted(
        p for p in folder.iterdir() if p.suffix in AUDIO_SUFFIXES and not p.name.startswith(".")
    ):
        if audio.stem not in listed:
            raise BadRecordError(f"{audio}: audio file has no transcript line in {trans_path}")
    return out


def read_librispeech(root_or_split_dir: str | Path, *, strict: bool = True) -> list[Utterance]:
    """Read every utterance under a LibriSpeech-layout folder.

    Walks ``root_or_split_dir`` for ``*.trans.txt`` files, so it accepts a split
    folder (``LibriSpeech/test-clean``) or a root with several splits (then all
    of them are returned). Audio is not decoded here, only checked to exist;
    :func:`~multitower.data.speech.audio.read_audio` reports unreadable audio.

    Args:
        root_or_split_dir: the folder to read.
        strict: raise on the first bad chapter; when False, skip bad chapters
            with a warning naming each.

    Returns:
        Utterances sorted by transcript-file path, then file order.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no ``*.trans.txt``.
        BadRecordError: (strict) for a malformed transcript line, a missing
            audio file, or an audio file without a transcript line; names the path.
    """
    root = Path(root_or_split_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech folder not found: {root}")
    trans_files = sorted(root.rglob("*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(
            f"no *.trans.txt files under {root}: not a LibriSpeech-layout folder"
        )
    out: list[Utterance] = []
    for trans_path in trans_files:
        try:
            out.extend(_read_chapter(trans_path))
        except BadRecordError as err:
            if strict:
                raise
            warnings.warn(f"skipping chapter: {err}", stacklevel=2)
    return out
