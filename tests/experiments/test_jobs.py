"""Independent stages in worker processes: dependency order, results, errors, bad graphs."""

from __future__ import annotations

import math
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


def test_worker_processes_start_a_job_only_after_the_ones_it_needs():
    seen: list[str] = []
    jobs = {
        "slow": Job(time.sleep, (0.5,)),
        "after_slow": Job(math.sqrt, (4.0,), after=("slow",)),
        "free": Job(math.sqrt, (25.0,)),
    }
    results = run_jobs(jobs, 2, lambda name, _: seen.append(name))
    assert results == {"slow": None, "after_slow": 2.0, "free": 5.0}
    assert seen.index("after_slow") > seen.index("slow")
    assert seen[0] == "free"  # ran beside the slow job, not after it


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
