"""Detection evaluation: decoding per-token predictions, and COCO box AP with pycocotools.

Decoding follows OWL-ViT: every (token, class) pair is a candidate with score
``sigmoid(class logit)``; per image the ``top_k`` best pairs are kept after
class-wise non-maximum suppression. Objectness is not part of the score: it is
trained on base boxes only, so it learns novel objects as background.

AP is COCO's (``pycocotools.cocoeval.COCOeval``, box IoU, 101-point interpolated
precision, averaged over IoU 0.50:0.95 and over the classes that have boxes in
the evaluation set); ``ap50`` at IoU 0.5; ``ap_novel`` the same AP over the novel
classes only (the paper's APr on LVIS rare classes), ``ap_base`` over the base
classes. pycocotools is an optional dependency: ``pip install 'multitower[detection]'``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from multitower.nn.boxes import batched_nms, box_cxcywh_to_xyxy


class Detections(NamedTuple):
    """One image's detections, best first: ``boxes (K, 4)`` xyxy pixels, ``scores (K,)``,
    ``labels (K,)`` class indices into the class list that was scored."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class GroundTruth(NamedTuple):
    """One image's boxes ``(M, 4)`` xyxy pixels and class indices ``(M,)``."""

    boxes: torch.Tensor
    labels: torch.Tensor


def decode_detections(
    boxes: torch.Tensor,
    class_logits: torch.Tensor,
    sides: Sequence[float],
    *,
    top_k: int = 100,
    nms_iou: float = 0.5,
    min_score: float = 0.0,
    allowed: Sequence[int] | None = None,
) -> list[Detections]:
    """Per-token outputs -> each image's best detections.

    Args:
        boxes: ``(B, N, 4)`` normalised cxcywh.
        class_logits: ``(B, N, C)``.
        sides: per image, the pixel side the boxes are normalised by (the padded side).
        top_k: detections kept per image.
        nms_iou: class-wise NMS threshold (1.0: no suppression).
        min_score: drop detections scoring below this.
        allowed: class indices that may be predicted (None: all).
    """
    scores = torch.sigmoid(class_logits.float())  # (B, N, C)
    if allowed is not None:
        mask = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        mask[list(allowed)] = True
        scores = scores.masked_fill(~mask, 0.0)
    B, C = scores.shape[0], scores.shape[-1]
    out = []
    for b in range(B):
        xyxy = (box_cxcywh_to_xyxy(boxes[b].float()) * float(sides[b])).clamp(0, float(sides[b]))
        flat = scores[b].flatten()  # (N * C,), index = token * C + class
        top, index = flat.topk(min(flat.numel(), 2 * top_k))  # candidates before NMS
        token, label = index // C, index % C
        cand_boxes = xyxy[token]
        keep = batched_nms(cand_boxes, top, label, nms_iou)[:top_k]  # best first
        keep = keep[(top[keep] >= min_score) & (top[keep] > 0)]  # 0: a class not allowed
        out.append(Detections(cand_boxes[keep], top[keep], label[keep]))
    return out


def _require_pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:  # an optional dependency
        raise ImportError(
            "detection AP needs pycocotools: pip install 'multitower[detection]'"
        ) from err
    return COCO, COCOeval


def coco_box_ap(
    ground_truth: Sequence[GroundTruth],
    detections: Sequence[Detections],
    num_classes: int,
    *,
    classes: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCO box AP and AP50 (see the module docstring) over ``classes`` (default: all).

    Classes without a box in ``ground_truth`` do not count; with none at all the
    values are NaN. A class with boxes but no detection counts as AP 0.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"coco_box_ap: {len(ground_truth)} ground-truth images but {len(detections)} "
            "detection lists"
        )
    COCO, COCOeval = _require_pycocotools()
    images, annotations, results = [], [], []
    for image_id, (gt, det) in enumerate(zip(ground_truth, detections)):
        images.append({"id": image_id})
        for box, label in zip(gt.boxes.tolist(), gt.labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                 "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        for box, score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            results.append(
                {"image_id": image_id, "category_id": int(label), "score": float(score),
                 "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
            )  # fmt: skip
    wanted = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    present = {a["category_id"] for a in annotations} & set(wanted)
    if not present:
        return {"ap": math.nan, "ap50": math.nan}
    if not results:
        return {"ap": 0.0, "ap50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt_api = COCO()
        gt_api.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in range(num_classes)],
        }
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results)
        evaluator = COCOeval(gt_api, dt_api, "bbox")
        evaluator.params.catIds = sorted(present)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"ap": float(evaluator.stats[0]), "ap50": float(evaluator.stats[1])}
