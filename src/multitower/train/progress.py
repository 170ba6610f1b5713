"""Training progress: step, loss, tokens/s and ETA (see :mod:`multitower.progress`).

Modes: ``"on"`` always draws a ``tqdm`` bar on stderr; ``"auto"`` draws it when
stderr is a terminal and otherwise prints a plain line every
:data:`~multitower.progress.LOG_INTERVAL_S` seconds (so a log file shows progress);
``"off"`` prints nothing on stderr. While a run log is active
(:func:`multitower.progress.run_log`) the plain lines go there in every mode.
``metrics.jsonl`` has every logged value.
"""

from __future__ import annotations

from typing import TextIO

from multitower.progress import LOG_INTERVAL_S, PROGRESS_MODES, Progress, format_duration

__all__ = ["PROGRESS_MODES", "ProgressBar", "format_duration"]


class ProgressBar:
    """Progress of steps ``initial..total``.

    Args:
        total: last step.
        initial: first step (a resumed run starts past 0).
        mode: ``"auto"``, ``"on"`` or ``"off"``.
        enabled: False on ranks other than 0.
        stream: where to write (stderr by default).
        desc: what is trained, shown before the count.
        interval: seconds between two plain lines.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        mode: str = "auto",
        enabled: bool = True,
        stream: TextIO | None = None,
        desc: str = "train",
        interval: float = LOG_INTERVAL_S,
    ) -> None:
        self.progress = Progress(
            total,
            desc,
            initial=initial,
            unit="steps",
            mode=mode,
            enabled=enabled,
            stream=stream,
            interval=interval,
        )

    def update(self, step: int) -> None:
        """Record that ``step`` steps are done."""
        self.progress.update(step)

    def set_metrics(self, loss: float, tokens_per_s: float) -> None:
        """New values to show (called on log steps)."""
        self.progress.set_postfix(loss=f"loss {loss:.4f}", tokens=f"{tokens_per_s:,.0f} tok/s")

    def close(self) -> None:
        self.progress.close()
