"""What length-grouped batches save in a speech-text fine-tuning step.

Builds the run's Zipper (its pre-trained towers and fusion settings) and takes
training steps of the recipe's batch on the run's aligned pairs, alternately a
batch of the plain shuffled order and one of the length-grouped order
(``TrainConfig.group_by_length``), both drawn from the same epoch. Prints the
share of padded positions in each tower under both orders, the mean step time of
each, and the median and spread of the paired ratios (grouped / plain). Both kinds
of step run in one process, interleaved, so machine load affects both alike; the
means are the figure to read (grouped batches differ in length, so single pairs
scatter).

Run (after the recipe's pre-training stages)::

    OMP_NUM_THREADS=1 python benchmarks/length_grouping.py --run-dir runs/zipper_speech_text

Last line: ``padding_plain=<x> padding_grouped=<x> step_ratio=<r>`` (speech-tower
padding shares; step_ratio: mean grouped step time over mean plain step time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from multitower.config import build_dataclass, load_config
from multitower.data.speech.librispeech import read_librispeech
from multitower.data.tokenizer import TextTokenizer
from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
from multitower.experiments.zipper_speech_text.pairs import (
    InterleavedLMTask,
    PairedDirections,
    interleaved_collate,
)
from multitower.experiments.zipper_speech_text.systems import build_system, time_scales
from multitower.models.decoder import DecoderTower
from multitower.models.pretrained import load_pretrained
from multitower.train.data import epoch_order


def padding_share(batches: torch.Tensor, sizes: list[int]) -> float:
    """Padded positions over all positions when each batch is padded to its longest."""
    pad = real = 0
    for b in batches.tolist():
        lengths = [sizes[i] for i in b]
        pad += max(lengths) * len(lengths) - sum(lengths)
        real += sum(lengths)
    return pad / max(pad + real, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--pairs", type=int, default=30, help="timed (plain, grouped) step pairs")
    p.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    p.add_argument("--group", type=int, default=None, help="default: the run's finetune setting")
    a = p.parse_args()
    run = a.run_dir
    needed = ["config.yaml", "text/tokenizer.json", "units/encoded.json"]
    needed += ["pretrain_text/model", "pretrain_speech/model"]
    missing = [str(run / f) for f in needed if not (run / f).exists()]
    if missing:
        raise SystemExit(f"{run} is missing {missing}: run the recipe's pre-training first")
    raw = load_config(run / "config.yaml")
    raw.pop("experiment", None)
    cfg = build_dataclass(SpeechTextConfig, raw, "")
    group = a.group if a.group is not None else cfg.finetune.group_by_length or 20
    batch_size = cfg.finetune.batch_size
    text_tok = TextTokenizer.load(run / "text" / "tokenizer.json")
    units = json.loads((run / "units" / "encoded.json").read_text())["aligned"]
    texts = [u.transcript for u in read_librispeech(run / "corpus" / "aligned")]
    pairs = [(u, text_tok.encode(t)) for u, t in zip(units, texts)]
    data = PairedDirections(pairs)
    text = load_pretrained(run / "pretrain_text" / "model", DecoderTower)
    speech = load_pretrained(run / "pretrain_speech" / "model", DecoderTower)
    fusion = cfg.fusion
    if cfg.cross_attention_positions == "time":
        fusion = replace(fusion, position_scales=time_scales(pairs))
    model = build_system("zipper", text, speech, fusion, cfg.seed)
    collate = interleaved_collate(model.modalities, cfg.loss_shares())
    task = InterleavedLMTask()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    full = len(data) // batch_size * batch_size
    orders = {
        "plain": epoch_order(len(data), cfg.seed, 0)[:full].view(-1, batch_size),
        "grouped": epoch_order(
            len(data), cfg.seed, 0, lengths=data.lengths(), group=group, batch_size=batch_size
        )[:full].view(-1, batch_size),
    }
    speech_sizes = [len(s) + 2 for s, _ in pairs for _ in data.directions]
    text_sizes = [len(t) + 2 for _, t in pairs for _ in data.directions]
    shares = {
        k: (padding_share(o, speech_sizes), padding_share(o, text_sizes)) for k, o in orders.items()
    }
    for k, (s, t) in shares.items():
        print(f"{k:8s} padding: speech tower {s:.1%}, text tower {t:.1%}")
    n = min(a.pairs + a.warmup, len(orders["plain"]))
    times: dict[str, list[float]] = {k: [] for k in orders}
    model.train()
    for i in range(n):
        for kind, order in orders.items():
            start = time.perf_counter()
            batch = collate([data[j] for j in order[i].tolist()])
            loss = task.compute_loss(model, batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i >= a.warmup:
                times[kind].append(time.perf_counter() - start)
    if not times["plain"]:
        raise SystemExit("no timed pairs: raise --pairs or lower --warmup")
    ratios = sorted(g / p for g, p in zip(times["grouped"], times["plain"]))
    means = {k: statistics.fmean(v) for k, v in times.items()}
    step_ratio = means["grouped"] / means["plain"]
    print(
        f"step time (batch {batch_size}, {len(ratios)} pairs, group {group}): "
        f"plain {means['plain'] * 1e3:.0f} ms, grouped {means['grouped'] * 1e3:.0f} ms; "
        f"paired ratios median {statistics.median(ratios):.2f} "
        f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )
    print(
        f"padding_plain={shares['plain'][0]:.3f} padding_grouped={shares['grouped'][0]:.3f} "
        f"step_ratio={step_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
