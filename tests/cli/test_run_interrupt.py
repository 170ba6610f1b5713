"""Ctrl-C during corpus synthesis keeps the finished shards and says how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import multitower

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "zipper_speech_text_tiny.yaml"
SRC = Path(multitower.__file__).resolve().parents[1]  # the tree this test session imports


def test_ctrl_c_in_corpus_synthesis_keeps_finished_shards_and_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    # 450 unaligned utterances: two full shards of 200 before the aligned split
    proc = subprocess.Popen(
        [sys.executable, "-m", "multitower", "run", str(TINY), "corpus.n_unaligned=450",
         "--run-dir", str(run_dir), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # a suite started in the background of a non-interactive shell inherits an
        # ignored SIGINT, and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(run_dir.glob(".corpus.building-*/.shards/unaligned-00000.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "speech corpus: stopped; the finished shards are kept in" in err
    assert "interrupted; run the same command again to resume" in err
    (partial,) = run_dir.glob(".corpus.building-*")
    assert (partial / ".shards" / "unaligned-00000.json").is_file()
    assert len(list((partial / "unaligned").rglob("*.flac"))) >= 200
    assert not (run_dir / "corpus").exists()  # nothing that looks finished
