"""What a newcomer sees first: ``--help``, ``--version``, option help, threads, wrong run kinds."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
import tomllib

from multitower.cli.common import default_threads
from multitower.cli.main import COMMANDS, SUMMARIES

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_help_describes_every_command_and_version_is_the_packages(multitower_cli) -> None:
    assert sorted(SUMMARIES) == sorted(COMMANDS)
    done = multitower_cli("--help")
    assert done.returncode == 0, done.stderr
    for name, summary in SUMMARIES.items():
        assert any(
            line.split() and line.split()[0] == name and summary in line
            for line in done.stdout.splitlines()
        ), name
    done = multitower_cli("--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.returncode == 0 and done.stdout.strip() == f"multitower {version}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_every_computing_command_takes_threads(name) -> None:
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[name]).add_arguments(parser)
    assert [a.dest for a in parser._actions if not a.help and a.dest != "help"] == []
    if name != "plot":  # plot draws PNGs, nothing for torch threads
        assert "threads" in {a.dest for a in parser._actions}


def test_option_help_shows_the_defaults(multitower_cli) -> None:
    done = multitower_cli("tts", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "sampling temperature (0: greedy) (default: 0.0)" in text
    assert "a finished speech-text run (default: runs/zipper_speech_text)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    done = multitower_cli("asr", "--help")
    assert "(default: 0.25)" in " ".join(done.stdout.split())


def test_default_thread_count() -> None:
    assert default_threads(2, 4.6, None) == 1  # five jobs on two cores: one thread
    assert default_threads(16, 0.2, None) == 16
    assert default_threads(16, 3.6, None) == 12
    assert default_threads(4, None, None) == 4  # no load average on this platform
    assert default_threads(16, 9.0, "3") is None  # OMP_NUM_THREADS: torch follows it


def test_busy_cores_reads_the_cpu_time_of_the_moment_not_the_load_average() -> None:
    from multitower.cli.common import busy_cores

    def reader(*samples):
        it = iter(samples)
        return lambda: next(it)

    # (all, idle) CPU ticks: over the interval 100 ticks passed, 50 of them idle
    assert busy_cores(0, reader((1000, 400), (1100, 450)), cores=2) == 1.0
    assert busy_cores(0, reader((1000, 400), (1100, 500)), cores=2) == 0.0  # idle now
    assert busy_cores(0, reader((1000, 400), (1100, 400)), cores=4) == 4.0

    def broken():
        raise OSError("no /proc/stat")

    # without /proc/stat: the load average (or None where there is none)
    got = busy_cores(0, broken, cores=2)
    assert got is None or got >= 0
    real = busy_cores(0.05)  # this machine, now
    assert real is None or 0 <= real <= (__import__("os").cpu_count() or 1)


def test_caption_on_a_speech_text_run_says_what_it_is(tmp_path, multitower_cli) -> None:
    (tmp_path / "config.yaml").write_text("experiment: zipper_speech_text\nseed: 0\n")
    done = multitower_cli("caption", "x.png", "--run-dir", str(tmp_path))
    assert done.returncode == 1
    assert "is a 'zipper_speech_text' experiment run (multitower run), not a MaMMUT run" in (
        done.stderr
    )


def test_tts_output_that_is_a_directory_is_refused_before_loading(tmp_path, multitower_cli) -> None:
    done = multitower_cli("tts", "hello", "-o", str(tmp_path), "--run-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"-o {tmp_path} is a directory; give the path of a .wav file" in done.stderr
