"""Independent stages in worker processes: dependency order, results, errors, bad graphs."""

from __future__ import annotations

import math
import subprocess
import time

import pytest

from multitower.experiments.jobs import Job, run_jobs


def test_jobs_run_in_place_in_dependency_order_with_their_results():
    seen: list[str] = []
    jobs = {
        "b": Job(math.sqrt, (16.0,), after=("a",)),
        "a": Job(math.factorial, (4,)),
        "c": Job(math.sqrt, (9.0,), after=("b", "a")),
    }
    results = run_jobs(jobs, 1, lambda name, _: seen.append(name))
    assert results == {"a": 24, "b": 4.0, "c": 3.0}
    assert seen == ["a", "b", "c"]


def test_worker_processes_start_a_job_only_after_the_ones_it_needs(tmp_path):
    seen: list[str] = []
    marker = tmp_path / "free_ran"
    # "waits" ends as soon as "free" has written its marker (exit 0), or after 60 s
    # (exit 1): it ends well only if the two ran at the same time, however long the
    # second worker process took to start
    wait = f"for i in $(seq 1200); do [ -e '{marker}' ] && exit 0; sleep 0.05; done; exit 1"
    jobs = {
        "waits": Job(subprocess.run, (["bash", "-c", wait],)),
        "after_waits": Job(math.sqrt, (4.0,), after=("waits",)),
        "free": Job(marker.touch, ()),
    }
    results = run_jobs(jobs, 2, lambda name, _: seen.append(name))
    assert results["waits"].returncode == 0, "the free job did not run beside the waiting one"
    assert results["after_waits"] == 2.0 and results["free"] is None
    assert seen == ["free", "waits", "after_waits"]


def test_a_failing_job_raises_its_error_here():
    jobs = {"ok": Job(math.sqrt, (1.0,)), "bad": Job(math.sqrt, (-1.0,))}
    with pytest.raises(ValueError, match="math domain error"):
        run_jobs(jobs, 2)
    with pytest.raises(ValueError, match="math domain error"):
        run_jobs(jobs, 1)


def test_bad_graphs_and_worker_counts_are_refused_before_any_job_runs():
    with pytest.raises(ValueError, match="unknown job"):
        run_jobs({"a": Job(math.sqrt, (1.0,), after=("missing",))}, 1)
    cycle = {"a": Job(math.sqrt, (1.0,), after=("b",)), "b": Job(math.sqrt, (1.0,), after=("a",))}
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        run_jobs(cycle, 2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_jobs({"a": Job(math.sqrt, (1.0,))}, 0)


def test_on_idle_is_called_while_no_job_finishes():
    calls: list[int] = []
    jobs = {"slow": Job(time.sleep, (1.0,)), "quick": Job(math.sqrt, (1.0,))}
    run_jobs(jobs, 2, on_idle=lambda: calls.append(1), idle_s=0.2)
    assert len(calls) >= 2  # about 1 s of waiting in steps of 0.2 s


PARENT = """
import os, signal, sys, time
sys.path.insert(0, {helpers!r})
from multitower.experiments.jobs import worker_pool
import helper_job

if __name__ == "__main__":
    pool = worker_pool(1)
    pool.submit(helper_job.record_pid_then_sleep, {pid_file!r})
    deadline = time.time() + 60
    while not os.path.exists({pid_file!r}) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: as `kill -9`
"""

HELPER = """
import os, time

def record_pid_then_sleep(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return "zombie" not in state and " Z" not in state


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    import subprocess
    import sys

    (tmp_path / "helper_job.py").write_text(HELPER)
    pid_file = str(tmp_path / "worker.pid")
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(helpers=str(tmp_path), pid_file=pid_file))
    done = subprocess.run([sys.executable, str(script)], timeout=120)
    assert done.returncode == -9
    worker = int((tmp_path / "worker.pid").read_text())
    deadline = time.time() + 20
    while _running(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _running(worker), f"worker {worker} outlived its killed parent"
