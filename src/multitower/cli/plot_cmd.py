"""Plot a run's loss and metric curves from ``RUN_DIR/metrics.jsonl`` to PNG files.

    multitower plot RUN_DIR [--out DIR]

Writes ``loss.png`` (training loss, and eval loss when logged) and
``metrics.png`` (one panel per other logged number) into ``DIR``
(``RUN_DIR/plots`` by default).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from multitower.errors import UserError
from multitower.train.logger import read_metrics

_NOT_CURVES = {"step", "epoch", "loss", "eval/loss"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory holding metrics.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/plots")


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(row["step"])
            values.append(float(value))
    return steps, values


def plot_run(run_dir: Path, out_dir: Path) -> list[Path]:
    """Write the PNG files; returns their paths.

    Raises:
        FileNotFoundError: no ``metrics.jsonl`` in ``run_dir``.
        UserError: the file holds no logged loss.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("step"), int)]
    if not any("loss" in r for r in rows):
        raise UserError(f"{run_dir / 'metrics.jsonl'} holds no logged loss")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "eval/loss"):
        steps, values = _series(rows, key)
        if steps:
            ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(run_dir.name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=100)
    plt.close(fig)
    written.append(out_dir / "loss.png")

    keys = sorted({k for r in rows for k in r if k not in _NOT_CURVES and _series(rows, k)[0]})
    if keys:
        cols = min(3, len(keys))
        nrows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            steps, values = _series(rows, key)
            ax.plot(steps, values)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / "metrics.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / "metrics.png")
    return written


def run(args: argparse.Namespace) -> int:
    out = args.out or args.run_dir / "plots"
    for path in plot_run(args.run_dir, out):
        print(path)
    return 0
