"""MaMMUT video encoders: sparse tubes vs every frame through the ViT, time and memory per clip.

Run:  OMP_NUM_THREADS=1 python benchmarks/video_tubes.py [--repeats 15] [--clips 4]

One process, one ViT (the vision tower of configs/mammut_tiny.yaml unless told:
64x64 images, 8-pixel patches, d_model 128, 3 layers, 4 heads), the same clips
for both encoders, at 8, 16 and 32 frames:

* time: the encoder's forward without gradients (eval mode) on a batch of
  ``--clips`` clips, divided by the number of clips. Every repetition times
  tubes and frames back to back (the order alternating), so the two share the
  machine's load; the figure is the median over repetitions of the paired
  ratio tubes / frames (and the median times themselves).
* memory: the bytes of the tensors autograd saves for the backward pass in one
  training-mode forward, per clip (summed through ``saved_tensors_hooks``).
  This is exact and what dominates training memory; the peak of a no-grad
  forward is not measured (CPU allocations are not visible to tracemalloc).

The tubes are :func:`~multitower.models.video_config.default_tubes` for each
frame count. The last line is machine readable:
  tubes_over_frames_time_16=<ratio> tubes_over_frames_time_32=<ratio>
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from multitower.models.video import (
    FrameVideoEncoder,
    TubeVideoEncoder,
    default_tubes,
    tube_token_count,
)
from multitower.models.vit import ViT, ViTConfig

FRAME_COUNTS = (8, 16, 32)


def saved_bytes(encoder: torch.nn.Module, vit: ViT, video: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward (each saved tensor counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    vit.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = encoder(vit, video)
    del out
    vit.eval()
    return sum(seen.values())


@torch.no_grad()
def seconds(encoder: torch.nn.Module, vit: ViT, video: torch.Tensor) -> float:
    start = time.perf_counter()
    encoder(vit, video)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clips", type=int, default=4, help="clips per batch")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args()

    config = ViTConfig(
        image_size=args.image_size,
        patch_size=args.patch_size,
        d_model=args.d_model,
        num_layers=args.layers,
        num_heads=args.heads,
    )
    torch.manual_seed(0)
    vit = ViT(config).eval()
    S, B = config.image_size, args.clips
    print(
        f"ViT {S}x{S}, patch {config.patch_size}, d_model {config.d_model}, "
        f"{config.num_layers} layers; {B} clips per batch; torch threads {torch.get_num_threads()}"
    )
    setups = {}
    for n_frames in FRAME_COUNTS:
        tubes = default_tubes(n_frames, config.patch_size)
        video = torch.randn(B, n_frames, 3, S, S, generator=torch.Generator().manual_seed(n_frames))
        setups[n_frames] = (TubeVideoEncoder(tubes), FrameVideoEncoder(), video, tubes)
        for encoder in setups[n_frames][:2]:  # warm-up
            seconds(encoder, vit, video)

    times: dict[int, tuple[list[float], list[float]]] = {f: ([], []) for f in FRAME_COUNTS}
    for rep in range(args.repeats):
        for n_frames in FRAME_COUNTS:
            tube_enc, frame_enc, video, _ = setups[n_frames]
            if rep % 2:
                t_frames = seconds(frame_enc, vit, video)
                t_tubes = seconds(tube_enc, vit, video)
            else:
                t_tubes = seconds(tube_enc, vit, video)
                t_frames = seconds(frame_enc, vit, video)
            times[n_frames][0].append(t_tubes)
            times[n_frames][1].append(t_frames)

    print(
        "| frames | tokens tubes | tokens frames | tubes ms/clip | frames ms/clip "
        "| tubes/frames time (median of pairs) | saved MB/clip tubes | saved MB/clip frames |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ratios = {}
    for n_frames in FRAME_COUNTS:
        tube_enc, frame_enc, video, tubes = setups[n_frames]
        t_tubes, t_frames = times[n_frames]
        ratios[n_frames] = statistics.median(a / b for a, b in zip(t_tubes, t_frames))
        n_tubes = tube_token_count(tubes, (n_frames, S, S))
        n_per_frame = n_frames * config.num_patches
        mem_tubes = saved_bytes(tube_enc, vit, video) / B / 2**20
        mem_frames = saved_bytes(frame_enc, vit, video) / B / 2**20
        print(
            f"| {n_frames} | {n_tubes} | {n_per_frame} | {statistics.median(t_tubes) / B * 1e3:.2f} "
            f"| {statistics.median(t_frames) / B * 1e3:.2f} | {ratios[n_frames]:.3f} "
            f"| {mem_tubes:.2f} | {mem_frames:.2f} |"
        )
    print(f"tubes_over_frames_time_16={ratios[16]:.3f} tubes_over_frames_time_32={ratios[32]:.3f}")


if __name__ == "__main__":
    main()
