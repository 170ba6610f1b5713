"""Train a model from a YAML config.

    multitower train CONFIG.yaml [key=value ...] [--run-dir DIR] [--resume]

The config names a recipe (``recipe: toy_lm``), a ``train`` section
(:class:`~multitower.train.trainer.TrainConfig`) and the recipe's own sections.
Every section is validated before anything is built. The resolved config is
written to ``RUN_DIR/config.yaml``. ``--resume`` continues from the newest intact
checkpoint of the run directory (or starts afresh when there is none).
Under ``torchrun`` set ``train.distributed=ddp`` (or ``fsdp``).
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multitower.cli.config import (
    ConfigError,
    build_dataclass,
    build_sections,
    dump_yaml,
    load_config,
    parse_yaml,
    to_plain,
)
from multitower.cli.main import CliError
from multitower.models.io import write_text_atomic
from multitower.train.checkpoint import list_checkpoints
from multitower.train.recipes import RecipeEntry, available_recipes, get_recipe
from multitower.train.trainer import TrainConfig, Trainer

RESERVED_SECTIONS = ("recipe", "train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=1e-3"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest intact checkpoint"
    )


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated run config."""

    recipe: str
    entry: RecipeEntry
    train: TrainConfig
    sections: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "train": to_plain(self.train), **to_plain(self.sections)}


def resolve_config(config: dict[str, Any]) -> ResolvedConfig:
    """Validate every section of ``config`` and report all problems at once.

    Raises:
        ConfigError: every problem found (recipe, ``train`` and recipe sections).
    """
    problems: list[str] = []
    name = config.get("recipe")
    entry = None
    if not isinstance(name, str):
        problems.append(
            f"recipe: expected the name of a recipe ({', '.join(available_recipes())}), got {name!r}"
        )
    else:
        try:
            entry = get_recipe(name)
        except ConfigError as err:
            problems += err.problems
    train = None
    try:
        train = build_dataclass(TrainConfig, config.get("train") or {}, "train")
    except ConfigError as err:
        problems += err.problems
    sections: dict[str, Any] = {k: v for k, v in config.items() if k not in RESERVED_SECTIONS}
    if entry is not None and entry.sections is not None:
        try:
            sections = build_sections(config, entry.sections, ignore=RESERVED_SECTIONS)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    assert entry is not None and train is not None and isinstance(name, str)
    return ResolvedConfig(name, entry, train, sections)


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
    resolved = resolve_config(load_config(args.config, args.overrides))
    run_dir: Path = args.run_dir or Path("runs") / args.config.stem
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not args.resume and list_checkpoints(run_dir):
        raise CliError(
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
        raise CliError(f"cannot set up training: {err}") from err
    if args.resume:
        step = trainer.resume()
        if is_main:
            print(
                f"resumed {run_dir} at step {step}"
                if step
                else f"no checkpoint in {run_dir}: starting at step 0"
            )
    metrics = trainer.fit()
    if is_main:
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        print(f"finished {run_dir} at step {trainer.step}: {shown}")
    return 0
