"""Progress of long loops, on a terminal and in log files, and the run's ``run.log``.

:class:`Progress` shows one loop (training steps, corpus utterances):

* on a terminal, a ``tqdm`` bar on stderr (count, rate, ETA and the values given
  to :meth:`Progress.set_postfix`);
* when stderr is not a terminal (``> log 2>&1``, a batch job), a plain line every
  ``interval`` seconds (30, or ``$MULTITOWER_LOG_INTERVAL``) and at the end, e.g.::

    [12:01:07] finetune zipper_1 (stage 9 of 14): 120/400 (30%) | loss 2.3456 | 4.1 steps/s | ETA 1:08

* and, while :func:`run_log` is active, the same plain lines in the run's log
  file whatever the mode (``--quiet`` silences stderr, not the log).

Modes (``train.progress``): ``"auto"`` the bar on a terminal, plain lines
otherwise; ``"on"`` the bar even when stderr is not a terminal; ``"off"`` nothing on
stderr. The place of the current stage in the whole run ("stage k of n") comes
from :func:`set_stage_counter`, which an experiment's stage list installs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

PROGRESS_MODES = ("auto", "on", "off")
LOG_INTERVAL_ENV = "MULTITOWER_LOG_INTERVAL"


def log_interval() -> float:
    """Seconds between two plain progress lines: ``$MULTITOWER_LOG_INTERVAL``, else 30."""
    raw = os.environ.get(LOG_INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else 30.0
    except ValueError:
        return 30.0


LOG_INTERVAL_S = log_interval()  # between two plain progress lines

_run_log: _LazyLog | None = None
_stage_counter: Callable[[], tuple[int, int] | None] | None = None


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _LazyLog:
    """A log file opened (and its folder created) on the first line written, so a
    command that refuses its config before any work leaves no run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def write(self, line: str) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
        self._file.write(line)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@contextmanager
def run_log(path: str | Path) -> Iterator[Path]:
    """Append every progress line and :func:`log_line` to ``path`` while active.

    The file is created on the first line. The stage counter installed meanwhile
    (:func:`set_stage_counter`) is removed on exit, so it does not outlive the run.
    """
    global _run_log, _stage_counter
    path = Path(path)
    previous, counter = _run_log, _stage_counter
    _run_log = _LazyLog(path)
    try:
        yield path
    finally:
        _run_log.close()
        _run_log, _stage_counter = previous, counter


def set_stage_counter(counter: Callable[[], tuple[int, int] | None] | None) -> None:
    """Install the function giving ``(k, n)``, the current stage and the stage count."""
    global _stage_counter
    _stage_counter = counter


def stage_label() -> str:
    """``"stage k of n"``, or ``""`` outside a multi-stage run."""
    place = _stage_counter() if _stage_counter is not None else None
    return f"stage {place[0]} of {place[1]}" if place else ""


def log_line(message: str, *, stderr: bool = True, stream: TextIO | None = None) -> None:
    """A timestamped line on ``stream`` (stderr by default; nowhere with ``stderr=False``)
    and in the active run log."""
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    if stderr:
        print(line, file=stream if stream is not None else sys.stderr, flush=True)
    if _run_log is not None:
        _run_log.write(line + "\n")


class Progress:
    """Progress of ``initial..total`` items of one loop.

    Args:
        total: the last count.
        desc: what is counted, e.g. ``"speech corpus"``.
        initial: the first count (a resumed loop starts past 0).
        unit: the item's name in rates (``"steps"`` -> ``4.1 steps/s``).
        mode: ``"auto"``, ``"on"`` or ``"off"`` (see the module docstring).
        enabled: False on ranks other than 0: nothing anywhere.
        stream: where to write (stderr by default).
        interval: seconds between two plain lines.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        initial: int = 0,
        unit: str = "it",
        mode: str = "auto",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = LOG_INTERVAL_S,
    ) -> None:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {PROGRESS_MODES}, got {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.initial, self.count = total, initial, initial
        self.desc, self.unit, self.interval = desc, unit, interval
        self.enabled = enabled
        use_bar = enabled and (mode == "on" or (mode == "auto" and is_tty))
        self.plain_stderr = enabled and mode == "auto" and not is_tty
        self.start = self._last_line = time.perf_counter()
        self._postfix: dict[str, str] = {}
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm  # here: config modules import this one without tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=self._desc(),
                unit=unit,
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.2,
                leave=True,
            )

    def _desc(self) -> str:
        stage = stage_label()
        return f"{self.desc} ({stage})" if stage else self.desc

    def set_postfix(self, **values: str) -> None:
        """Values shown after the count, e.g. ``loss="2.3456"``, replacing earlier ones."""
        self._postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix_str(" | ".join(self._postfix.values()), refresh=False)

    def update(self, count: int) -> None:
        """Record that ``count`` items are done; draws or prints when due."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(count - self.count)
        self.count = count
        now = time.perf_counter()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._emit(now)

    def skip(self, n: int) -> None:
        """Count ``n`` items found already done (the finished shards of a resumed build):
        they are in the count shown, but not in the rate and the ETA, which measure this
        run's work only. Items skipped before any work also restart the clock."""
        if not self.enabled:
            return
        fresh = self.count == self.initial  # nothing done in this run yet
        if fresh:
            self.start = time.perf_counter()
        self.initial += n
        self.count += n
        bar = self._bar
        if bar is not None:  # tqdm's rate from its last drawn count, not from the skip
            if fresh:
                bar.reset()  # its clock and smoothed rate too
                bar.n = bar.last_print_n = self.count
            else:
                bar.n += n
                bar.last_print_n += n
            bar.initial = self.initial
            bar.refresh()

    def line(self, now: float | None = None) -> str:
        """The plain progress line (without timestamp)."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self.start
        done = self.count - self.initial
        parts = [f"{self._desc()}: {self.count}/{self.total}"]
        if self.total:
            parts[0] += f" ({100 * self.count / self.total:.0f}%)"
        parts += self._postfix.values()
        if done > 0 and elapsed > 0:
            parts.append(f"{done / elapsed:.2f} {self.unit}/s")
            parts.append(f"ETA {format_duration(elapsed / done * (self.total - self.count))}")
        else:
            parts.append("ETA ?")
        return " | ".join(parts)

    def _emit(self, now: float) -> None:
        log_line(self.line(now), stderr=self.plain_stderr, stream=self.stream)

    def close(self) -> None:
        """Final line (plain) or bar refresh; safe to call once at the end."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        self._emit(time.perf_counter())
