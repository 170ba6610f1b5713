"""MaMMUT training step vs the PyPI ``mammut-pytorch`` peer, and captioning with vs without KV cache.

    python benchmarks/mammut_vs_peer.py [--repeats 7] [--threads N] [--device cpu]

1. Training step (forward of both passes, backward, AdamW step) of
   :class:`multitower.models.mammut.MaMMUT` with its task, and of
   ``mammut_pytorch.MaMMUT`` at matched sizes: the same text width, depth and
   heads, cross-attention every 2nd layer, the same vocabulary, batch, text
   length, image size and patch size. ``vit-pytorch`` needs torchvision, so
   the peer gets a plain-torch ViT written here (``nn.TransformerEncoderLayer``
   blocks, pre-norm, GELU, learned positions) of the same width, depth and
   heads as ours; its attention pooler gets as many queries as there are patches.
   Ours and the peer's steps are timed interleaved; the medians are compared.
2. Greedy captioning tokens/s of our model with the KV cache (image keys/values
   computed once per image, one new token per step) and without it (the whole
   sequence re-run at every step, image keys/values still computed once).

The last line is ``step_over_peer=<ours / peer> caption_cache_speedup=<cached / uncached>``
(``step_over_peer=nan`` when ``mammut-pytorch`` is not installed:
``pip install --no-deps mammut-pytorch``; it needs only einops besides torch).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from multitower.experiments.mammut.data import MaMMUTBatch
from multitower.experiments.mammut.task import MaMMUTLossConfig, MaMMUTTask
from multitower.generation.captioning import generate_greedy
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.vit import ViTConfig

WIDTH, DEPTH, HEADS = 256, 6, 8
VISION_DEPTH = 4
IMAGE, PATCH = 64, 8
VOCAB, TEXT_LEN, BATCH = 1000, 24, 32
CAPTION_BATCH, CAPTION_TOKENS = 64, 32


class PlainViT(nn.Module):
    """A plain-torch ViT for the peer: patch conv, learned positions, pre-norm encoder blocks."""

    def __init__(self, dim: int, depth: int, heads: int, image: int, patch: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        return self.norm(self.blocks(x))


def our_model() -> MaMMUT:
    vision = ViTConfig(
        image_size=IMAGE, patch_size=PATCH, d_model=WIDTH, num_layers=VISION_DEPTH, num_heads=HEADS
    )
    cfg = MaMMUTConfig(
        vocab_size=VOCAB, d_model=WIDTH, num_layers=DEPTH, num_heads=HEADS, vision=vision,
        cross_attn_every=2, embed_dim=WIDTH, max_seq_len=64,
    )  # fmt: skip
    return MaMMUT(cfg)


def peer_model() -> nn.Module | None:
    try:
        from mammut_pytorch import MaMMUT as PeerMaMMUT
    except ImportError as err:
        print(f"peer skipped: mammut-pytorch is not importable ({err}); "
              "install it with `pip install --no-deps mammut-pytorch`")  # fmt: skip
        return None
    return PeerMaMMUT(
        dim=WIDTH, num_tokens=VOCAB, depth=DEPTH, cross_attend_every=2, dim_latents=WIDTH,
        image_dim=WIDTH, num_img_queries=(IMAGE // PATCH) ** 2, dim_head=WIDTH // HEADS,
        heads=HEADS, ff_mult=4, caption_loss_weight=2.0, contrastive_loss_weight=1.0,
        img_encoder=PlainViT(WIDTH, VISION_DEPTH, HEADS, IMAGE, PATCH), pad_id=0,
    )  # fmt: skip


def make_text(gen: torch.Generator) -> torch.Tensor:
    """(BATCH, TEXT_LEN) ``[bos] words [eos] pad...`` with lengths 10..TEXT_LEN."""
    text = torch.zeros(BATCH, TEXT_LEN, dtype=torch.long)
    for b in range(BATCH):
        n = int(torch.randint(10, TEXT_LEN + 1, (), generator=gen))
        text[b, 0], text[b, n - 1] = 1, 2
        text[b, 1 : n - 1] = torch.randint(3, VOCAB, (n - 2,), generator=gen)
    return text


def time_training(repeats: int, device: torch.device) -> tuple[float, float | None]:
    """Median seconds per training step: (ours, peer or None)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=gen).to(device)
    text = make_text(gen).to(device)
    torch.manual_seed(0)
    ours = our_model().to(device)
    task = MaMMUTTask(MaMMUTLossConfig(shuffle_passes=False), pad_id=0)
    batch = MaMMUTBatch(images, text, text, (text != 0).float())
    peer = peer_model()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    steps: dict[str, tuple] = {"ours": (ours, opt_ours)}
    if peer is not None:
        peer = peer.to(device)
        steps["peer"] = (peer, torch.optim.AdamW(peer.parameters(), lr=1e-4))
    n_ours = sum(p.numel() for p in ours.parameters())
    print(f"ours: {n_ours / 1e6:.2f}M parameters", end="")
    if peer is not None:
        print(f"; peer: {sum(p.numel() for p in peer.parameters()) / 1e6:.2f}M parameters", end="")
    print()

    def step(name: str) -> float:
        model, opt = steps[name]
        sync(device)
        start = time.perf_counter()
        if name == "ours":
            loss = task.compute_loss(model, batch).loss
        else:
            loss = model(text, images=images, return_loss=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - start

    for name in steps:  # warm-up
        step(name)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name in steps:  # interleaved, so both see the same machine load
            times[name].append(step(name))
    for name, values in times.items():
        print(f"train step {name}: median {statistics.median(values) * 1e3:.1f} ms "
              f"(min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f}, n={len(values)})")  # fmt: skip
    peer_time = statistics.median(times["peer"]) if "peer" in times else None
    return statistics.median(times["ours"]), peer_time


def time_captioning(repeats: int, device: torch.device) -> tuple[float, float]:
    """Median generated tokens/s of greedy captioning: (cached, uncached)."""
    torch.manual_seed(1)
    model = our_model().to(device).eval()
    with torch.no_grad():
        model.embed.weight[model.config.eos_id].zero_()  # eos never wins: fixed-length captions
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(CAPTION_BATCH, 3, IMAGE, IMAGE, generator=gen).to(device)
    with torch.no_grad():
        tokens = model.image_tokens(images)
    prefixes = [[model.config.bos_id]] * CAPTION_BATCH

    def run(use_cache: bool) -> tuple[float, list[list[int]]]:
        sync(device)
        start = time.perf_counter()
        out = generate_greedy(
            model, tokens, prefixes, max_new_tokens=CAPTION_TOKENS, use_cache=use_cache
        )
        sync(device)
        return time.perf_counter() - start, out

    _, cached_out = run(True)
    _, uncached_out = run(False)
    if cached_out != uncached_out:
        raise RuntimeError("cached and uncached captioning disagree")
    n_tokens = sum(len(c) for c in cached_out)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for use_cache in (True, False):
            times[use_cache].append(run(use_cache)[0])
    rates = {k: n_tokens / statistics.median(v) for k, v in times.items()}
    print(f"captioning {CAPTION_BATCH} images x {n_tokens // CAPTION_BATCH} tokens: "
          f"cached {rates[True]:.0f} tokens/s, uncached {rates[False]:.0f} tokens/s")  # fmt: skip
    return rates[True], rates[False]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; "
          f"width {WIDTH}, text depth {DEPTH}, heads {HEADS}, ViT depth {VISION_DEPTH}, "
          f"image {IMAGE}/{PATCH}, batch {BATCH}, text length {TEXT_LEN}, vocab {VOCAB}")  # fmt: skip
    ours, peer = time_training(args.repeats, device)
    cached, uncached = time_captioning(args.repeats, device)
    ratio = f"{ours / peer:.3f}" if peer is not None else "nan"
    print(f"step_over_peer={ratio} caption_cache_speedup={cached / uncached:.2f}")


if __name__ == "__main__":
    main()
