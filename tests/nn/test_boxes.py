"""Box conversions, IoU and generalised IoU against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from multitower.nn.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    generalized_box_iou,
)


def test_conversions_on_hand_boxes_and_round_trips():
    cxcywh = torch.tensor([[1.0, 1.0, 2.0, 2.0], [5.0, 3.0, 4.0, 2.0]])
    xyxy = torch.tensor([[0.0, 0.0, 2.0, 2.0], [3.0, 2.0, 7.0, 4.0]])
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), xyxy)
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)
    xywh = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(box_xywh_to_xyxy(xywh), torch.tensor([[1.0, 2.0, 4.0, 6.0]]))
    torch.testing.assert_close(box_xyxy_to_xywh(box_xywh_to_xyxy(xywh)), xywh)
    torch.testing.assert_close(box_area(xyxy), torch.tensor([4.0, 8.0]))


def test_iou_and_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou, union = box_iou(a, b)
    # a0 & b0: overlap 1x1, union 4 + 4 - 1 = 7; a0 & b2 identical; a1 & b1 disjoint;
    # a1 = [0,1]^2 touches b0 = [1,3]^2 only at a corner; a1 is a quarter of b2.
    expected_iou = torch.tensor([[1 / 7, 0.0, 1.0], [0.0, 0.0, 1 / 4]])
    torch.testing.assert_close(iou, expected_iou)
    assert union[0, 0] == 7.0
    giou = generalized_box_iou(a, b)
    # enclosing box of a0 and b0 is [0, 3]^2 (area 9): 1/7 - (9 - 7) / 9
    assert giou[0, 0].item() == pytest.approx(1 / 7 - 2 / 9)
    # a1 and b1: enclosing [0, 3] x [0, 1] (area 3), union 2: 0 - 1/3
    assert giou[1, 1].item() == pytest.approx(-1 / 3)
    assert giou[0, 2].item() == pytest.approx(1.0)
    # a1 inside b2: IoU 1/4 and the enclosing box is b2 itself, so GIoU = IoU
    assert giou[1, 2].item() == pytest.approx(0.25)
    assert bool(((giou >= -1) & (giou <= 1)).all())


def test_giou_refuses_inverted_boxes():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bad = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="x1 < x0"):
        generalized_box_iou(good, bad)


def test_nms_keeps_the_best_of_overlapping_boxes():
    from multitower.nn.boxes import nms

    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 9.0, 10.0],
        ]
    )
    scores = torch.tensor([0.5, 0.9, 0.3, 0.4])
    # box 1 (best) overlaps 0 (IoU 0.81) and 3 (IoU 0.8 / 1.01 ~ 0.72); box 2 is apart
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 3, 2]
