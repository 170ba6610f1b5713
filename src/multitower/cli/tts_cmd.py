"""Synthesise speech with a trained speech-text run.

    multitower tts "some text" -o out.wav [--run-dir runs/zipper_speech_text] [--model NAME]

The text is normalised (lower case, punctuation dropped); characters the text
tokenizer cannot encode are an error. Units are rendered to audio by their
centroid log-mel frames and Griffin-Lim, written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from multitower.cli.speech_cmd import add_common_arguments, load_components
from multitower.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to say")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output WAV path")
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from multitower.data.speech.resynth import units_to_wav
    from multitower.data.text import normalize_text
    from multitower.experiments.zipper_speech_text.experiment import UNIT_OFFSET
    from multitower.generation import generate
    from multitower.interleave import Segment

    c = load_components(args.run_dir, args.model)
    text = normalize_text(args.text)
    if not text:
        raise UserError("the text is empty after normalisation")
    try:
        ids = c.text_tokenizer.encode(text)
    except ValueError as err:
        raise UserError(str(err)) from err
    out = generate(
        c.model,
        [[Segment("text", ids)]],
        ["speech"],
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        generator=torch.Generator().manual_seed(args.seed),
    )
    units = torch.tensor(
        [u - UNIT_OFFSET for u in out[0][0].tokens if u >= UNIT_OFFSET], dtype=torch.long
    )
    if units.numel() == 0:
        raise UserError("the model generated no speech units for this text")
    audio = units_to_wav(
        args.output, units, c.unit_tokenizer, deduped=c.unit_tokenizer.config.dedup
    )
    seconds = audio.numel() / c.unit_tokenizer.config.sample_rate
    print(f"wrote {args.output} ({units.numel()} units, {seconds:.2f} s) with model {c.model_name}")
    return 0
