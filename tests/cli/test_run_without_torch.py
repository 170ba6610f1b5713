"""``multitower run`` refuses a bad config without importing torch (which alone takes seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import multitower

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "zipper_speech_text_tiny.yaml"
SRC = Path(multitower.__file__).resolve().parents[1]  # the tree this test session imports

# Runs the command in a fresh interpreter, then reports whether torch got loaded.
SCRIPT = """
import sys
from multitower.cli.main import main
rc = main(sys.argv[1:])
print("torch loaded:", "torch" in sys.modules)
sys.exit(rc)
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_refused_config_exits_2_naming_the_key_without_importing_torch(tmp_path) -> None:
    run_dir = tmp_path / "run"
    # --threads is given too: setting the thread count (which needs torch) waits for the check.
    done = run_cli(
        "run", str(TINY), "fusion.cross_attention_every=-1", "--run-dir", str(run_dir),
        "--threads", "1",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "fusion.cross_attention_every=-1 must lie in [1, 2]" in done.stderr
    assert "torch loaded: False" in done.stdout, done.stdout
    assert not run_dir.exists()


def test_the_probe_sees_torch_once_the_config_is_accepted(tmp_path) -> None:
    """The check above can fail: past a valid config the command loads torch, and the probe
    says so (the run directory holds another config, so it stops there with exit 1)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(TINY.read_text())
    done = run_cli("run", str(TINY), "fusion.cross_attention_every=2", "--run-dir", str(run_dir))
    assert done.returncode == 1, done.stderr
    assert "holds a run with another config" in done.stderr
    assert "torch loaded: True" in done.stdout, done.stdout
