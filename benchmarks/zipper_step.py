"""Zipper training-step cost vs the towers alone, and cached vs uncached decoding speed.

Run:  python benchmarks/zipper_step.py [--configs tiny,small] [--repeats 5]

For each config, one process times (median of interleaved repetitions):
  * a training step (forward, backward, AdamW) of the two towers trained alone on
    their own token sequences, and of Zipper (cross-attention every 2nd layer in
    both directions) on the same sequences;
  * greedy generation of 256 new speech tokens with and without the KV caches,
    the two alternating (the cache speedup is the median of paired ratios, with
    their min-max spread);
  * this machine's memory bandwidth (a large tensor copy), and the cached decoding
    speed as a fraction of what it allows: the bytes of the weights a speech step
    reads (speech tower, its fusion blocks and input projection) plus the filled
    caches it attends (averaged over the decode), over the bandwidth, divided by the
    measured time per token;
  * the cached decode compiled (``generate(compile=True)``: the inductor, static
    shapes) against the same eager cached decode, alternating (median of paired
    ratios; the compile itself is timed apart, and the tokens are compared);
  * a training step with bf16 autocast against fp32, two copies of one model
    stepped alternately on the same batch with the trainer's AdamW (median of
    paired ratios, and the relative loss difference after those steps), next to
    the CPU's bf16 support (without bf16 matrix units bf16 is emulated and slower).
The last line is machine readable and reports the largest config run:
  zipper_over_towers=<r> cache_speedup=<r> decode_fraction_of_bandwidth=<r>
  compiled_decode_speedup=<r> train_bf16_speedup=<r>
(the last two only when measured: ``--no-compile``, ``--bf16-steps 0`` skip them).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from multitower.generation import generate
from multitower.interleave import Segment, collate_interleaved
from multitower.losses import interleaved_next_token_loss, next_token_loss
from multitower.models.decoder import DecoderConfig
from multitower.models.zipper import Zipper, ZipperConfig
from multitower.train.optim import build_optimizer

CONFIGS = {
    # name: (d_model, num_layers, num_heads, vocab text, vocab speech, batch, text len, speech len)
    "tiny": (64, 4, 4, 256, 128, 8, 32, 96),
    "small": (256, 6, 8, 2048, 512, 8, 64, 256),
}


def build(name: str, fusion_mlp_ratio: float) -> tuple[Zipper, dict, list[list[Segment]]]:
    d, layers, heads, vt, vs, batch, lt, ls = CONFIGS[name]
    text = DecoderConfig(
        vocab_size=vt, d_model=d, num_layers=layers, num_heads=heads, max_seq_len=1024
    )
    speech = DecoderConfig(
        vocab_size=vs, d_model=d, num_layers=layers, num_heads=heads, max_seq_len=1024
    )
    cfg = ZipperConfig(
        {"speech": speech, "text": text},
        cross_attention_every=2,
        input_projection="paper",
        fusion_mlp_ratio=fusion_mlp_ratio,
    )
    torch.manual_seed(0)
    model = Zipper(cfg)
    g = torch.Generator().manual_seed(0)
    examples = [
        [
            Segment("speech", torch.randint(3, vs, (ls - 2,), generator=g).tolist()),
            Segment("text", torch.randint(3, vt, (lt - 2,), generator=g).tolist()),
        ]
        for _ in range(batch)
    ]
    batch_t = collate_interleaved(examples, model.modalities, loss_weights={"text": 1.0})
    return model, batch_t, examples


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def memory_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second of copying a ``mib`` MiB float32 tensor (read + write), median."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: pages touched
    times = [timed(lambda: dst.copy_(src)) for _ in range(repeats)]
    return 2 * src.numel() * src.element_size() / statistics.median(times)


def speech_step_bytes(model: Zipper, text_len: int, new: int) -> float:
    """Bytes one cached speech step reads: its weights and the filled caches it attends,
    averaged over ``new`` steps after a ``text_len``-token text prompt."""
    weights = [p for n, p in model.named_parameters() if n.startswith("towers.speech.")]
    weights += [p for n, p in model.named_parameters() if "speech_from_text" in n]
    weights += [p for n, p in model.named_parameters() if n.startswith("fusion.input_proj.speech")]
    weight_bytes = sum(p.numel() * p.element_size() for p in weights)
    cfg = model.config.towers["speech"]
    blocks = [p for p in model.points if p.query == "speech"]
    per_slot = 2 * cfg.d_model * 4  # keys and values, float32
    mean_self = (new + 2) / 2  # slots filled, averaged over the decode
    cache_bytes = per_slot * (cfg.num_layers * mean_self + len(blocks) * text_len)
    return weight_bytes + cache_bytes


def cpu_bf16_support() -> str:
    """torch's CPU kernel level and the CPU's bf16 matrix flags (Linux ``/proc/cpuinfo``)."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (
        f"torch cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 flags: {' '.join(bf16) or 'none'}"
    )


