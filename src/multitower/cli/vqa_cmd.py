"""Answer a question about an image with a trained MaMMUT run.

    multitower vqa IMAGE "QUESTION" --run-dir DIR [--max-tokens N]

The question is the text prefix (``[bos] question ?``); the answer is generated
greedily with the KV cache and printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multitower.cli.common import add_threads_argument, set_threads
from multitower.data.caption_text import clean_text
from multitower.errors import UserError
from multitower.eval.mammut_eval import answer_questions
from multitower.experiments.mammut.run import load_image_or_fail, load_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="image file")
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained MaMMUT run")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="default: the run's eval config"
    )
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if not clean_text(args.question):
        raise UserError("the question is empty")
    loaded = load_run(args.run_dir)
    image = load_image_or_fail(loaded.transform, args.image).unsqueeze(0)
    unknown = sorted(set(clean_text(args.question)) - loaded.tokenizer.alphabet)
    if unknown:
        raise UserError(f"the question has characters the model never saw: {unknown}")
    max_tokens = args.max_tokens or loaded.eval_cfg.max_answer_tokens
    [[answer]] = answer_questions(
        loaded.model, image, [[args.question]], loaded.tokenizer, max_new_tokens=max_tokens
    )
    print(answer)
    return 0
