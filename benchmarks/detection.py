"""MaMMUT open-vocabulary detection: inference images/s at the tiny size, 10 vs 100 class names.

Run:  OMP_NUM_THREADS=1 python benchmarks/detection.py [--repeats 9] [--images 32]

One detector at the size of configs/mammut_tiny.yaml (ViT 3 x 128 on 64x64
images with 8-pixel patches, decoder 4 x 128; weights freshly initialised: the
cost does not depend on them). The class-name embeddings are computed once per
name list and cached, as ``multitower detect`` and the evaluation do; what is
timed per repetition is the ViT, the head and the decoding (top-k over every
token x class pair, class-wise NMS) of ``--images`` images, without gradients.
Every repetition times 10 and 100 names back to back (the order alternating) so
both share the machine's load; the ratio is the median of the paired ratios.
The last line is machine readable:
  detect_images_per_s=<n at 10 names> names_100_over_10=<ratio>
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from multitower.eval.detection import decode_detections
from multitower.models.detection import MaMMUTDetector, MaMMUTDetectorConfig
from multitower.models.mammut import MaMMUTConfig
from multitower.models.vit import ViTConfig

TINY = MaMMUTConfig(
    vocab_size=256, d_model=128, num_layers=4, num_heads=4, embed_dim=128, max_seq_len=40,
    vision=ViTConfig(image_size=64, patch_size=8, d_model=128, num_layers=3, num_heads=4),
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = MaMMUTDetector(MaMMUTDetectorConfig(TINY)).eval()
    images = torch.randn(args.images, 3, 64, 64)
    sides = [64.0] * args.images
    with torch.no_grad():
        cached = {}
        for count in (10, 100):  # "a <word> <word>" prompts: [bos] 3 tokens [eos]
            names = torch.randint(3, 256, (count, 3))
            tokens = torch.cat(
                [
                    torch.ones(count, 1, dtype=torch.long),
                    names,
                    2 * torch.ones(count, 1, dtype=torch.long),
                ],
                1,
            )
            cached[count] = model.encode_class_names(tokens)  # (C, E), computed once

        def once(count: int) -> float:
            start = time.perf_counter()
            out = model(images, cached[count])
            decode_detections(out.boxes, out.class_logits, sides, top_k=args.top_k)
            return time.perf_counter() - start

        once(10), once(100)  # warm-up
        times: dict[int, list[float]] = {10: [], 100: []}
        ratios = []
        for r in range(args.repeats):
            order = (10, 100) if r % 2 == 0 else (100, 10)
            got = {c: once(c) for c in order}
            for c, t in got.items():
                times[c].append(t)
            ratios.append(got[100] / got[10])
    per_s = {c: args.images / statistics.median(t) for c, t in times.items()}
    ratio = statistics.median(ratios)
    print(f"{args.images} images per call, {args.repeats} repetitions, median:")
    for c in (10, 100):
        print(
            f"  {c:>3} names: {1000 * statistics.median(times[c]):7.1f} ms  {per_s[c]:7.1f} images/s"
        )
    print(f"detect_images_per_s={per_s[10]:.1f} names_100_over_10={ratio:.3f}")


if __name__ == "__main__":
    main()
