"""Train a model from a YAML config.

    multitower train CONFIG.yaml [key=value ...] [--run-dir DIR] [--resume]

The config names a recipe (``recipe: toy_lm``), a ``train`` section
(:class:`~multitower.train.trainer.TrainConfig`) and the recipe's own sections.
Every section is validated before anything is built. The resolved config is
written to ``RUN_DIR/config.yaml``; the progress lines, the resume and the final
line are appended to ``RUN_DIR/run.log`` (as ``multitower run`` does). ``--resume`` continues from the newest intact
checkpoint of the run directory (or starts afresh when there is none).
Under ``torchrun`` set ``train.distributed=ddp`` (or ``fsdp``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from multitower.cli.common import add_threads_argument, set_threads
from multitower.config import (
    dump_yaml,
    load_config,
    parse_yaml,
)
from multitower.errors import UserError
from multitower.experiments.recipes import resolve_config
from multitower.io import write_text_atomic
from multitower.progress import log_line, run_log
from multitower.train.checkpoint import list_checkpoints
from multitower.train.trainer import Trainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=1e-3"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest intact checkpoint"
    )
    add_threads_argument(parser)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _warn_config_changes(path: Path, new: dict[str, Any]) -> None:
    if not path.is_file():
        return
    old = _flatten(parse_yaml(path.read_text(encoding="utf-8"), source=str(path)) or {})
    fresh = _flatten(new)
    changed = [k for k in sorted(set(old) | set(fresh)) if old.get(k) != fresh.get(k)]
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {fresh.get(k)!r}" for k in changed)
        warnings.warn(f"resuming with a config that differs from {path}: {details}", stacklevel=2)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    resolved = resolve_config(load_config(args.config, args.overrides))
    run_dir: Path = args.run_dir or Path("runs") / args.config.stem
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not args.resume and list_checkpoints(run_dir):
        raise UserError(
            f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
            "or choose another --run-dir"
        )
    torch.manual_seed(resolved.train.seed)  # the same initial weights on every rank
    recipe = resolved.entry.builder(resolved.sections)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "config.yaml"
        if args.resume:
            _warn_config_changes(config_path, resolved.to_dict())
        write_text_atomic(config_path, dump_yaml(resolved.to_dict()))
    # only rank 0 writes the run's log, as it writes everything else
    with run_log(run_dir / "run.log") if is_main else contextlib.nullcontext():
        try:
            trainer = Trainer(
                recipe.model,
                recipe.task,
                recipe.dataset,
                recipe.collate_fn,
                resolved.train,
                run_dir,
                eval_fn=recipe.eval_fn,
            )
        except ValueError as err:  # device, precision, batch split or dataset size
            raise UserError(f"cannot set up training: {err}") from err
        if args.resume:
            step = trainer.resume()
            if is_main:
                _report(
                    f"resumed {run_dir} at step {step}"
                    if step
                    else f"no checkpoint in {run_dir}: starting at step 0"
                )
        metrics = trainer.fit()
        if is_main:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
            _report(f"finished {run_dir} at step {trainer.step}: {shown}")
    return 0


def _report(message: str) -> None:
    """``message`` on stdout, and timestamped in the run log."""
    print(message)
    log_line(message, stderr=False)
