"""The detection set loss: focal loss, Hungarian matching against brute force, loss invariants."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from multitower.losses import hungarian_match, set_detection_loss, sigmoid_focal_loss
from multitower.nn.boxes import box_cxcywh_to_xyxy, generalized_box_iou


def test_sigmoid_focal_loss_matches_the_formula_by_hand():
    logit, alpha, gamma = 0.7, 0.25, 2.0
    p = 1 / (1 + math.exp(-logit))
    pos = -alpha * (1 - p) ** gamma * math.log(p)
    neg = -(1 - alpha) * p**gamma * math.log(1 - p)
    out = sigmoid_focal_loss(torch.tensor([logit, logit]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out, torch.tensor([pos, neg]))
    # gamma 0 and no alpha: binary cross-entropy
    bce = sigmoid_focal_loss(torch.tensor([logit]), torch.tensor([1.0]), alpha=-1, gamma=0)
    assert bce.item() == pytest.approx(-math.log(p))


def _cost(logits, boxes, labels, targets, alpha=0.25, gamma=2.0, w=(2.0, 5.0, 2.0)):
    prob = torch.sigmoid(logits[:, labels])
    cls = alpha * (1 - prob) ** gamma * -torch.log(prob + 1e-8) - (
        1 - alpha
    ) * prob**gamma * -torch.log(1 - prob + 1e-8)
    l1 = (boxes[:, None, :] - targets[None, :, :]).abs().sum(-1)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(targets))
    return w[0] * cls + w[1] * l1 - w[2] * giou


def test_matching_on_a_hand_case_where_greedy_fails():
    # Box costs only: p0 is closest to t0, but giving t0 to p1 lets t1 take p0.
    boxes = torch.tensor([[0.50, 0.5, 0.2, 0.2], [0.40, 0.5, 0.2, 0.2], [0.9, 0.9, 0.05, 0.05]])
    targets = torch.tensor([[0.46, 0.5, 0.2, 0.2], [0.60, 0.5, 0.2, 0.2]])
    logits = torch.zeros(3, 2)
    pred, tgt = hungarian_match(logits, boxes, torch.tensor([0, 1]), targets, class_weight=0.0)
    assert tgt.tolist() == [0, 1]
    assert pred.tolist() == [1, 0]


def test_matching_equals_brute_force_on_random_cases():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n, m, c = 5, int(torch.randint(1, 4, (), generator=g)), 3
        logits = torch.randn(n, c, generator=g)
        boxes = torch.cat(
            [torch.rand(n, 2, generator=g), 0.05 + 0.3 * torch.rand(n, 2, generator=g)], -1
        )
        labels = torch.randint(0, c, (m,), generator=g)
        targets = torch.cat(
            [torch.rand(m, 2, generator=g), 0.05 + 0.3 * torch.rand(m, 2, generator=g)], -1
        )
        pred, tgt = hungarian_match(logits, boxes, labels, targets)
        cost = _cost(logits, boxes, labels, targets)
        best = min(
            sum(cost[p, j].item() for j, p in enumerate(perm))
            for perm in itertools.permutations(range(n), m)
        )
        assert sum(cost[p, t].item() for p, t in zip(pred, tgt)) == pytest.approx(best, abs=1e-5)
        assert sorted(tgt.tolist()) == list(range(m)) and len(set(pred.tolist())) == m


def test_matching_refuses_more_targets_than_predictions_and_bad_labels():
    with pytest.raises(ValueError, match="2 targets but only 1"):
        hungarian_match(torch.zeros(1, 2), torch.rand(1, 4), torch.tensor([0, 1]), torch.rand(2, 4))
    with pytest.raises(ValueError, match="labels must lie in"):
        hungarian_match(torch.zeros(2, 2), torch.rand(2, 4), torch.tensor([5]), torch.rand(1, 4))


def _batch(g):
    logits = torch.randn(2, 6, 3, generator=g, requires_grad=True)
    boxes = torch.cat(
        [torch.rand(2, 6, 2, generator=g), 0.1 + 0.2 * torch.rand(2, 6, 2, generator=g)], -1
    )
    boxes.requires_grad_(True)
    objectness = torch.randn(2, 6, generator=g, requires_grad=True)
    target_boxes = torch.tensor(
        [[[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]], [[0.5, 0.5, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]]]
    )
    target_labels = torch.tensor([[0, 2], [1, -1]])
    return logits, boxes, objectness, target_boxes, target_labels


def test_set_loss_ignores_padding_and_has_gradients():
    logits, boxes, obj, tb, tl = _batch(torch.Generator().manual_seed(1))
    out = set_detection_loss(logits, boxes, obj, tb, tl)
    # more padding rows (any box values) change nothing
    tb2 = torch.cat([tb, torch.rand(2, 3, 4)], dim=1)
    tl2 = torch.cat([tl, torch.full((2, 3), -1)], dim=1)
    again = set_detection_loss(logits, boxes, obj, tb2, tl2)
    torch.testing.assert_close(out.loss, again.loss)
    out.loss.backward()
    assert logits.grad is not None and boxes.grad is not None and obj.grad is not None
    assert float(boxes.grad.abs().sum()) > 0


def test_set_loss_box_terms_vanish_for_exact_boxes():
    logits, _, obj, tb, tl = _batch(torch.Generator().manual_seed(2))
    boxes = torch.full((2, 6, 4), 0.1)
    boxes[0, 4], boxes[0, 1], boxes[1, 3] = tb[0, 0], tb[0, 1], tb[1, 0]
    out = set_detection_loss(logits, boxes, obj, tb, tl, class_weight=0.0)
    assert out.l1.item() == pytest.approx(0.0, abs=1e-6)
    assert out.giou.item() == pytest.approx(0.0, abs=1e-6)


def test_set_loss_with_no_targets_is_only_background():
    logits, boxes, obj, _, _ = _batch(torch.Generator().manual_seed(3))
    out = set_detection_loss(logits, boxes, obj, torch.zeros(2, 1, 4), torch.full((2, 1), -1))
    assert out.l1.item() == 0.0 and out.giou.item() == 0.0
    expected = sigmoid_focal_loss(logits, torch.zeros_like(logits)).sum()
    torch.testing.assert_close(out.classification, expected)
