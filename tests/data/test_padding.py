"""pad_right: rows kept left-aligned and whole (or cut at max_len), pad everywhere else."""

from __future__ import annotations

import pytest
import torch

from multitower.data.padding import pad_right


def test_rows_are_left_aligned_and_the_rest_is_pad() -> None:
    rows = [[5, 6, 7], [8], [], [9, 10]]
    out = pad_right(rows, -1)
    assert out.dtype == torch.long
    assert out.tolist() == [[5, 6, 7], [8, -1, -1], [-1, -1, -1], [9, 10, -1]]


def test_width_is_cut_at_max_len_and_raised_to_min_len() -> None:
    rows = [[1, 2, 3, 4, 5], [6]]
    assert pad_right(rows, 0, max_len=3).tolist() == [[1, 2, 3], [6, 0, 0]]
    assert pad_right(rows, 0, max_len=9).shape == (2, 5)  # the limit is not a width
    assert pad_right(rows, 0, min_len=7).tolist() == [[1, 2, 3, 4, 5, 0, 0], [6, 0, 0, 0, 0, 0, 0]]
    assert pad_right([[], []], 3, min_len=1).tolist() == [[3], [3]]
    assert pad_right([], 0).shape == (0, 0)
    with pytest.raises(ValueError, match="min_len"):
        pad_right(rows, 0, max_len=2, min_len=3)


def test_tensor_rows_and_other_dtypes() -> None:
    rows = [torch.tensor([1, 2]), torch.tensor([3])]
    assert torch.equal(pad_right(rows, 0), torch.tensor([[1, 2], [3, 0]]))
    weights = pad_right([[0.5, 1.0], [0.25]], 0.0, dtype=torch.float32)
    assert weights.dtype == torch.float32
    assert weights.tolist() == [[0.5, 1.0], [0.25, 0.0]]
    mask = pad_right([[True, True], [True]], False, dtype=torch.bool)
    assert mask.tolist() == [[True, True], [True, False]]
