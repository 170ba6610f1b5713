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
    measured time per token.
The last line is machine readable and reports the largest config run:
  zipper_over_towers=<ratio> cache_speedup=<ratio> decode_fraction_of_bandwidth=<r>
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from multitower.generation import generate
from multitower.interleave import Segment, collate_interleaved
from multitower.losses import interleaved_next_token_loss, next_token_loss
from multitower.models.decoder import DecoderConfig
from multitower.models.zipper import Zipper, ZipperConfig

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


def bench_config(name: str, repeats: int, fusion_mlp_ratio: float) -> dict[str, float]:
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
    return {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fusion-mlp-ratio", type=float, default=1.0)
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
        result = bench_config(name, args.repeats, args.fusion_mlp_ratio)
        print(
            f"{name:8} {result['towers_step_s'] * 1e3:10.1f}ms {result['zipper_step_s'] * 1e3:10.1f}ms "
            f"{result['zipper_over_towers']:6.2f} {result['cached_tok_per_s']:13.1f} "
            f"{result['uncached_tok_per_s']:15.1f} {result['cache_speedup']:8.1f} "
            f"(paired {result['cache_speedup_min']:.1f}-{result['cache_speedup_max']:.1f}; "
            f"bandwidth {result['bandwidth_gb_s']:.1f} GB/s, decode at "
            f"{result['decode_fraction_of_bandwidth']:.2f} of it)"
        )
    print(
        f"zipper_over_towers={result['zipper_over_towers']:.3f} "
        f"cache_speedup={result['cache_speedup']:.2f} "
        f"decode_fraction_of_bandwidth={result['decode_fraction_of_bandwidth']:.3f}"
    )


if __name__ == "__main__":
    main()
