"""Rank the images (or clips) of a folder by their similarity to a text, with a trained MaMMUT run.

    multitower retrieve --run-dir DIR --images FOLDER --text "a red circle" [--top K]
    multitower retrieve --run-dir VIDEO_RUN --videos FOLDER --text "a red circle moves up"
                        [--system tubes_f16] [--top K]

Embeds every image of FOLDER (jpg, jpeg, png, webp, bmp) or, with ``--videos``
and a ``multitower mammut-video`` run, every clip of FOLDER (``.npz`` files,
video files decoded with PyAV, and sub-folders of frames), and the text
(contrastive pass), and prints the ``K`` best as ``score<TAB>path``, best first.
Unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.data.caption_text import clean_text
from multitower.data.errors import BadRecordError
from multitower.data.images import IMAGE_EXTENSIONS
from multitower.data.video_readers import VIDEO_EXTENSIONS, list_clips
from multitower.errors import UserError
from multitower.eval.mammut_eval import embed_images, embed_texts
from multitower.experiments.mammut.run import load_run
from multitower.experiments.mammut_video.run import is_video_run, load_clip_or_fail, load_video_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained MaMMUT run")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", type=Path, help="folder of images (an image run)")
    where.add_argument("--videos", type=Path, help="folder of clips (a video run)")
    parser.add_argument("--text", required=True, help="the query text")
    parser.add_argument("--top", type=int, default=5, help="how many results to print")
    parser.add_argument("--system", default=None, help="video runs: which system, e.g. frames_f8")
    add_threads_argument(parser)


def _read_all(paths: list[Path], read: Callable[[Path], torch.Tensor]) -> tuple[list, list[Path]]:
    items, kept = [], []
    for path in paths:
        try:
            items.append(read(path))
            kept.append(path)
        except (BadRecordError, UserError) as err:
            print(f"skipping {err}", file=sys.stderr)
    return items, kept


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    folder: Path = args.videos or args.images
    kind = "clip" if args.videos else "image"
    if not folder.is_dir():
        raise UserError(f"{kind} folder not found: {folder}")
    if not clean_text(args.text):
        raise UserError("the query text is empty")
    video_run = is_video_run(args.run_dir)
    if video_run and args.images:
        raise UserError(f"{args.run_dir} is a video run: give the clips with --videos")
    if not video_run and args.videos:
        raise UserError(f"{args.run_dir} is not a video run: --videos needs a mammut-video run")
    if args.videos:
        paths = list_clips(folder)
        if not paths:
            exts = ", ".join(["npz", *VIDEO_EXTENSIONS])
            raise UserError(f"no clips ({exts} files or frame folders) in {folder}")
        video = load_video_run(args.run_dir, system=args.system)
        model, tokenizer, encode = video.model.mammut, video.tokenizer, video.model.video_tokens
        items, kept = _read_all(paths, lambda p: load_clip_or_fail(video, p))
    else:
        if args.system is not None:
            raise UserError(f"--system is for video runs; {args.run_dir} is an image run")
        paths = sorted(
            p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
        )
        if not paths:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        loaded = load_run(args.run_dir)
        model, tokenizer, encode = loaded.model, loaded.tokenizer, None
        items, kept = _read_all(paths, loaded.transform)
    unknown = sorted(set(clean_text(args.text)) - tokenizer.alphabet - {" "})
    if unknown:
        raise UserError(f"the text has characters the model never saw: {unknown}")
    if not items:
        raise UserError(f"no readable {kind} in {folder}")
    with torch.no_grad():
        features = embed_images(model, torch.stack(items), encode=encode)  # (N, E)
        text_features = embed_texts(model, tokenizer, [args.text])  # (1, E)
    scores = (features @ text_features.T).squeeze(1)  # (N,)
    order = scores.argsort(descending=True)[: args.top]
    for i in order.tolist():
        print(f"{scores[i]:.4f}\t{kept[i]}")
    return 0
