"""Decoding speed of a zipped Hugging Face tower vs the same HF model's own ``generate``.

    OMP_NUM_THREADS=1 python benchmarks/hf_tower.py [--repeats 5] [--new-tokens 256]

A tiny randomly initialised GPT-2-style model (``transformers``, CPU, float32) is
zipped as the text tower with a small speech :class:`DecoderTower`
(cross-attention every 2nd layer both ways, residual input projection, gates at
zero) and decodes greedily with :func:`multitower.generation.generate` and its
KV caches: a text-only prompt, ``--new-tokens`` text tokens (eos suppressed so
that every run decodes all of them). The reference is the HF model's own
``generate`` with its cache on the same prompt, the same greedy rule (pad and
bos suppressed, as our decoding never samples them) and the same number of new
tokens. Both give the same tokens (checked). Batch 1 and 8; each repetition
times the two sides back to back in one process, in alternating order.

Prints tokens/s per side and batch, and last ``hf_zipped_over_hf_generate=<r>``:
the median over all repetitions and both batch sizes of (zipped time / HF time)
(target <= 1.3: the fusion costs little while its gates are closed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from multitower.generation import generate
from multitower.interleave import Segment
from multitower.models.decoder import DecoderConfig
from multitower.models.zipped import zip_towers

PAD, BOS, EOS = 0, 1, 2


def build(vocab: int, width: int, layers: int, heads: int, positions: int):
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        n_positions=positions,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    from multitower.models.decoder import DecoderTower

    speech = DecoderTower(
        DecoderConfig(vocab_size=256, d_model=64, num_layers=2, num_heads=4, max_seq_len=positions)
    )
    model = zip_towers(
        {"text": hf, "speech": speech},
        fusion={"cross_attention_every": 2, "input_projection": "residual"},
    ).eval()
    return hf, model


def run_zipped(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    out = generate(
        model,
        [[Segment("text", p)] for p in prompts],
        ["text"],
        max_new_tokens=n,
        min_new_tokens=n,
    )
    return [list(o[0].tokens) for o in out]


@torch.no_grad()
def run_hf(hf, prompts: list[list[int]], n: int) -> list[list[int]]:
    ids = torch.tensor([[BOS, *p, EOS, BOS] for p in prompts])  # as our collation lays it out
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=EOS,
        suppress_tokens=[PAD, BOS],
    )
    return out[:, ids.shape[1] :].tolist()


def timed(fn, *args) -> tuple[float, list[list[int]]]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args()
    n = args.new_tokens
    hf, model = build(args.vocab, args.width, args.layers, args.heads, args.prompt_len + n + 8)
    print(
        f"GPT-2-style text tower: vocab {args.vocab}, width {args.width}, {args.layers} layers, "
        f"{args.heads} heads; speech DecoderTower 64 wide, 2 layers; {n} new tokens; "
        f"torch threads {torch.get_num_threads()}"
    )
    gen = torch.Generator().manual_seed(1)
    ratios: list[float] = []
    for batch in (1, 8):
        prompts = torch.randint(3, args.vocab, (batch, args.prompt_len), generator=gen).tolist()
        ours, theirs = run_zipped(model, prompts, n), run_hf(hf, prompts, n)  # warm-up
        assert ours == theirs, "the zipped tower and HF generate gave different tokens"
        times: dict[str, list[float]] = {"zipped": [], "hf": []}
        pair: list[float] = []
        for r in range(args.repeats):
            order = ["zipped", "hf"] if r % 2 == 0 else ["hf", "zipped"]
            got = {}
            for side in order:
                fn = run_zipped if side == "zipped" else run_hf
                got[side], _ = timed(fn, model if side == "zipped" else hf, prompts, n)
                times[side].append(got[side])
            pair.append(got["zipped"] / got["hf"])
        ratios += pair
        tps = {s: batch * n / statistics.median(t) for s, t in times.items()}
        print(
            f"batch {batch}: zipped {tps['zipped']:.0f} tok/s, HF generate {tps['hf']:.0f} tok/s, "
            f"median paired ratio {statistics.median(pair):.3f} (same tokens: yes)"
        )
    print(f"hf_zipped_over_hf_generate={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
