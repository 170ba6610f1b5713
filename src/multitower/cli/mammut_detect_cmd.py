"""Open-vocabulary detection with MaMMUT: train detectors on base classes, score novel ones by name.

    multitower mammut-detect CONFIG.yaml [key=value ...] [--run-dir DIR] [--jobs N] [--threads N]

For each detector in ``variants`` (``open_vocab``: class logits from class-name
text embeddings; ``closed_vocab``: a learned table over the base classes;
``no_contrastive``: the open head on a MaMMUT trained without the contrastive
loss; ``cropped_pos_emb``: on a MaMMUT pre-trained with cropped positional
embeddings) it takes the pre-trained MaMMUT (``init_from=RUN_DIR`` and
friends, or pre-trains one with ``pretrain.config``), trains the detection head
on base-class boxes only, and evaluates AP / AP50 on held-out images with every
class named, on all, novel and base classes (pycocotools:
``pip install 'multitower[detection]'``). Writes ``results.json``,
``results.md`` and ``plots/detections_<variant>.png`` (white boxes: base
classes, cyan: novel) into the run directory (default ``runs/<config name>``);
a detector's directory is what ``multitower detect --run-dir`` reads. The
pre-trainings and detectors are independent: ``--jobs`` of them run at once, each
in its own process (a detector as soon as its MaMMUT is trained).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multitower.cli.common import (
    add_config_arguments,
    add_jobs_argument,
    add_threads_argument,
    resolve_jobs,
    set_threads,
)
from multitower.config import build_dataclass, load_config
from multitower.experiments.mammut.detect_config import DetectExperimentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML config of mammut-detect")
    add_jobs_argument(parser, "pre-trainings and detectors")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    # the whole config is checked before torch loads
    cfg = build_dataclass(DetectExperimentConfig, load_config(args.config, args.overrides), "")
    jobs = resolve_jobs(args.jobs)
    set_threads(args.threads)
    from multitower.experiments.mammut.detect import results_markdown, run_experiment
    from multitower.progress import run_log

    run_dir: Path = args.run_dir or Path("runs") / args.config.stem
    with run_log(run_dir / "run.log"):
        result = run_experiment(cfg, run_dir, source=str(args.config), jobs=jobs)
    print(results_markdown(result))
    print(f"wrote {run_dir / 'results.md'}, {run_dir / 'results.json'} and {run_dir / 'plots'}")
    return 0
