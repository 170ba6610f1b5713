"""GPU benchmark: Zipper training MFU and cached decoding tokens/s with CUDA graphs.

Run on a CUDA machine:  python benchmarks/gpu.py [--steps 20] [--peak-tflops 989]
A toy size on any machine (what the test suite runs):  python benchmarks/gpu.py --toy

Full size: two decoder towers of about 176M parameters each (width 1024, 12
layers, 16 heads, 4x MLP, vocabulary 24,576, tied heads), zipped with gated
cross-attention every 4th layer in both directions (about 400M parameters in
all); batch 16 of 512 speech + 128 text tokens, loss on the text.

* Training: bf16 autocast, SDPA attention (flash for the towers' causal
  self-attention), ``torch.compile`` of the model (``Module.compile``, as
  ``train.compile``), fused AdamW (the trainer's optimizer). MFU = the FLOPs of
  one step as torch's ``FlopCounterMode`` counts them (one eager step), over the
  median step time, over the GPU's dense bf16 peak (a table of known GPUs, or
  ``--peak-tflops``).
* Decoding: greedy, 256 new speech tokens from a 64-token text prompt, KV-cached,
  the step compiled with ``mode="reduce-overhead"`` (CUDA graphs), bf16 weights, at
  batch 1 and 64; tokens/s counts every example's tokens (after a warm-up call that
  compiles and records the graphs).

``--toy`` shrinks everything (width 64, 2 layers, a few steps) and runs eagerly
without compile; on a CPU the peak is this machine's measured bf16 matmul peak.
Those figures only show that the script runs: they are not GPU figures.

The last line is machine readable:
  mfu=<x> decode_tok_s_b1=<n> decode_tok_s_b64=<n> device=<name>
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from multitower.generation import CompileOptions, generate
from multitower.interleave import Segment, collate_interleaved
from multitower.losses import interleaved_next_token_loss
from multitower.models.decoder import DecoderConfig
from multitower.models.zipper import Zipper, ZipperConfig
from multitower.train.optim import build_optimizer
from roofline import matmul_peak

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,  # unknown form factor: the lower (PCIe) figure
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


@dataclass(frozen=True)
class Size:
    d_model: int
    num_layers: int
    num_heads: int
    vocab: int
    batch: int
    speech_len: int
    text_len: int
    steps: int
    new_tokens: int
    prompt_len: int
    cross_attention_every: int


FULL = Size(1024, 12, 16, 24576, 16, 512, 128, 20, 256, 64, 4)
TOY = Size(64, 2, 4, 256, 2, 32, 16, 3, 8, 8, 2)


def build(size: Size, device: torch.device) -> Zipper:
    tower = DecoderConfig(
        vocab_size=size.vocab,
        d_model=size.d_model,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        max_seq_len=1024,
    )
    cfg = ZipperConfig(
        {"speech": tower, "text": tower},
        cross_attention_every=size.cross_attention_every,
        input_projection="paper",
    )
    torch.manual_seed(0)
    return Zipper(cfg).to(device)


def random_examples(size: Size, n: int, g: torch.Generator) -> list[list[Segment]]:
    def ids(length: int) -> list[int]:
        return torch.randint(3, size.vocab, (length,), generator=g).tolist()

    return [
        [Segment("speech", ids(size.speech_len - 2)), Segment("text", ids(size.text_len - 2))]
        for _ in range(n)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_training(
    model: Zipper, size: Size, device: torch.device, compile: bool
) -> tuple[float, float]:
    """(FLOPs per step, median seconds per step) of bf16-autocast training."""
    g = torch.Generator().manual_seed(0)
    batch = collate_interleaved(
        random_examples(size, size.batch, g), model.modalities, loss_weights={"text": 1.0}
    )
    batch = {t: tb.to(device) for t, tb in batch.items()}
    opt = build_optimizer(model, lr=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = interleaved_next_token_loss(model(batch), batch)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:  # eager: the FLOPs, not the time
        step()
    if compile:
        model.compile()
    for _ in range(2):  # compiles, then warms the allocator
        step()
    times = []
    for _ in range(size.steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(counter.get_total_flops()), statistics.median(times)


def bench_decode(
    model: Zipper, size: Size, batch: int, device: torch.device, compile: bool
) -> float:
    """Tokens/s of cached greedy decoding of ``batch`` examples (all tokens counted)."""
    g = torch.Generator().manual_seed(1)
    prompt = [
        Segment("text", torch.randint(3, size.vocab, (size.prompt_len,), generator=g).tolist())
    ]
    prompts = [prompt] * batch
    options = CompileOptions(mode="reduce-overhead") if compile else False
    n = size.new_tokens

    def gen() -> None:
        out = generate(
            model, prompts, ["speech"], max_new_tokens=n, min_new_tokens=n, compile=options
        )
        assert all(len(ex[0].tokens) == n for ex in out)

    gen()  # compiles and records the CUDA graphs
    sync(device)
    t0 = time.perf_counter()
    gen()
    sync(device)
    return batch * n / (time.perf_counter() - t0)


def bf16_peak(device: torch.device, override: float | None) -> tuple[float, str]:
    """The bf16 peak in FLOP/s and where it comes from."""
    if override is not None:
        return override * 1e12, "--peak-tflops"
    if device.type == "cpu":
        # Small sizes only: emulated bf16 matrix products are slow (a toy run).
        return matmul_peak(torch.bfloat16, (64, 128)), "this CPU's measured bf16 matmul peak"
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS.items():  # most specific names first
        if key in name:
            return tflops * 1e12, f"{key} data sheet"
    raise SystemExit(f"no bf16 peak known for {name!r}: pass --peak-tflops")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="tiny sizes, eager (any machine)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak override")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = TOY if args.toy else FULL
    if args.steps is not None:
        size = Size(**{**size.__dict__, "steps": args.steps})
    compile = not (args.toy or args.no_compile)
    if device.type == "cpu" and not args.toy:
        raise SystemExit("no CUDA device: the full size is for a GPU (use --toy here)")
    on_gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    label = "" if on_gpu and not args.toy else " [toy run: NOT a GPU figure]"
    model = build(size, device)
    n_params = sum(p.numel() for p in model.parameters())
    towers = {t: sum(p.numel() for p in m.parameters()) for t, m in model.towers.items()}
    print(
        f"torch {torch.__version__}, {name}; Zipper {n_params / 1e6:.1f}M parameters (towers "
        + ", ".join(f"{t} {n / 1e6:.1f}M" for t, n in towers.items())
        + f"); compile {compile}{label}"
    )
    peak, source = bf16_peak(device, args.peak_tflops)
    flops, t = bench_training(model, size, device, compile)
    mfu = flops / t / peak
    print(
        f"training: {flops / 1e12:.3g} TFLOP per step in {t * 1e3:.1f} ms = "
        f"{flops / t / 1e12:.3g} TFLOP/s; peak {peak / 1e12:.3g} TFLOP/s ({source}): "
        f"MFU {mfu:.3f}{label}"
    )
    model.eval()
    model.to(torch.bfloat16)  # decoding reads bf16 weights and caches
    tok_s = {b: bench_decode(model, size, b, device, compile) for b in (1, 64)}
    print(
        f"cached decoding, {size.new_tokens} tokens: batch 1 {tok_s[1]:.1f} tok/s, "
        f"batch 64 {tok_s[64]:.1f} tok/s{label}"
    )
    print(
        f"mfu={mfu:.4f} decode_tok_s_b1={tok_s[1]:.1f} decode_tok_s_b64={tok_s[64]:.1f} "
        f"device={'cpu-toy' if not on_gpu else name.replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
