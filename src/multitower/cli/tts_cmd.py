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
from torch import nn

from multitower.cli.speech_cmd import add_common_arguments, load_components
from multitower.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to say")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output WAV path")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="most speech units to generate (default: 400, or fewer where the model's "
        "speech tower has less room)",
    )
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)


def speech_room(model: nn.Module, text_tokens: int) -> int:
    """Most speech units the model's tower can hold after a ``text_tokens``-token prompt.

    A Zipper's speech tower holds only the speech segment (bos, units, eos); the
    baseline's one tower holds the text segment (bos, text, eos) too.
    """
    mods = model.modalities
    tower = mods["speech"].tower
    prompt = text_tokens + 2 if mods["text"].tower == tower else 0
    return max(1, model.max_seq_lens[tower] - prompt - 2)


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
    limit = args.max_new_tokens or min(400, speech_room(c.model, len(ids)))
    try:
        out = generate(
            c.model,
            [[Segment("text", ids)]],
            ["speech"],
            max_new_tokens=limit,
            temperature=args.temperature,
            generator=torch.Generator().manual_seed(args.seed),
        )
    except ValueError as err:  # e.g. a text longer than the text tower takes
        raise UserError(str(err)) from err
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
