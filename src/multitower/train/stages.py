"""Building blocks of resumable multi-stage experiments.

A run directory records its finished stages in ``stages.json`` (:class:`Stages`);
each training stage resumes from its own checkpoints (:func:`train_resumable`)
and can keep its best step on held-out data (:class:`BestCheckpoint`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from multitower.io import write_text_atomic
from multitower.models.pretrained import save_pretrained
from multitower.progress import log_line, set_stage_counter, stage_label
from multitower.train.trainer import TrainConfig, Trainer


def log(message: str) -> None:
    """Print a timestamped progress line to stderr (and the run log, when one is active),
    after the running stage's "stage k of n" (:meth:`Stages.plan`, :meth:`Stages.begin`)."""
    stage = stage_label()
    log_line(f"({stage}) {message}" if stage else message)


class Stages:
    """Which stages of a run directory are finished (``stages.json``, written atomically)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "stages.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        # set in worker processes that share the run directory: only one process writes
        self.read_only = False
        self.planned: list[str] = []
        self.current: str | None = None  # the stage this process runs now (:meth:`begin`)

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def plan(self, names: list[str]) -> None:
        """Declare the run's stages in plan order, for "stage k of n" in progress lines.

        A line carries the place in this list of the stage named by the last
        :meth:`begin`, not a count of the finished stages: stages that run at the same
        time (in other processes) or out of order, and a stage redone on a resume,
        keep their own number. Before any :meth:`begin` lines carry none.
        """
        self.planned, self.current = list(names), None

        def counter() -> tuple[int, int] | None:
            if self.current is None:
                return None
            return self.planned.index(self.current) + 1, len(self.planned)

        set_stage_counter(counter)

    def begin(self, name: str | None) -> None:
        """Label the lines that follow with the planned stage ``name``'s place
        (``None``: no label, for lines that belong to no single stage). Outside a
        planned run (no :meth:`plan`) it changes nothing.

        Raises:
            ValueError: ``name`` is not in the plan.
        """
        if not self.planned:
            return
        if name is not None and name not in self.planned:
            raise ValueError(f"stage {name!r} is not one of the planned {self.planned}")
        self.current = name

    def mark(self, name: str, info: Any = True) -> None:
        """Record ``name`` as finished with ``info`` (a no-op when already recorded so).

        Raises:
            RuntimeError: a change while :attr:`read_only` (a worker process would
                overwrite the marks of the process that owns the file).
        """
        if self.data.get(name) == info:
            return
        if self.read_only:
            raise RuntimeError(f"stage {name!r} changed in a read-only view of {self.path}")
        self.data[name] = info
        write_text_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


class Repeated:
    """``dataset`` concatenated with itself ``times`` times."""

    def __init__(self, dataset: Any, times: int) -> None:
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.dataset[i % len(self.dataset)]


class BestCheckpoint:
    """Keeps the weights with the lowest validation loss seen so far in ``directory``.

    Called as the trainer's ``eval_fn``: every ``eval_every`` steps ``score(model)``
    gives the held-out loss (lower is better) and, on a new best, writes the model to
    ``directory/model`` and then ``directory/best.json`` (step and loss). The
    record survives an interruption, so a resumed run keeps comparing against it.
    Fine-tuning a strong pre-trained start on 40 pairs overfits within a few
    hundred steps; selecting on held-out pairs picks the step at which to stop.
    """

    def __init__(self, directory: Path, score: Callable[[nn.Module], float]) -> None:
        self.directory, self.score = directory, score
        self.record: dict[str, Any] | None = None
        meta = directory / "best.json"
        if meta.is_file() and (directory / "model").is_dir():
            self.record = json.loads(meta.read_text())

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        loss = self.score(model)
        if self.record is None or loss < self.record["valid_loss"]:
            save_pretrained(model, self.directory / "model")
            self.record = {"step": step, "valid_loss": loss}
            write_text_atomic(self.directory / "best.json", json.dumps(self.record))
        return {"valid_loss": loss}


def train_resumable(
    model: nn.Module,
    task: Any,
    dataset: Any,
    collate: Callable,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    seed: int,
    best: BestCheckpoint | None = None,
) -> nn.Module:
    """Train with the project's Trainer, resuming from ``run_dir`` when possible.

    A dataset smaller than one batch (1% of a small aligned set) is repeated so
    that every fraction trains with the same batch size. With ``best`` the
    validation loss is scored before the first step (a fresh start only), every
    ``cfg.eval_every`` steps and at the end, and the best weights are kept (see
    :class:`BestCheckpoint`; step 0 is the model as given); the caller loads them.
    """
    if len(dataset) < cfg.batch_size:
        dataset = Repeated(dataset, math.ceil(cfg.batch_size / len(dataset)))
    trainer: Trainer | None = None

    def eval_fn(module: nn.Module) -> dict[str, float]:
        assert best is not None and trainer is not None
        return best(module, trainer.step)

    trainer = Trainer(
        model,
        task,
        dataset,
        collate,
        replace(cfg, seed=seed),
        run_dir / "train",
        eval_fn=eval_fn if best is not None else None,
    )
    step = trainer.resume()
    if step:
        log(f"  resumed {run_dir.name} at step {step}")
    elif best is not None and best.record is None:
        # the start is a candidate too: on a few pairs even the first scored step
        # can be worse than the untouched pre-trained model
        best(trainer.module, 0)
    trainer.fit()
    return trainer.module