def bench_bf16(name: str, steps: int, fusion_mlp_ratio: float) -> dict[str, float]:
    """Paired fp32 / bf16-autocast training steps of two copies of one Zipper."""
    fp32, batch, _ = build(name, fusion_mlp_ratio)
    bf16 = copy.deepcopy(fp32)
    runs = {"fp32": fp32, "bf16": bf16}
    opts = {k: build_optimizer(m, lr=1e-3) for k, m in runs.items()}
    losses: dict[str, float] = {}

    def train_step(key: str) -> None:
        opts[key].zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key == "bf16"):
            loss = interleaved_next_token_loss(runs[key](batch), batch)
        loss.backward()
        opts[key].step()
        losses[key] = float(loss.detach())

    for key in runs:  # warm-up (and the first of the steps both take)
        train_step(key)
    ratios = []
    for _ in range(steps):
        t32, t16 = timed(lambda: train_step("fp32")), timed(lambda: train_step("bf16"))
        ratios.append(t32 / t16)
    return {
        "train_bf16_speedup": statistics.median(ratios),
        "train_bf16_speedup_min": min(ratios),
        "train_bf16_speedup_max": max(ratios),
        "bf16_steps": steps + 1,
        "bf16_loss_rel_diff": abs(losses["bf16"] - losses["fp32"]) / losses["fp32"],
    }


