"""Plot a run's loss and metric curves from ``RUN_DIR/metrics.jsonl`` to PNG files.

    multitower plot RUN_DIR [--out DIR]

Writes ``loss.png`` (training loss, and eval loss when logged) and
``metrics.png`` (one panel per other logged number) into ``DIR``
(``RUN_DIR/plots`` by default). An experiment directory (``multitower run``)
keeps one ``metrics.jsonl`` per training stage in its subfolders: each is plotted
into ``DIR/<stage>/``, e.g. ``plots/finetune_zipper_1/loss.png``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from multitower.errors import UserError
from multitower.train.logger import METRICS_NAME, read_metrics

_NOT_CURVES = {"step", "epoch", "loss", "eval/loss"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir",
        type=Path,
        help="a run directory holding metrics.jsonl, or an experiment's (one per stage)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/plots")


_LABELS = {
    "lr": "learning rate",
    "fusion_lr": "fusion learning rate",
    "tokens_per_s": "throughput (tokens / s)",
    "grad_norm": "gradient norm (before clipping)",
    "logit_scale": "contrastive logit scale",
}


def metric_label(key: str) -> str:
    """A readable panel title for a logged key: ``eval/valid_loss`` -> ``held-out: valid loss``."""
    held_out = key.startswith("eval/")
    name = key.removeprefix("eval/")
    label = _LABELS.get(name, name.replace("_", " "))
    return f"held-out: {label}" if held_out else label


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(row["step"])
            values.append(float(value))
    return steps, values


def stage_runs(run_dir: Path) -> dict[str, Path]:
    """Name -> folder of every ``metrics.jsonl`` below ``run_dir`` (an experiment's stages).

    The name is the folder's path below ``run_dir`` joined by ``_``, without a last
    ``train`` (``finetune/zipper_1/train`` -> ``finetune_zipper_1``).
    """
    found = {}
    for path in sorted(run_dir.rglob(METRICS_NAME)):
        parts = list(path.parent.relative_to(run_dir).parts)
        if len(parts) > 1 and parts[-1] == "train":
            parts = parts[:-1]
        if parts:
            found["_".join(parts)] = path.parent
    return found


def plot_run(run_dir: Path, out_dir: Path, *, title: str | None = None) -> list[Path]:
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
    ax.set_title(title or run_dir.name)
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
            ax.set_title(metric_label(key))
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
    if (args.run_dir / METRICS_NAME).is_file():
        written = plot_run(args.run_dir, out)
    else:
        stages = stage_runs(args.run_dir) if args.run_dir.is_dir() else {}
        if not stages:
            raise UserError(f"no {METRICS_NAME} in {args.run_dir} or its subfolders")
        written = [p for name, d in stages.items() for p in plot_run(d, out / name, title=name)]
    for path in written:
        print(path)
    return 0
