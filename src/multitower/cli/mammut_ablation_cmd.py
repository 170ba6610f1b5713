"""Ablation: how the cross-attention interval trades retrieval against VQA.

    multitower mammut-ablation CONFIG.yaml [key=value ...] [--intervals 1 2 4]
                               [--seeds 0 1] [--run-dir DIR] [--threads N]

Trains the ``mammut`` recipe of CONFIG once per cross-attention interval k
(``model.cross_attn_every=k``: cross-attention after every k-th decoder layer)
and seed, evaluates retrieval, greedy captioning and VQA on the evaluation set,
and writes ``ablation.json``, ``ablation.md`` and ``ablation.png`` into the run
directory (default ``runs/<config name>``; each run in ``k<k>_seed<s>/``). The
paper reports that fewer cross-attention layers help retrieval and more help
VQA; the table reports what this setting gives, per seed and averaged.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from multitower.cli.common import add_threads_argument, set_threads
from multitower.errors import UserError
from multitower.experiments.mammut.run import (
    evaluate_run,
    json_safe,
    resolve_mammut_config,
    train_run,
)
from multitower.io import write_json_atomic, write_text_atomic

COLUMNS = ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "vqa_accuracy", "greedy_cider")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config with recipe: mammut")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    parser.add_argument(
        "--intervals", type=int, nargs="+", default=[1, 2, 4], help="cross-attention intervals k"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>")
    add_threads_argument(parser)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def ablation_markdown(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    """Markdown table: one row per interval, metrics averaged over seeds (percent)."""
    header = "| k | cross-attn layers | " + " | ".join(COLUMNS) + " | train s |"
    lines = [
        f"Cross-attention interval ablation, mean over seeds {seeds} "
        "(retrieval recall and VQA accuracy in %, CIDEr-D as is).",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 3),
    ]
    for row in rows:
        cells = []
        for col in COLUMNS:
            values = [r["metrics"][col] for r in row["runs"] if col in r["metrics"]]
            if not values:
                cells.append("-")
                continue
            scale = 1.0 if col.endswith("cider") else 100.0
            text = f"{scale * _mean(values):.1f}" if scale == 100.0 else f"{_mean(values):.3f}"
            if len(values) > 1:
                spread = scale * (max(values) - min(values)) / 2
                text += f" ± {spread:.1f}" if scale == 100.0 else f" ± {spread:.3f}"
            cells.append(text)
        seconds = _mean([r["train_seconds"] for r in row["runs"]])
        layers = ",".join(str(i) for i in row["cross_layers"])
        lines.append(
            f"| {row['interval']} | {layers} | " + " | ".join(cells) + f" | {seconds:.0f} |"
        )
    if len(seeds) > 1:
        lines += ["", "± is half the range over seeds."]
    return "\n".join(lines) + "\n"


def plot_ablation(rows: list[dict[str, Any]], path: Path) -> None:
    """Retrieval R@1 (both directions) and VQA accuracy against the interval k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [row["interval"] for row in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for col, label in (("i2t_r1", "i2t R@1"), ("t2i_r1", "t2i R@1"), ("vqa_accuracy", "VQA acc")):
        means = [100 * _mean([r["metrics"][col] for r in row["runs"]]) for row in rows]
        ax.plot(ks, means, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("cross-attention every k-th decoder layer")
    ax.set_ylabel("%")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=3, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if any(k < 1 for k in args.intervals):
        raise UserError(f"--intervals must be positive, got {args.intervals}")
    root: Path = args.run_dir or Path("runs") / args.config.stem
    rows = []
    for k in args.intervals:
        row: dict[str, Any] = {"interval": k, "runs": []}
        for seed in args.seeds:
            overrides = [
                *args.overrides,
                f"model.cross_attn_every={k}",
                "model.cross_attn_layers=null",
                f"train.seed={seed}",
            ]
            resolved = resolve_mammut_config(args.config, overrides)
            trained = train_run(resolved, root / f"k{k}_seed{seed}")
            result = evaluate_run(
                trained.model, trained.components, resolved.sections["eval"], beam=False
            )
            row["cross_layers"] = list(trained.model.config.cross_layers)
            row["runs"].append(
                {
                    "seed": seed,
                    "metrics": result["metrics"],
                    "baselines": result["baselines"],
                    "train_seconds": trained.train_seconds,
                }
            )
            shown = " ".join(f"{c}={result['metrics'].get(c, float('nan')):.3f}" for c in COLUMNS)
            print(f"k={k} seed={seed}: {shown}", flush=True)
        rows.append(row)
    write_json_atomic(
        root / "ablation.json",
        json_safe(
            {
                "config": str(args.config),
                "overrides": args.overrides,
                "seeds": args.seeds,
                "rows": rows,
            }
        ),
        indent=2,
    )
    table = ablation_markdown(rows, args.seeds)
    write_text_atomic(root / "ablation.md", table)
    plot_ablation(rows, root / "ablation.png")
    print(table)
    print(f"wrote {root / 'ablation.md'}, {root / 'ablation.json'} and {root / 'ablation.png'}")
    return 0
