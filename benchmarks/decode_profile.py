"""Aten calls and host syncs per generated token of cached Zipper decoding (torch profiler).

Run:  python benchmarks/decode_profile.py [--config small] [--tokens 64]

Profiles greedy generation of ``--tokens`` speech tokens from a text prompt at the
``benchmarks/zipper_step.py`` sizes and divides by the number of tokens. A host sync
is an ``aten::_local_scalar_dense`` call (what ``.item()``, ``int(t)``, ``bool(t)``
and ``.tolist()`` run). The last line is machine readable:
  aten_calls_per_token=<n> syncs_per_token=<n>
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from multitower.generation import generate
from zipper_step import build  # benchmarks/ is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model, _, examples = build(args.config, 1.0)
    model.eval()
    prompts = [[examples[0][1]]]

    def gen() -> None:
        generate(model, prompts, ["speech"], max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    gen()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gen()
    events = prof.key_averages()
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    syncs = sum(e.count for e in events if e.key == "aten::_local_scalar_dense")
    n = args.tokens + 2  # bos .. eos steps fed through the model
    top = sorted(
        (e for e in events if e.key.startswith("aten::")), key=lambda e: e.count, reverse=True
    )[:12]
    for e in top:
        print(f"{e.key:40} {e.count / n:8.1f} per token")
    print(f"aten_calls_per_token={calls / n:.0f} syncs_per_token={syncs / n:.1f}")


if __name__ == "__main__":
    main()
