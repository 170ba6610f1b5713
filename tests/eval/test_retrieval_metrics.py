"""Recall@K for image-text retrieval: hand cases and a loop-based reference."""

from __future__ import annotations

import pytest
import torch

from multitower.eval.retrieval import retrieval_ranks, retrieval_recall


def _reference_ranks(sim: torch.Tensor, owner: torch.Tensor) -> tuple[list[int], list[int]]:
    """Sort every row / column and find the first correct item (scores have no ties)."""
    n_images, n_texts = sim.shape
    i2t = []
    for i in range(n_images):
        order = sorted(range(n_texts), key=lambda j: -float(sim[i, j]))
        i2t.append(next(pos for pos, j in enumerate(order) if int(owner[j]) == i) + 1)
    t2i = []
    for j in range(n_texts):
        order = sorted(range(n_images), key=lambda i: -float(sim[i, j]))
        t2i.append(order.index(int(owner[j])) + 1)
    return i2t, t2i


def test_hand_case_two_images_four_captions():
    owner = torch.tensor([0, 0, 1, 1])
    sim = torch.tensor(
        [
            [0.1, 0.9, 0.8, 0.2],  # image 0: its caption 1 is the best text -> i2t rank 1
            [0.7, 0.6, 0.3, 0.5],  # image 1: texts 0, 1 beat its best caption (3) -> rank 3
        ]
    )
    i2t, t2i = retrieval_ranks(sim, owner)
    assert i2t.tolist() == [1, 3]
    # text 0: 0.1 (own image 0) vs 0.7 -> rank 2; text 1: 0.9 vs 0.6 -> 1;
    # text 2: 0.3 (own image 1) vs 0.8 -> 2; text 3: 0.5 vs 0.2 -> 1
    assert t2i.tolist() == [2, 1, 2, 1]
    r = retrieval_recall(sim, owner, ks=(1, 2, 5))
    assert r == {
        "i2t_r1": 0.5, "i2t_r2": 0.5, "i2t_r5": 1.0,
        "t2i_r1": 0.5, "t2i_r2": 1.0, "t2i_r5": 1.0,
    }  # fmt: skip


def test_matches_loop_reference_on_random_scores():
    g = torch.Generator().manual_seed(0)
    n_images = 23
    owner = torch.cat([torch.arange(n_images), torch.randint(0, n_images, (60,), generator=g)])
    owner = owner[torch.randperm(len(owner), generator=g)]
    sim = torch.randn(n_images, len(owner), generator=g)
    sim[owner, torch.arange(len(owner))] += 1.5  # make retrieval better than chance
    ref_i2t, ref_t2i = _reference_ranks(sim, owner)
    i2t, t2i = retrieval_ranks(sim, owner, chunk_size=5)
    assert i2t.tolist() == ref_i2t and t2i.tolist() == ref_t2i
    recall = retrieval_recall(sim, owner)
    assert set(recall) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    for k in (1, 5, 10):
        assert recall[f"i2t_r{k}"] == pytest.approx(sum(r <= k for r in ref_i2t) / n_images)
        assert recall[f"t2i_r{k}"] == pytest.approx(sum(r <= k for r in ref_t2i) / len(owner))
    assert 0 < recall["t2i_r1"] < recall["t2i_r5"] <= recall["t2i_r10"] <= 1


def test_perfect_scores_and_ties_against_the_correct_item():
    owner = torch.tensor([0, 0, 1, 2, 2, 2])
    perfect = (owner.unsqueeze(0) == torch.arange(3).unsqueeze(1)).float()  # (3, 6)
    assert set(retrieval_recall(perfect, owner).values()) == {1.0}
    # constant scores: every wrong item ties with the correct one and ranks ahead of it
    i2t, t2i = retrieval_ranks(torch.zeros(3, 6), owner)
    assert i2t.tolist() == [5, 6, 4]  # 1 + number of other images' captions
    assert t2i.tolist() == [3] * 6
    assert retrieval_recall(torch.zeros(3, 6), owner)["i2t_r1"] == 0.0


def test_input_errors():
    owner = torch.tensor([0, 1, 1])
    sim = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="2-D"):
        retrieval_recall(torch.zeros(6), owner)
    with pytest.raises(ValueError, match="N_texts=3"):
        retrieval_recall(sim, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="N_images=2"):
        retrieval_recall(sim, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"images without one: \[1\]"):
        retrieval_recall(sim, torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="integer"):
        retrieval_recall(sim, owner.float())
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(torch.full((2, 3), float("nan")), owner)
    with pytest.raises(ValueError, match="ks"):
        retrieval_recall(sim, owner, ks=(0,))
