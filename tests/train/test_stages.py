"""The stage list of a multi-stage run: "stage k of n" in its progress lines."""

from __future__ import annotations

import pytest

from multitower.progress import run_log, stage_label
from multitower.train.stages import Stages, log


def test_a_stage_line_carries_its_own_place_in_the_plan(tmp_path) -> None:
    """Not the number of finished stages plus one: two stages running while the same
    one is unfinished, a stage run out of plan order and a finished stage redone on a
    resume each keep their own place."""
    with run_log(tmp_path / "run.log"):  # restores the stage counter on exit
        stages = Stages(tmp_path)
        stages.plan(["corpus", "pretrain_text", "pretrain_speech", "recognizer", "finetune"])
        assert stage_label() == ""  # nothing begun yet
        stages.begin("corpus")
        log("corpus: built")
        stages.mark("corpus")
        stages.begin("pretrain_text")
        log("pretrain text")
        stages.mark("pretrain_text")
        stages.begin("recognizer")  # while pretrain_speech, planned before it, is unfinished
        log("recognizer: CTC")
        stages.begin("pretrain_speech")
        log("pretrain speech")

        resumed = Stages(tmp_path)  # a rerun: the finished corpus is read again
        resumed.plan(["corpus", "pretrain_text", "pretrain_speech", "recognizer", "finetune"])
        resumed.begin("corpus")
        log("corpus: reused")
        resumed.begin(None)  # a line of no single stage
        log("done")
        with pytest.raises(ValueError, match="'units' is not one of the planned"):
            resumed.begin("units")
    assert stage_label() == ""
    lines = [line.split("] ", 1)[1] for line in (tmp_path / "run.log").read_text().splitlines()]
    assert lines == [
        "(stage 1 of 5) corpus: built",
        "(stage 2 of 5) pretrain text",
        "(stage 4 of 5) recognizer: CTC",
        "(stage 3 of 5) pretrain speech",
        "(stage 1 of 5) corpus: reused",
        "done",
    ]


def test_begin_outside_a_planned_run_labels_nothing(tmp_path) -> None:
    stages = Stages(tmp_path)
    stages.begin("anything")  # a stage method called on its own, as tests do
    assert stage_label() == ""
