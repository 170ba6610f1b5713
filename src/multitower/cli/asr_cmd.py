"""Transcribe speech with a trained speech-text run.

    multitower asr FILE.wav [FILE2.flac ...] [--run-dir runs/zipper_speech_text] [--model NAME]

Audio at another sample rate is resampled (soxr) and multi-channel audio is
down-mixed to mono; each conversion is reported on stderr. A file shorter than
--min-seconds, unreadable or empty is an error (checked for every file before any
is transcribed); a silent file prints "(no speech)" instead of a transcript.

Prints one line per file, ``path<TAB>transcript``, for one file as for several.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.cli.speech_cmd import add_common_arguments, load_components
from multitower.errors import UserError

NO_SPEECH = "(no speech)"
# Below this RMS level (dBFS) a file is taken as silence: speech recorded even at a
# very low gain sits around -40 dBFS, digital silence at -inf.
SILENCE_DBFS = -60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", type=Path, nargs="+", help="wav or flac files")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        help="longest transcript, in text tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.25,
        help="shorter audio is refused as too short to hold a word (default: %(default)s)",
    )
    add_common_arguments(parser)
    add_threads_argument(parser)


def rms_dbfs(audio: torch.Tensor) -> float:
    """Root-mean-square level of a waveform in dB relative to full scale (-inf for zeros)."""
    rms = float(audio.double().pow(2).mean().sqrt())
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from multitower.data.errors import BadRecordError
    from multitower.data.speech.audio import load_audio
    from multitower.experiments.zipper_speech_text.experiment import speech_ids
    from multitower.generation import generate
    from multitower.interleave import Segment

    c = load_components(args.run_dir, args.model)
    loaded = []
    for path in args.audio:  # every file is checked before any is transcribed
        try:
            audio = load_audio(path, c.unit_tokenizer.config.sample_rate)
        except BadRecordError as err:
            raise UserError(str(err)) from err
        if audio.seconds < args.min_seconds:
            raise UserError(
                f"{path}: {audio.seconds:.2f} s of audio is shorter than --min-seconds "
                f"{args.min_seconds:g}"
            )
        if audio.conversions:
            print(f"multitower asr: {path}: {', '.join(audio.conversions)}", file=sys.stderr)
        loaded.append(audio)
    for path, audio in zip(args.audio, loaded):
        level = rms_dbfs(audio.audio)
        if level < SILENCE_DBFS:
            print(
                f"multitower asr: {path}: level {level:.0f} dBFS is below {SILENCE_DBFS:g} dBFS: "
                "silence, not transcribed",
                file=sys.stderr,
            )
            text = NO_SPEECH
        else:
            units = speech_ids(c.unit_tokenizer, audio.audio)
            try:
                out = generate(
                    c.model,
                    [[Segment("speech", units)]],
                    ["text"],
                    max_new_tokens=args.max_new_tokens,
                )
            except ValueError as err:  # e.g. audio longer than the speech tower takes
                raise UserError(f"{path}: {err}") from err
            text = c.text_tokenizer.decode(out[0][0].tokens)
        print(f"{path}\t{text}")
    return 0
