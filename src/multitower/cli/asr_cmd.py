"""Transcribe speech with a trained speech-text run.

    multitower asr FILE.wav [FILE2.flac ...] [--run-dir runs/zipper_speech_text] [--model NAME]

Audio at another sample rate is resampled; unreadable or empty files are errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multitower.cli.speech_cmd import add_common_arguments, load_components
from multitower.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", type=Path, nargs="+", help="wav or flac files")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from multitower.data.errors import BadRecordError
    from multitower.data.speech import read_audio
    from multitower.experiments.zipper_speech_text.experiment import UNIT_OFFSET
    from multitower.generation import generate
    from multitower.interleave import Segment

    c = load_components(args.run_dir, args.model)
    for path in args.audio:
        try:
            audio = read_audio(path, c.unit_tokenizer.config.sample_rate)
        except BadRecordError as err:
            raise UserError(str(err)) from err
        units = [int(u) + UNIT_OFFSET for u in c.unit_tokenizer.encode(audio)]
        out = generate(
            c.model, [[Segment("speech", units)]], ["text"], max_new_tokens=args.max_new_tokens
        )
        text = c.text_tokenizer.decode(out[0][0].tokens)
        print(f"{path}\t{text}" if len(args.audio) > 1 else text)
    return 0
