"""Detection AP (pycocotools) on hand-made prediction sets, and decoding per-token outputs."""

from __future__ import annotations

import math

import pytest
import torch

from multitower.eval.detection import Detections, GroundTruth, coco_box_ap, decode_detections

pytest.importorskip("pycocotools")

GT = [
    GroundTruth(
        torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 5.0, 60.0, 20.0]]), torch.tensor([0, 1])
    ),
    GroundTruth(torch.tensor([[5.0, 30.0, 25.0, 60.0]]), torch.tensor([0])),
]


def test_perfect_predictions_give_ap_one():
    dets = [Detections(g.boxes, torch.ones(len(g.labels)), g.labels) for g in GT]
    out = coco_box_ap(GT, dets, num_classes=2)
    assert out == {"ap": pytest.approx(1.0), "ap50": pytest.approx(1.0)}


def test_half_right_predictions_on_one_class():
    # class 0 has two boxes; one is found (best score), the other detection is elsewhere.
    dets = [
        Detections(
            torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([0.9]), torch.tensor([0])
        ),
        Detections(
            torch.tensor([[60.0, 60.0, 70.0, 70.0]]), torch.tensor([0.8]), torch.tensor([0])
        ),
    ]
    out = coco_box_ap(GT, dets, num_classes=2, classes=[0])
    # precision 1 up to recall 0.5, nothing beyond: 51 of COCO's 101 recall points
    assert out["ap"] == pytest.approx(51 / 101)
    assert out["ap50"] == pytest.approx(51 / 101)
    # over both classes: class 1 was never detected (AP 0), so the mean halves
    assert coco_box_ap(GT, dets, num_classes=2)["ap"] == pytest.approx(51 / 202)


def test_a_loose_box_counts_at_iou_half_but_not_at_stricter_thresholds():
    # IoU of [10,10,30,30] and [10,10,30,36] is 400 / 520 = 0.77: a hit at 0.50-0.75 only
    dets = [
        Detections(
            torch.tensor([[10.0, 10.0, 30.0, 36.0]]), torch.tensor([0.9]), torch.tensor([0])
        ),
        Detections(torch.tensor([[5.0, 30.0, 25.0, 60.0]]), torch.tensor([0.8]), torch.tensor([0])),
    ]
    out = coco_box_ap(GT, dets, num_classes=2, classes=[0])
    assert out["ap50"] == pytest.approx(1.0)
    # thresholds 0.50..0.75 (6 of 10): both found; 0.80..0.95: the best-scored detection
    # is a miss, so precision is 1/2 up to recall 0.5 (51 of 101 points) and 0 beyond
    assert out["ap"] == pytest.approx((6 * 1.0 + 4 * 0.5 * 51 / 101) / 10)


def test_classes_without_boxes_or_detections():
    no_dets = [Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))] * 2
    assert coco_box_ap(GT, no_dets, num_classes=3) == {"ap": 0.0, "ap50": 0.0}
    dets = [Detections(g.boxes, torch.ones(len(g.labels)), g.labels) for g in GT]
    assert math.isnan(coco_box_ap(GT, dets, num_classes=3, classes=[2])["ap"])
    with pytest.raises(ValueError, match="2 ground-truth images but 1"):
        coco_box_ap(GT, dets[:1], num_classes=2)


def test_decode_ranks_pairs_suppresses_duplicates_and_masks_classes():
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.26, 0.25, 0.5, 0.5], [0.75, 0.75, 0.2, 0.2]]])
    logits = torch.tensor([[[3.0, -5.0], [2.0, -5.0], [-5.0, 1.0]]])
    (det,) = decode_detections(boxes, logits, [100.0], top_k=10, nms_iou=0.5)
    # token 1 duplicates token 0 for class 0 and is suppressed; every score is sorted
    assert det.scores.tolist() == sorted(det.scores.tolist(), reverse=True)
    first = det.boxes[0].tolist()
    assert first == pytest.approx([0.0, 0.0, 50.0, 50.0]) and det.labels[0] == 0
    class0 = det.boxes[det.labels == 0]
    assert len(class0) == 2  # token 0, and token 2 (far away), not token 1
    (only1,) = decode_detections(boxes, logits, [100.0], allowed=[1], min_score=0.5)
    assert only1.labels.tolist() == [1]
    assert only1.boxes[0].tolist() == pytest.approx([65.0, 65.0, 85.0, 85.0])
