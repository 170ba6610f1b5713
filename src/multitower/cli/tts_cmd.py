"""Synthesise speech with a trained speech-text run.

    multitower tts "some text" -o out.wav [--run-dir runs/zipper_speech_text] [--model NAME]

The text is normalised (lower case, punctuation dropped); characters the text
tokenizer cannot encode are an error. Units are rendered to audio by their
centroid log-mel frames and Griffin-Lim, written atomically.

With --check the written file is read back, encoded into units again and
transcribed by the run's TTS scorer (its unit recogniser and decoder): the line
``heard: ...`` with the word error rate against the text says whether the audio
says what was asked (the round trip the run's ``benchmarks/tts_roundtrip.py``
measures on the test sentences).

Speech is decoded by beam search (4 beams, as the run's evaluation; --beams 1 is
greedy) unless --temperature asks for sampling.

Unless --max-new-tokens is given, the speech is cut at twice the length the
run's corpus predicts for the text (its units per character on the aligned
pairs); the output says when that cap was hit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multitower.cli.common import add_threads_argument, set_threads
from multitower.cli.speech_cmd import add_common_arguments, load_components
from multitower.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to say")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output WAV path")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="most speech units to generate (default: twice the corpus's units per "
        "character times the text's characters, within the speech tower's max_seq_len)",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--beams",
        type=int,
        default=None,
        help="beam search with this many beams (default: 4, as the run's evaluation; "
        "1 when --temperature is given: sampling)",
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=1.0,
        help="finished beams rank by log-probability / length ** this (default 1)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="read the written audio back and print what the run's TTS scorer hears",
    )
    add_common_arguments(parser)
    add_threads_argument(parser)


def speech_room(model: nn.Module, text_tokens: int) -> int:
    """Most speech units the model's tower can hold after a ``text_tokens``-token prompt.

    A Zipper's speech tower holds only the speech segment (bos, units, eos); the
    baseline's one tower holds the text segment (bos, text, eos) too.
    """
    mods = model.modalities
    tower = mods["speech"].tower
    prompt = text_tokens + 2 if mods["text"].tower == tower else 0
    return max(1, model.max_seq_lens[tower] - prompt - 2)


def decoding_beams(args: argparse.Namespace) -> int:
    """Beams to decode with: --beams, or 4 (1 when sampling); refuses beams with sampling."""
    if args.beams is not None and args.beams < 1:
        raise UserError(f"--beams must be >= 1, got {args.beams}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.length_penalty < 0:
        raise UserError(f"--length-penalty must be >= 0, got {args.length_penalty}")
    if args.temperature > 0:
        if args.beams is not None and args.beams > 1:
            raise UserError("--beams > 1 is beam search, which does not sample: drop --temperature")
        return 1
    return 4 if args.beams is None else args.beams


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from multitower.data.speech.resynth import units_to_wav
    from multitower.data.text import normalize_text
    from multitower.experiments.zipper_speech_text.experiment import UNIT_OFFSET
    from multitower.generation import generate
    from multitower.generation.interleaved_beam import generate_beam
    from multitower.interleave import Segment

    if args.output.is_dir():
        raise UserError(f"-o {args.output} is a directory; give the path of a .wav file")
    beams = decoding_beams(args)
    c = load_components(args.run_dir, args.model)
    text = normalize_text(args.text)
    if not text:
        raise UserError("the text is empty after normalisation")
    try:
        ids = c.text_tokenizer.encode(text)
    except ValueError as err:
        raise UserError(str(err)) from err
    limit, why = length_limit(args, text, len(ids), c.model)
    try:
        if beams > 1:
            tokens = generate_beam(
                c.model,
                [[Segment("text", ids)]],
                "speech",
                num_beams=beams,
                length_penalty=args.length_penalty,
                max_new_tokens=limit,
            )[0]
        else:
            out = generate(
                c.model,
                [[Segment("text", ids)]],
                ["speech"],
                max_new_tokens=limit,
                temperature=args.temperature,
                generator=torch.Generator().manual_seed(args.seed),
            )
            tokens = out[0][0].tokens
    except ValueError as err:  # e.g. a text longer than the text tower takes
        raise UserError(str(err)) from err
    units = torch.tensor([u - UNIT_OFFSET for u in tokens if u >= UNIT_OFFSET], dtype=torch.long)
    if units.numel() == 0:
        raise UserError("the model generated no speech units for this text")
    audio = units_to_wav(
        args.output, units, c.unit_tokenizer, deduped=c.unit_tokenizer.config.dedup
    )
    seconds = audio.numel() / c.unit_tokenizer.config.sample_rate
    print(f"wrote {args.output} ({units.numel()} units, {seconds:.2f} s) with model {c.model_name}")
    if len(tokens) >= limit:
        print(
            f"length cap hit: the model did not end the speech itself; cut at {limit} units ({why})"
        )
    if args.check:
        heard = hear(args.run_dir, args.output, c.unit_tokenizer)
        from multitower.experiments.zipper_speech_text.evaluate import wer

        print(f"heard: {heard!r} (WER {100 * wer([text], [heard]):.1f}% against {text!r})")
    return 0


def hear(run_dir: Path, wav: Path, unit_tokenizer: object) -> str:
    """What the run's TTS scorer transcribes from the audio file ``wav``."""
    from multitower.data.speech import read_audio
    from multitower.experiments.zipper_speech_text.experiment import speech_ids
    from multitower.experiments.zipper_speech_text.recognizer import load_scorer, transcribe

    try:
        recognizer, alphabet, decoder = load_scorer(run_dir / "recognizer")
    except (OSError, ValueError) as err:
        raise UserError(f"--check needs the run's TTS scorer: {err}") from err
    tok: Any = unit_tokenizer
    units = speech_ids(tok, read_audio(wav, tok.config.sample_rate))
    return transcribe(recognizer, alphabet, [units], decoder=decoder)[0]


def length_limit(
    args: argparse.Namespace, text: str, text_tokens: int, model: nn.Module
) -> tuple[int, str]:
    """The most units to generate and why: --max-new-tokens, else the cap from the text.

    The cap is :func:`speech_length_cap` on the run's measured units per character,
    never more than the speech tower's room; when the rate cannot be measured (the
    corpus was moved) the room alone, said on stderr.
    """
    from multitower.experiments.zipper_speech_text.speech_rate import (
        LENGTH_MARGIN,
        speech_length_cap,
        units_per_character,
    )

    room = speech_room(model, text_tokens)
    if args.max_new_tokens is not None:
        return args.max_new_tokens, "--max-new-tokens"
    try:
        rate = units_per_character(args.run_dir)
    except (ValueError, OSError) as err:
        print(f"multitower tts: cannot measure units per character ({err})", file=sys.stderr)
        return room, f"the speech tower's max_seq_len leaves room for {room}"
    cap = speech_length_cap(text, rate)
    if cap > room:
        return room, f"the speech tower's max_seq_len leaves room for {room}"
    return cap, f"{LENGTH_MARGIN:g} x {rate:.2f} units per character x {len(text)} characters"
