"""Metrics log: one JSON object per logged step in ``run_dir/metrics.jsonl``.

Each line holds at least ``step``, ``loss``, ``lr`` and ``tokens_per_s``, plus the
task's metrics and eval results. When ``tensorboard`` is importable the same
scalars also go to a SummaryWriter in ``run_dir/tensorboard``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from multitower.io import write_text_atomic

METRICS_NAME = "metrics.jsonl"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class MetricsLogger:
    """Appends metrics rows; does nothing when ``enabled`` is False (ranks other than 0).

    Args:
        run_dir: directory holding ``metrics.jsonl``.
        enabled: write anything at all.
        tensorboard: also write TensorBoard events when the package is installed.
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], *, enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.path = Path(run_dir) / METRICS_NAME
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step`` greater than ``step`` (logged after the checkpoint a
        resumed run starts from), so the log reads as one uninterrupted run."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Append ``{"step": step, **values}`` and flush."""
        if not self.enabled:
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        row = {"step": step, **{k: _json_value(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of ``run_dir/metrics.jsonl`` (unparsable lines skipped).

    Raises:
        FileNotFoundError: the run has no metrics file.
    """
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_NAME} in {run_dir}")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
