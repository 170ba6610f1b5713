"""A real run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multitower.models.io import load_safetensors

MAX_STEPS = 400
CONFIG = f"""
recipe: toy_lm
train:
  max_steps: {MAX_STEPS}
  batch_size: 8
  lr: 3.0e-3
  warmup_steps: 10
  ckpt_every: 10
  keep_last: 0
  log_every: 10
  progress: "off"
  device: cpu
  seed: 3
model: {{vocab_size: 19, d_model: 16, num_layers: 1, num_heads: 2, max_seq_len: 16}}
data: {{num_sequences: 64, seq_len: 9, eval_sequences: 0}}
"""


def _train(config: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "multitower",
        "train",
        str(config),
        "--run-dir",
        str(run_dir),
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out


def _steps(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in root.iterdir() if p.name.startswith("step_"))


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume_is_bit_identical(tmp_path) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text(CONFIG)
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    reference = _train(config, straight)
    victim = _train(config, killed)
    deadline = time.monotonic() + 120
    while len(_steps(killed)) < 2:
        assert victim.poll() is None, f"run ended early: {victim.communicate()}"
        assert time.monotonic() < deadline, "no second checkpoint within 120 s"
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert MAX_STEPS not in _steps(killed), "the run finished before it could be killed"
    rows_at_kill = _rows(killed)

    out = _finish(_train(config, killed, "--resume"))
    resumed_from = int(out.split("at step ")[1].split()[0])
    assert resumed_from >= 20 and resumed_from in _steps(killed)
    _finish(reference)

    final = f"checkpoints/step_{MAX_STEPS:06d}/model.safetensors"
    a, _ = load_safetensors(straight / final)
    b, _ = load_safetensors(killed / final)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The metrics log reads as one run: rows after the checkpoint were dropped and rewritten.
    assert len(rows_at_kill) >= 2
    assert [(r["step"], r["loss"]) for r in _rows(killed)] == [
        (r["step"], r["loss"]) for r in _rows(straight)
    ]
