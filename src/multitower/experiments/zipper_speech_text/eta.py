"""How long the fine-tunes of the speech-text experiment still need, from what they did.

The fine-tunes run one after another or in worker processes (``--jobs``). Two
estimates are printed: after each fine-tune finishes, from the finished ones'
seconds per step (training and evaluation); and, while they run in parallel, every
few minutes from the steps the running ones have logged (training only, so the
first such estimate is a little short).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from multitower.train.logger import METRICS_NAME

Job = tuple[str, float]  # (system, aligned fraction)


def trained_steps(train_dir: Path) -> int:
    """The last step logged in ``train_dir/metrics.jsonl`` (0 if none yet)."""
    path = Path(train_dir) / METRICS_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            return row["step"]
    return 0


class FinetuneETA:
    """The time left for the fine-tunes still to run.

    Args:
        steps: each fine-tune's training steps.
        jobs: processes running them at once.
        start_steps: steps each had already trained when this run began (a resumed
            fine-tune's earlier steps are not counted as done in this run's time).
    """

    def __init__(
        self, steps: dict[Job, int], jobs: int, start_steps: dict[Job, int] | None = None
    ) -> None:
        self.left, self.jobs = dict(steps), max(1, jobs)
        self.total, self.done_steps, self.seconds = len(steps), 0, 0.0
        self.steps_total = sum(steps.values())
        self.start = {job: min(n, (start_steps or {}).get(job, 0)) for job, n in steps.items()}
        self.gained = 0  # steps trained in this run by the finished fine-tunes
        self.t0 = time.time()

    def finished(self, job: Job, seconds: float) -> str:
        """Records ``job`` as done in ``seconds``; returns the progress line: the finished
        fine-tunes' seconds per step, times the steps left, divided by the processes."""
        steps = self.left.pop(job)
        self.done_steps += steps
        self.gained += steps - self.start[job]
        self.seconds += seconds
        done = self.total - len(self.left)
        line = f"fine-tunes: {done} of {self.total} done ({(time.time() - self.t0) / 60:.1f} min)"
        if self.left and self.done_steps:
            per_step = self.seconds / self.done_steps
            left = sum(self.left.values()) * per_step / min(self.jobs, len(self.left))
            line += f", about {left / 60:.0f} min left"
        return line

    def progress(self, current: dict[Job, int]) -> str:
        """The line while fine-tunes run: ``current`` is each unfinished one's last logged
        step. The steps trained so far in this run, per second of wall time, give the rate
        at which the steps left will go."""
        now = {
            job: min(n, max(self.start[job], current.get(job, 0))) for job, n in self.left.items()
        }
        gained = self.gained + sum(now[job] - self.start[job] for job in self.left)
        done_steps = self.done_steps + sum(now.values())
        elapsed = time.time() - self.t0
        line = (
            f"fine-tunes: {self.total - len(self.left)} of {self.total} done, "
            f"{done_steps:,} of {self.steps_total:,} steps ({elapsed / 60:.1f} min)"
        )
        if gained > 0 and elapsed > 0:
            left = sum(n - now[job] for job, n in self.left.items()) * elapsed / gained
            line += f", about {left / 60:.0f} min left"
        return line
