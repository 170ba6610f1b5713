"""Rank the images of a folder by their similarity to a text, with a trained MaMMUT run.

    multitower retrieve --run-dir DIR --images FOLDER --text "a red circle" [--top K]

Embeds every image of FOLDER (jpg, jpeg, png, webp, bmp; unreadable files are
reported and skipped) and the text (contrastive pass), and prints the ``K``
best images as ``score<TAB>path``, best first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.data.caption_text import clean_text
from multitower.data.errors import BadRecordError
from multitower.data.images import IMAGE_EXTENSIONS
from multitower.errors import UserError
from multitower.eval.mammut_eval import embed_images, embed_texts
from multitower.experiments.mammut.run import load_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained MaMMUT run")
    parser.add_argument("--images", type=Path, required=True, help="folder of images")
    parser.add_argument("--text", required=True, help="the query text")
    parser.add_argument("--top", type=int, default=5, help="how many images to print")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    if not args.images.is_dir():
        raise UserError(f"image folder not found: {args.images}")
    if not clean_text(args.text):
        raise UserError("the query text is empty")
    paths = sorted(
        p for p in args.images.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
    )
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.images}")
    loaded = load_run(args.run_dir)
    unknown = sorted(set(clean_text(args.text)) - loaded.tokenizer.alphabet)
    if unknown:
        raise UserError(f"the text has characters the model never saw: {unknown}")
    images, kept = [], []
    for path in paths:
        try:
            images.append(loaded.transform(path))
            kept.append(path)
        except BadRecordError as err:
            print(f"skipping {err}", file=sys.stderr)
    if not images:
        raise UserError(f"no readable image in {args.images}")
    with torch.no_grad():
        image_features = embed_images(loaded.model, torch.stack(images))  # (N, E)
        text_features = embed_texts(loaded.model, loaded.tokenizer, [args.text])  # (1, E)
    scores = (image_features @ text_features.T).squeeze(1)  # (N,)
    order = scores.argsort(descending=True)[: args.top]
    for i in order.tolist():
        print(f"{scores[i]:.4f}\t{kept[i]}")
    return 0
