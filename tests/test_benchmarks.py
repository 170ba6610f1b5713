"""The GPU benchmark runs at its toy size here, so it cannot rot while no GPU is lent."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import multitower

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(multitower.__file__).resolve().parents[1]  # the tree this test session imports


def test_gpu_benchmark_toy_run_prints_its_figures():
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--toy"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    fields = dict(kv.split("=", 1) for kv in lines[-1].split())
    assert set(fields) == {"mfu", "decode_tok_s_b1", "decode_tok_s_b64", "device"}
    assert fields["device"] == "cpu-toy"
    for key in ("mfu", "decode_tok_s_b1", "decode_tok_s_b64"):
        assert math.isfinite(float(fields[key])) and float(fields[key]) > 0, lines[-1]
    assert "NOT a GPU figure" in run.stdout  # a toy CPU figure is never taken for a GPU's


def test_speech_pipeline_unit_design_is_the_recipes():
    """The benchmark's unit-quality line measures the default recipe's units."""
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location(
        "speech_pipeline", ROOT / "benchmarks" / "speech_pipeline.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = yaml.safe_load((ROOT / "configs" / "zipper_speech_text.yaml").read_text())
    assert recipe["units"] == module.UNIT_DESIGN
