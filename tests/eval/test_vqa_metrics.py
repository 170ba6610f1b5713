"""VQA answer normalisation and accuracy."""

from __future__ import annotations

import pytest

from multitower.eval.vqa import answer_accuracy, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two.", "2"),
        ("two", "2"),
        ("2", "2"),
        ("  A Red   Circle! ", "red circle"),
        ("the top left", "top left"),
        ("don't know", "dont know"),
        ("2.5", "2.5"),
        ("1,000", "1000"),
        ("yes, it is", "yes it is"),
        ("t-shirt", "t shirt"),
        ("none", "0"),
        ("twenty one", "20 1"),
        ("an apple", "apple"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_single_reference_is_exact_match_after_normalisation():
    assert answer_accuracy("Two", "2") == 1.0
    assert answer_accuracy("the red one", ["red 1"]) == 1.0
    assert answer_accuracy("three", "two") == 0.0
    assert answer_accuracy("red circle", "red") == 0.0  # no partial credit


def test_vqav2_accuracy_with_ten_annotators():
    refs = ["yes"] * 3 + ["no"] * 7
    # Plain formula: min(3 / 3, 1) = 1.
    assert answer_accuracy("yes", refs, leave_one_out=False) == 1.0
    # Official: leave each of the 10 answers out. Leaving out a "yes" (3 times) leaves
    # 2 matches -> 2/3; leaving out a "no" (7 times) leaves 3 -> 1. (3 * 2/3 + 7) / 10 = 0.9.
    assert answer_accuracy("yes", refs) == pytest.approx(0.9)
    two = ["2", "two"] + ["3"] * 8
    # 2 matches: leave out a match (2x) -> 1/3; leave out another (8x) -> 2/3 -> 0.6.
    assert answer_accuracy("2", two) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert answer_accuracy("2", two, leave_one_out=False) == pytest.approx(2 / 3)
    assert answer_accuracy("3", two) == 1.0
    assert answer_accuracy("4", two) == 0.0


def test_mean_accuracy_and_errors():
    preds = ["two", "red", "yes"]
    refs = ["2", ["blue", "blue", "red"], "no"]
    # 1 + (leave-one-out with 1 match of 3: (0 + 1/3 + 1/3) / 3 = 2/9) + 0
    assert vqa_accuracy(preds, refs) == pytest.approx((1 + 2 / 9 + 0) / 3)
    with pytest.raises(ValueError, match="3 predictions but 2"):
        vqa_accuracy(preds, refs[:2])
    with pytest.raises(ValueError, match="no questions"):
        vqa_accuracy([], [])
    with pytest.raises(ValueError, match="references is empty"):
        answer_accuracy("a", [])
    with pytest.raises(TypeError):
        vqa_accuracy("yes", ["yes"])
