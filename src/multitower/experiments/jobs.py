"""Independent stages of an experiment run side by side, each in its own process.

On a CPU, torch runs small models fastest on one thread per process (more threads
in one process add OpenMP barriers), so an experiment whose stages do not depend on
each other (pre-trainings of different models, the detectors trained on them) uses
the cores best as that many single-thread processes. :func:`run_jobs` takes the
stages as a dependency graph and runs each as soon as the stages it needs are done.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multitower.progress import run_log


@dataclass(frozen=True)
class Job:
    """One stage: ``fn(*args)``, run after the jobs named in ``after``.

    ``fn`` and ``args`` must be picklable (a module-level function) when the job
    runs in a worker process.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = field(default=())


def _ordered(jobs: Mapping[str, Job]) -> list[str]:
    """The job names in an order that puts every job after the ones it needs.

    Raises:
        ValueError: a job needs one that does not exist, or the needs form a cycle.
    """
    for name, job in jobs.items():
        missing = [dep for dep in job.after if dep not in jobs]
        if missing:
            raise ValueError(f"job {name!r} runs after unknown job(s) {missing}")
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: placed

    def visit(name: str, path: Sequence[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"jobs form a cycle: {' -> '.join([*path, name])}")
        state[name] = 1
        for dep in jobs[name].after:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in jobs:
        visit(name, [])
    return order


def exit_with_parent() -> None:
    """Worker-process initializer: the worker ends as soon as its parent process ends.

    A parent stopped by SIGTERM or SIGKILL does not take its pool's workers with it:
    an orphaned worker would go on with its stage (minutes of training) and could
    write into the run directory beside a resumed run's own worker. Here a daemon
    thread waits on the parent's sentinel and ends the process when it fires.
    Checkpoints and stage outputs are written atomically, so an abrupt end loses
    only the work since the last one, as a SIGKILL would.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing child
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that end with this one (:func:`exit_with_parent`)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
    )


def run_jobs(
    jobs: Mapping[str, Job],
    workers: int,
    on_done: Callable[[str, Any], None] | None = None,
    *,
    on_idle: Callable[[], None] | None = None,
    idle_s: float = 300.0,
) -> dict[str, Any]:
    """Runs every job once its ``after`` jobs are done; returns ``{name: result}``.

    With ``workers == 1`` the jobs run here, one after another, in the order given
    (dependencies first). Otherwise up to ``workers`` spawned processes run them; a
    job is submitted as soon as everything it needs has finished, ready jobs in the
    order given. ``on_done(name, result)`` is called here as each job finishes, so the
    caller can record it before the others end (an interruption then loses only the
    jobs still running). ``on_idle()`` is called here whenever ``idle_s`` seconds pass
    with no job finishing (workers only: e.g. a progress estimate). A job's exception
    is raised here once the running jobs end.

    Raises:
        ValueError: ``workers < 1``, an unknown dependency or a cycle.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    order = _ordered(jobs)
    results: dict[str, Any] = {}

    def finish(name: str, result: Any) -> None:
        results[name] = result
        if on_done is not None:
            on_done(name, result)

    if workers == 1 or len(jobs) <= 1:
        for name in order:
            finish(name, jobs[name].fn(*jobs[name].args))
        return results
    waiting = list(order)
    with worker_pool(min(workers, len(jobs))) as pool:
        running: dict[Future[Any], str] = {}
        try:
            while waiting or running:
                for name in [n for n in waiting if all(d in results for d in jobs[n].after)]:
                    waiting.remove(name)
                    running[pool.submit(jobs[name].fn, *jobs[name].args)] = name
                timeout = idle_s if on_idle is not None else None
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(running.pop(future), future.result())
                if not done and on_idle is not None:
                    on_idle()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # jobs not started yet never start
            raise
    return results


@contextmanager
def worker_context(log_path: str | Path, threads: int) -> Iterator[None]:
    """A job's surroundings in a worker process: ``threads`` torch threads and the run's
    log at ``log_path``. In the parent process (``workers == 1``) both are already set,
    and nothing changes."""
    if multiprocessing.parent_process() is None:
        yield
        return
    torch.set_num_threads(threads)
    with run_log(log_path):
        yield
