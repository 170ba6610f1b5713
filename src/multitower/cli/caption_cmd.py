"""Caption images with a trained MaMMUT run.

    multitower caption IMAGE [IMAGE ...] --run-dir DIR [--beam K] [--max-tokens N]

Prints one line per image: ``path<TAB>caption``. Greedy decoding by default,
beam search with ``--beam K`` (K > 1); both use the KV cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.errors import UserError
from multitower.eval.mammut_eval import generate_captions
from multitower.experiments.mammut.run import load_image_or_fail, load_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", type=Path, nargs="+", help="image files")
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained MaMMUT run")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="default: the run's eval config"
    )
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    loaded = load_run(args.run_dir)
    images = torch.stack([load_image_or_fail(loaded.transform, p) for p in args.images])
    max_tokens = args.max_tokens or loaded.eval_cfg.max_caption_tokens
    captions = generate_captions(
        loaded.model,
        images,
        loaded.tokenizer,
        method="beam" if args.beam > 1 else "greedy",
        beam_size=args.beam,
        length_penalty=loaded.eval_cfg.length_penalty,
        max_new_tokens=max_tokens,
    )
    for path, caption in zip(args.images, captions):
        print(f"{path}\t{caption}")
    return 0
