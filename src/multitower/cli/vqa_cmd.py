"""Answer a question about an image, or a clip with a video run, with a trained MaMMUT run.

    multitower vqa IMAGE "QUESTION" --run-dir DIR [--max-tokens N]
    multitower vqa CLIP "QUESTION" --run-dir VIDEO_RUN [--system tubes_f16]

The question is the text prefix (``[bos] question ?``); the answer is generated
greedily with the KV cache and printed. With a ``multitower mammut-video`` run
the input is a clip (``.npz``, a folder of frames, or a video file decoded with
PyAV; see ``multitower caption --help``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multitower.cli.common import add_threads_argument, set_threads
from multitower.data.caption_text import clean_text
from multitower.errors import UserError
from multitower.eval.mammut_eval import answer_questions
from multitower.experiments.mammut.run import load_image_or_fail, load_run
from multitower.experiments.mammut_video.run import is_video_run, load_clip_or_fail, load_video_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="image file, or a clip for a video run")
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained MaMMUT run")
    parser.add_argument("--system", default=None, help="video runs: which system, e.g. frames_f8")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="default: the run's eval config"
    )
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if not clean_text(args.question):
        raise UserError("the question is empty")
    encode = None
    if is_video_run(args.run_dir):
        video = load_video_run(args.run_dir, system=args.system)
        model, tokenizer, eval_cfg = video.model.mammut, video.tokenizer, video.eval_cfg
        pixels = load_clip_or_fail(video, args.input).unsqueeze(0)  # (1, F, 3, S, S)
        encode = video.model.video_tokens
    else:
        if args.system is not None:
            raise UserError(f"--system is for video runs; {args.run_dir} is an image run")
        loaded = load_run(args.run_dir)
        model, tokenizer, eval_cfg = loaded.model, loaded.tokenizer, loaded.eval_cfg
        pixels = load_image_or_fail(loaded.transform, args.input).unsqueeze(0)
    unknown = sorted(set(clean_text(args.question)) - tokenizer.alphabet - {" "})
    if unknown:
        raise UserError(f"the question has characters the model never saw: {unknown}")
    [[answer]] = answer_questions(
        model,
        pixels,
        [[args.question]],
        tokenizer,
        max_new_tokens=args.max_tokens or eval_cfg.max_answer_tokens,
        encode=encode,
    )
    print(answer)
    return 0
