"""Atomic writes: the files they leave have the mode a plain ``open()`` would give."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from multitower.data.speech.audio import write_audio
from multitower.data.speech.librispeech import LibriSpeechWriter
from multitower.io import write_json_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_0644_under_umask_022(tmp_path, umask_022) -> None:
    write_text_atomic(tmp_path / "results.md", "| a |\n")
    write_json_atomic(tmp_path / "results.json", {"a": 1})
    write_audio(tmp_path / "out.wav", np.zeros(160, dtype=np.float32), 16000)
    with LibriSpeechWriter(tmp_path / "split", sample_rate=16000) as writer:
        writer.add(100, 1, 0, "a b", np.zeros(1600, dtype=np.float32))
    written = [tmp_path / "results.md", tmp_path / "results.json", tmp_path / "out.wav"]
    written += [p for p in (tmp_path / "split").rglob("*") if p.is_file()]
    assert len(written) >= 5
    assert {p.name: _mode(p) for p in written} == {p.name: 0o644 for p in written}
    (tmp_path / "results.md").chmod(0o600)  # rewriting gives the new file the same rule
    write_text_atomic(tmp_path / "results.md", "| b |\n")
    assert _mode(tmp_path / "results.md") == 0o644


def test_a_stricter_umask_is_honoured(tmp_path) -> None:
    old = os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "secret.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "secret.txt") == 0o600
