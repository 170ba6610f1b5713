"""Aten calls and host syncs per generated token of cached Zipper decoding (torch profiler).

Run:  python benchmarks/decode_profile.py [--config small] [--tokens 64]

Profiles greedy generation of ``--tokens`` speech tokens from a text prompt at the
``benchmarks/zipper_step.py`` sizes and divides by the number of steps fed (bos,
content, eos; the prompt's prefill is counted in). A host sync is a call that reads
a tensor's values back (``.item()``, ``.tolist()``, ``bool(t)``, ``int(t)``,
``float(t)``), counted by wrapping those methods. The last line is machine readable:
  aten_calls_per_token=<n> syncs_per_token=<n> cached_ms_per_token=<t>
(the last: median of ``--repeats`` timed runs without the profiler).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile

from multitower.generation import generate
from zipper_step import build  # benchmarks/ is on sys.path when run as a script

READ_BACKS = ("item", "tolist", "__bool__", "__int__", "__float__")


@contextmanager
def count_syncs() -> Iterator[list[int]]:
    """Count calls of the tensor methods that read values back to the host."""
    counter = [0]
    saved = {name: getattr(torch.Tensor, name) for name in READ_BACKS}

    def wrap(method: Callable) -> Callable:
        def counted(self, *args, **kwargs):
            counter[0] += 1
            return method(self, *args, **kwargs)

        return counted

    for name, method in saved.items():
        setattr(torch.Tensor, name, wrap(method))
    try:
        yield counter
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, _, examples = build(args.config, 1.0)
    model.eval()
    prompts = [[examples[0][1]]]

    def gen() -> None:
        generate(model, prompts, ["speech"], max_new_tokens=args.tokens, min_new_tokens=args.tokens)

    gen()  # warm-up
    with count_syncs() as counter:
        gen()
    syncs = counter[0]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gen()
    events = prof.key_averages()
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    n = args.tokens + 2  # bos .. eos steps fed through the model
    top = sorted(
        (e for e in events if e.key.startswith("aten::")), key=lambda e: e.count, reverse=True
    )[:12]
    for e in top:
        print(f"{e.key:40} {e.count / n:8.1f} per token")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        gen()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) / n * 1e3
    print(
        f"aten_calls_per_token={calls / n:.0f} syncs_per_token={syncs / n:.1f} "
        f"cached_ms_per_token={ms:.2f}"
    )


if __name__ == "__main__":
    main()