def bench_config(
    name: str, repeats: int, fusion_mlp_ratio: float, compile: bool
) -> dict[str, float]:
    model, batch, examples = build(name, fusion_mlp_ratio)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def zipper_step() -> None:
        opt.zero_grad(set_to_none=True)
        interleaved_next_token_loss(model(batch), batch).backward()
        opt.step()

    def towers_step() -> None:
        opt.zero_grad(set_to_none=True)
        for tower_name, tower in model.towers.items():
            tb = batch[tower_name]
            logits = tower(tb.tokens)
            next_token_loss(logits[:, :-1], tb.tokens[:, 1:], tb.valid[:, 1:].float()).backward()
        opt.step()

    for _ in range(2):  # warm up both (allocator, thread pools)
        zipper_step()
        towers_step()
    zip_times, tower_times = [], []
    for _ in range(repeats):  # interleave so drift hits both alike
        zip_times.append(timed(zipper_step))
        tower_times.append(timed(towers_step))
    t_zip, t_towers = statistics.median(zip_times), statistics.median(tower_times)

    model.eval()
    prompts = [[examples[0][1]]]  # text prompt -> 256 speech tokens (TTS-like)
    new = 256

    def gen(use_cache: bool) -> None:
        out = generate(
            model, prompts, ["speech"], max_new_tokens=new, min_new_tokens=new, use_cache=use_cache
        )
        assert len(out[0][0].tokens) == new

    gen(True)  # warm-up
    gen(False)
    cached_times, full_times = [], []
    for _ in range(max(1, repeats // 2)):  # alternate so drift hits both alike
        cached_times.append(timed(lambda: gen(True)))
        full_times.append(timed(lambda: gen(False)))
    ratios = [f / c for f, c in zip(full_times, cached_times)]
    t_cached = statistics.median(cached_times)
    t_full = statistics.median(full_times)
    bandwidth = memory_bandwidth()
    step_bytes = speech_step_bytes(model, len(prompts[0][0].tokens) + 2, new)
    compiled: dict[str, float] = {}
    if compile:
        compiled = bench_compiled(model, prompts, new, repeats)
        compiled["compiled_decode_fraction_of_bandwidth"] = (
            step_bytes / bandwidth / (compiled["compiled_s"] / (new + 2))
        )
    return {
        **compiled,
        "zipper_step_s": t_zip,
        "towers_step_s": t_towers,
        "zipper_over_towers": t_zip / t_towers,
        "cached_tok_per_s": new / t_cached,
        "uncached_tok_per_s": new / t_full,
        "cache_speedup": statistics.median(ratios),
        "cache_speedup_min": min(ratios),
        "cache_speedup_max": max(ratios),
        "bandwidth_gb_s": bandwidth / 1e9,
        "decode_fraction_of_bandwidth": step_bytes / bandwidth / (t_cached / (new + 2)),
    }


def bench_compiled(model: Zipper, prompts, new: int, repeats: int) -> dict[str, float]:
    """Eager cached decoding vs the same with ``compile=True``, alternating."""

    def gen(compile: bool) -> list:
        return generate(
            model, prompts, ["speech"], max_new_tokens=new, min_new_tokens=new, compile=compile
        )

    torch._dynamo.reset()
    compile_s = timed(lambda: gen(True))  # first call: compiles the step
    same = gen(True) == gen(False)
    eager_times, compiled_times = [], []
    for _ in range(repeats):
        eager_times.append(timed(lambda: gen(False)))
        compiled_times.append(timed(lambda: gen(True)))
    ratios = [e / c for e, c in zip(eager_times, compiled_times)]
    return {
        "compiled_decode_speedup": statistics.median(ratios),
        "compiled_decode_speedup_min": min(ratios),
        "compiled_decode_speedup_max": max(ratios),
        "compiled_s": statistics.median(compiled_times),
        "compiled_tok_per_s": new / statistics.median(compiled_times),
        "compile_s": compile_s,
        "compiled_same_tokens": float(same),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fusion-mlp-ratio", type=float, default=1.0)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compiled decode (slow to compile)"
    )
    parser.add_argument(
        "--bf16-steps", type=int, default=4, help="paired bf16/fp32 steps (0: skip)"
    )
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, fusion_mlp_ratio {args.fusion_mlp_ratio}"
    )
    print(
        f"{'config':8} {'towers step':>12} {'zipper step':>12} {'ratio':>6} {'cached tok/s':>13} {'uncached tok/s':>15} {'speedup':>8}"
    )
    result = {}
    for name in args.configs.split(","):
        result = bench_config(name, args.repeats, args.fusion_mlp_ratio, not args.no_compile)
        print(
            f"{name:8} {result['towers_step_s'] * 1e3:10.1f}ms {result['zipper_step_s'] * 1e3:10.1f}ms "
            f"{result['zipper_over_towers']:6.2f} {result['cached_tok_per_s']:13.1f} "
            f"{result['uncached_tok_per_s']:15.1f} {result['cache_speedup']:8.1f} "
            f"(paired {result['cache_speedup_min']:.1f}-{result['cache_speedup_max']:.1f}; "
            f"bandwidth {result['bandwidth_gb_s']:.1f} GB/s, decode at "
            f"{result['decode_fraction_of_bandwidth']:.2f} of it)"
        )
        if "compiled_decode_speedup" in result:
            print(
                f"{'':8} compiled cached decode: {result['compiled_tok_per_s']:.1f} tok/s, "
                f"{result['compiled_decode_speedup']:.2f}x eager (paired "
                f"{result['compiled_decode_speedup_min']:.2f}-"
                f"{result['compiled_decode_speedup_max']:.2f}; compile "
                f"{result['compile_s']:.0f} s; same tokens: "
                f"{'yes' if result['compiled_same_tokens'] else 'NO'}; at "
                f"{result['compiled_decode_fraction_of_bandwidth']:.2f} of the bandwidth)"
            )
        if args.bf16_steps > 0:
            result.update(bench_bf16(name, args.bf16_steps, args.fusion_mlp_ratio))
            print(
                f"{'':8} bf16 autocast training step: {result['train_bf16_speedup']:.2f}x fp32 "
                f"(paired {result['train_bf16_speedup_min']:.2f}-"
                f"{result['train_bf16_speedup_max']:.2f}; loss after "
                f"{result['bf16_steps']} steps differs by "
                f"{100 * result['bf16_loss_rel_diff']:.2g}%; {cpu_bf16_support()})"
            )
    last = (
        f"zipper_over_towers={result['zipper_over_towers']:.3f} "
        f"cache_speedup={result['cache_speedup']:.2f} "
        f"decode_fraction_of_bandwidth={result['decode_fraction_of_bandwidth']:.3f}"
    )
    if "compiled_decode_speedup" in result:
        last += f" compiled_decode_speedup={result['compiled_decode_speedup']:.2f}"
    if "train_bf16_speedup" in result:
        last += f" train_bf16_speedup={result['train_bf16_speedup']:.2f}"
    print(last)


if __name__ == "__main__":
    main()
