"""A small progress bar for training: step, loss, tokens/s and ETA on one line.

Modes: ``"on"`` always draws the bar on stderr; ``"auto"`` draws it only when
stderr is a terminal (quiet in log files; ``metrics.jsonl`` has every value);
``"off"`` draws nothing. Redraws are throttled, so calling :meth:`ProgressBar.update` every step
costs about one clock read.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

PROGRESS_MODES = ("auto", "on", "off")


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Progress of steps ``initial..total``.

    Args:
        total: last step.
        initial: first step (a resumed run starts past 0).
        mode: ``"auto"``, ``"on"`` or ``"off"``.
        enabled: False on ranks other than 0.
        stream: where to write (stderr by default).
        min_interval: seconds between two redraws.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        mode: str = "auto",
        enabled: bool = True,
        stream: TextIO | None = None,
        min_interval: float = 0.2,
    ) -> None:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {PROGRESS_MODES}, got {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.draw_bar = enabled and (mode == "on" or (mode == "auto" and is_tty))
        self.total = total
        self.initial = initial
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._postfix = ""
        self._step = initial

    def update(self, step: int) -> None:
        """Record that ``step`` steps are done; redraws at most every ``min_interval`` s."""
        self._step = step
        if not self.draw_bar:
            return
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval or step >= self.total:
            self._last_draw = now
            self._draw(now)

    def set_metrics(self, loss: float, tokens_per_s: float) -> None:
        """New values to show (called on log steps)."""
        self._postfix = f"loss {loss:.4f} | {tokens_per_s:,.0f} tok/s"

    def _eta(self) -> str:
        done = self._step - self.initial
        elapsed = time.perf_counter() - self.start
        if done <= 0:
            return "ETA ?"
        return f"ETA {format_duration(elapsed / done * (self.total - self._step))}"

    def _draw(self, now: float) -> None:
        frac = self._step / self.total if self.total else 1.0
        width = 24
        filled = int(width * frac)
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r[{bar}] {self._step}/{self.total} {self._postfix} | {self._eta()}"
        self.stream.write(line.ljust(100))
        self.stream.flush()

    def close(self) -> None:
        if self.draw_bar:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
