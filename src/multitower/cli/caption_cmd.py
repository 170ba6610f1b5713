"""Caption images, or clips with a video run, with a trained MaMMUT run.

    multitower caption IMAGE [IMAGE ...] --run-dir DIR [--beam K] [--max-tokens N]
    multitower caption CLIP [CLIP ...] --run-dir VIDEO_RUN [--system tubes_f16] [--beam K]

Prints one line per input: ``path<TAB>caption``. Greedy decoding by default,
beam search with ``--beam K`` (K > 1); both use the KV cache.

With a ``multitower mammut-video`` run directory the inputs are clips: a
generated ``.npz``, a folder of frame images, or a video file (``.mp4``,
``.avi``, ``.webm``, ``.mkv``, ``.mov``, ...; decoded with PyAV). The system
(``--system``, default: the tubes with the most frames; or give a system's own
directory as ``--run-dir``) samples its number of frames evenly over the clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.errors import UserError
from multitower.eval.mammut_eval import generate_captions
from multitower.experiments.mammut.run import load_image_or_fail, load_run
from multitower.experiments.mammut_video.run import is_video_run, load_clip_or_fail, load_video_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", type=Path, nargs="+", help="image files, or clips for a video run"
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained MaMMUT run")
    parser.add_argument("--system", default=None, help="video runs: which system, e.g. frames_f8")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="default: the run's eval config"
    )
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if is_video_run(args.run_dir):
        video = load_video_run(args.run_dir, system=args.system)
        model, tokenizer, eval_cfg = video.model.mammut, video.tokenizer, video.eval_cfg
        pixels = torch.stack([load_clip_or_fail(video, p) for p in args.inputs])
        encode = video.model.video_tokens
    else:
        if args.system is not None:
            raise UserError(f"--system is for video runs; {args.run_dir} is an image run")
        loaded = load_run(args.run_dir)
        model, tokenizer, eval_cfg = loaded.model, loaded.tokenizer, loaded.eval_cfg
        pixels = torch.stack([load_image_or_fail(loaded.transform, p) for p in args.inputs])
        encode = None
    captions = generate_captions(
        model,
        pixels,
        tokenizer,
        method="beam" if args.beam > 1 else "greedy",
        beam_size=args.beam,
        length_penalty=eval_cfg.length_penalty,
        max_new_tokens=args.max_tokens or eval_cfg.max_caption_tokens,
        encode=encode,
    )
    for path, caption in zip(args.inputs, captions):
        print(f"{path}\t{caption}")
    return 0
