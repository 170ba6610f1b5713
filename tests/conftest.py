"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import multitower

SRC = Path(multitower.__file__).resolve().parents[1]  # the tree this test session imports


def run_multitower(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m multitower ARGS`` in a fresh interpreter on this tree, one thread."""
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "multitower", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="session")
def multitower_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real command line in a subprocess: ``multitower_cli("asr", "x.wav", ...)``."""
    return run_multitower


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Every test runs with one torch thread.

    The tensors are tiny: a second thread only adds OpenMP barriers, which on a
    busy 2-core machine made runs several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
