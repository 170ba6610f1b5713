"""Find objects named by text in an image, with a detector trained by ``multitower mammut-detect``.

    multitower detect IMAGE "red circle" "blue square" ... --run-dir DIR [-o boxes.png]
        [--min-score S] [--top-k K]

DIR is a detector directory (``RUN_DIR/open_vocab``) or a mammut-detect run
directory (its ``open_vocab`` detector is used). The class names are embedded
once by the text encoder (any names the tokenizer can spell, not only the ones
trained on); prints one line per detection, best first:
``name<TAB>score<TAB>x0,y0,x1,y1`` (pixels of IMAGE), and with ``-o`` draws the
boxes (white: classes with training boxes, cyan: the others).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.data.detection import DetectionRecord, detection_image
from multitower.data.errors import BadRecordError
from multitower.data.images import ImageTransform, open_image
from multitower.errors import UserError
from multitower.experiments.mammut.detect import detect_images, draw_boxes, load_detector, png_bytes
from multitower.experiments.mammut.detect_config import DetectEvalConfig
from multitower.io import write_bytes_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an image file")
    parser.add_argument("names", nargs="*", help='class names, e.g. "red circle"')
    parser.add_argument("--run-dir", type=Path, required=True, help="a mammut-detect detector")
    parser.add_argument("-o", "--output", type=Path, default=None, help="PNG with the boxes drawn")
    parser.add_argument("--min-score", type=float, default=0.3, help="lowest score reported")
    parser.add_argument("--top-k", type=int, default=20, help="most detections reported")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    names = [" ".join(n.split()) for n in args.names]
    if not names or not all(names):
        raise UserError('give at least one non-empty class name, e.g. "red circle"')
    if len(set(names)) != len(names):
        raise UserError(f"class names repeat: {names}")
    if not 0.0 <= args.min_score <= 1.0 or args.top_k < 1:
        raise UserError("--min-score must lie in [0, 1] and --top-k be >= 1")
    if args.output is not None and args.output.suffix.lower() != ".png":
        raise UserError(f"-o/--output must be a .png file, got {args.output}")
    if not args.image.is_file():
        raise UserError(f"image not found: {args.image}")
    det = load_detector(args.run_dir)
    if not det.model.config.head.open_vocabulary:
        unknown = [n for n in names if n not in det.base]
        if unknown:
            raise UserError(
                f"{args.run_dir} is a closed-vocabulary detector; it cannot name {unknown} "
                f"(its classes: {', '.join(det.base)})"
            )
    try:
        rgb = open_image(args.image)
    except BadRecordError as err:
        raise UserError(str(err)) from err
    size = det.model.config.mammut.vision.image_size
    record = DetectionRecord(str(args.image), rgb, rgb.width, rgb.height)
    image = detection_image(record, size, ImageTransform(image_size=size))
    cfg = DetectEvalConfig(top_k=args.top_k, draw_images=0)
    with torch.no_grad():
        (found,) = detect_images(det, image[None], [float(max(rgb.size))], names, cfg)
    keep = found.scores >= args.min_score
    for box, score, label in zip(
        found.boxes[keep].tolist(), found.scores[keep].tolist(), found.labels[keep].tolist()
    ):
        print(f"{names[label]}\t{score:.3f}\t" + ",".join(f"{v:.1f}" for v in box))
    if args.output is not None:
        scale = max(1, 256 // max(rgb.size))
        drawn = draw_boxes(
            rgb, found, names, set(names) - set(det.base), min_score=args.min_score, scale=scale
        )
        write_bytes_atomic(args.output, png_bytes(drawn))
        print(f"wrote {args.output}")
    return 0
