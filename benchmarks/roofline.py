"""How close the Zipper benchmarks run to this machine's limits (a roofline in numbers).

Run:  python benchmarks/roofline.py [--config small] [--repeats 3] [--compile]

Measures, in one process:
  * the matmul peak: the best FLOP/s of square matrix products (fp32 and bf16),
    over a few sizes, on the threads torch uses;
  * the memory bandwidth: bytes read and written per second copying a 256 MiB tensor;
  * the training step of ``zipper_step.py``'s Zipper (forward, backward, AdamW) in
    fp32 and under bf16 autocast: its FLOPs as torch's ``FlopCounterMode`` counts
    them (matrix products and attention), over the median step time, as a fraction
    of the matching matmul peak;
  * cached greedy decoding at batch 1 (256 speech tokens from a text prompt): the
    bytes one step reads (the speech tower's weights, its fusion blocks and input
    projection, the filled caches) over the bandwidth, divided by the measured time
    per token (1.0 would be decoding at the memory limit); with ``--compile`` also
    the compiled step.
The last line is machine readable:
  matmul_fp32_gflops=<x> matmul_bf16_gflops=<x> bandwidth_gb_s=<x>
  train_fp32_fraction_of_peak=<r> train_bf16_fraction_of_peak=<r>
  decode_fraction_of_bandwidth=<r> [compiled_decode_fraction_of_bandwidth=<r>]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from multitower.generation import generate
from multitower.losses import interleaved_next_token_loss
from multitower.train.optim import build_optimizer
from zipper_step import build, cpu_bf16_support, memory_bandwidth, speech_step_bytes, timed


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (256, 512, 1024, 2048)) -> float:
    """Best FLOP/s of an ``(n, n)`` matrix product in ``dtype`` over ``sizes``.

    Each size runs as ``a @ b`` and as ``F.linear`` (a layer's product, which takes
    another kernel path for bf16 on CPU), best of three each. Stops growing ``n`` once
    one product takes over half a second (emulated bf16 on a CPU without bf16 units
    is that slow; larger sizes would not raise its peak).
    """
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        slowest = 0.0
        for product in (torch.matmul, F.linear):
            t = timed(lambda p=product, a=a, b=b: p(a, b))  # warm-up
            if t < 0.5:
                t = min(timed(lambda p=product, a=a, b=b: p(a, b)) for _ in range(3))
            best, slowest = max(best, 2 * n**3 / t), max(slowest, t)
        if slowest > 0.5:
            break
    return best


def bench_training(name: str, repeats: int, bf16: bool) -> tuple[float, float]:
    """(FLOPs per training step, median seconds per step) of the benchmark Zipper."""
    model, batch, _ = build(name, 1.0)
    opt = build_optimizer(model, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = interleaved_next_token_loss(model(batch), batch)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:  # also the warm-up
        step()
    times = [timed(step) for _ in range(repeats)]
    return float(counter.get_total_flops()), statistics.median(times)


def bench_decode(name: str, repeats: int, compile: bool) -> tuple[float, float]:
    """(bytes one cached speech step reads, median seconds per token) at batch 1."""
    model, _, examples = build(name, 1.0)
    model.eval()
    prompts = [[examples[0][1]]]
    new = 256

    def gen() -> None:
        generate(
            model, prompts, ["speech"], max_new_tokens=new, min_new_tokens=new, compile=compile
        )

    gen()  # warm-up (compiles with ``compile``)
    per_token = statistics.median(timed(gen) for _ in range(repeats)) / (new + 2)
    return speech_step_bytes(model, len(prompts[0][0].tokens) + 2, new), per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=["tiny", "small"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also the compiled decode")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; {cpu_bf16_support()}")
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    bandwidth = memory_bandwidth()
    print(
        f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s "
        f"(bf16/fp32 {peak16 / peak32:.2f}); memory bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    fractions = {}
    for label, bf16, peak in (("fp32", False, peak32), ("bf16", True, peak16)):
        flops, t = bench_training(args.config, args.repeats, bf16)
        fractions[f"train_{label}_fraction_of_peak"] = flops / t / peak
        print(
            f"training step ({args.config}, {label}): {flops / 1e9:.2f} GFLOP in {t * 1e3:.0f} ms "
            f"= {flops / t / 1e9:.1f} GFLOP/s, {flops / t / peak:.2f} of the {label} matmul peak"
        )
    for compile in (False, True) if args.compile else (False,):
        step_bytes, per_token = bench_decode(args.config, args.repeats, compile)
        key = "compiled_decode_fraction_of_bandwidth" if compile else "decode_fraction_of_bandwidth"
        fractions[key] = step_bytes / bandwidth / per_token
        print(
            f"cached decode ({args.config}, batch 1{', compiled' if compile else ''}): "
            f"{step_bytes / 1e6:.2f} MB per token in {per_token * 1e3:.2f} ms "
            f"(the bandwidth allows {step_bytes / bandwidth * 1e3:.2f} ms): "
            f"{fractions[key]:.2f} of the bandwidth"
        )
    print(
        f"matmul_fp32_gflops={peak32 / 1e9:.2f} matmul_bf16_gflops={peak16 / 1e9:.2f} "
        f"bandwidth_gb_s={bandwidth / 1e9:.2f} "
        + " ".join(f"{k}={v:.3f}" for k, v in fractions.items())
    )


if __name__ == "__main__":
    main()
