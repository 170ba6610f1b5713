"""Arguments shared by several commands: ``--threads`` and the default thread count."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from multitower.errors import UserError

THREADS_RULE = (
    "$OMP_NUM_THREADS when set, else the cores not already busy (cores minus the "
    "1-minute load average, at least 1)"
)
JOBS_RULE = "the cores not already busy (cores minus those busy over a quarter second, at least 1)"


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The positional YAML config, its ``key=value`` overrides and ``--run-dir``."""
    parser.add_argument("config", type=Path, help=config_help)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. train.max_steps=50",
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, help=f"torch CPU threads (default: {THREADS_RULE})"
    )


def add_jobs_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--jobs N``: how many of the command's independent stages (``what``) run at once."""
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"{what} run at once, each in its own process with threads/jobs torch "
        f"threads (default: {JOBS_RULE})",
    )


def resolve_jobs(jobs: int | None) -> int:
    """``--jobs`` as given, else :func:`free_cores`.

    Raises:
        UserError: a count below 1.
    """
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    return jobs or free_cores()


def default_threads(cores: int, load: float | None, omp_num_threads: str | None) -> int | None:
    """The thread count when ``--threads`` is not given; None leaves torch's own choice.

    With ``OMP_NUM_THREADS`` set torch already follows it (None). Otherwise the cores
    that other work does not occupy: on a loaded machine more threads than free
    cores only add OpenMP barriers (two threads on a busy 2-core machine ran 10-20x
    slower than one).

    Args:
        cores: CPU cores of the machine.
        load: the cores busy with other work (the 1-minute load average for the
            thread count, :func:`busy_cores` for ``--jobs``; None where unknown:
            all cores).
        omp_num_threads: the environment's ``OMP_NUM_THREADS``.
    """
    if omp_num_threads:
        return None
    busy = 0 if load is None else round(load)
    return max(1, min(cores, cores - busy))


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _read_proc_stat() -> tuple[int, int]:
    """(all, idle) CPU time of the machine so far, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
    return sum(fields), fields[3] + fields[4]  # idle + iowait


def busy_cores(
    interval: float = 0.25,
    read: Callable[[], tuple[int, int]] = _read_proc_stat,
    cores: int | None = None,
) -> float | None:
    """How many cores other work keeps busy now: the non-idle share of the machine's CPU
    time over ``interval`` seconds (``/proc/stat``), times the cores.

    The 1-minute load average lags: just after a job ends it still reads about one
    busy core for a minute or more, so a run started then would get half the
    processes it should. Without ``/proc/stat`` the load average is the answer.
    """
    cores = cores or os.cpu_count() or 1
    try:
        total0, idle0 = read()
        time.sleep(interval)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return _load_average()
    if total1 <= total0:
        return _load_average()
    return max(0.0, 1.0 - (idle1 - idle0) / (total1 - total0)) * cores


def free_cores() -> int:
    """The cores other work does not occupy (cores minus :func:`busy_cores`, at least 1)."""
    threads = default_threads(os.cpu_count() or 1, busy_cores(), None)
    assert threads is not None
    return threads


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads``: ``threads`` when given, else :func:`default_threads`.

    Raises:
        UserError: a count below 1.
    """
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if threads is None:
        omp = os.environ.get("OMP_NUM_THREADS")
        threads = default_threads(os.cpu_count() or 1, None if omp else _load_average(), omp)
        if threads is None:
            return
    import torch  # here, not at the top: a command refusing its config should not load torch

    torch.set_num_threads(threads)
