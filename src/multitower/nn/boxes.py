"""Box formats and overlaps for detection (the definitions of DETR, arXiv 2005.12872, appendix).

Three formats, always in the last dimension of a ``(..., 4)`` tensor:

* ``xyxy``: corners ``(x0, y0, x1, y1)``, ``x1 >= x0`` (the losses and IoU work in it);
* ``cxcywh``: centre and size ``(cx, cy, w, h)`` (what the detection head predicts,
  normalised to ``[0, 1]`` by the image side);
* ``xywh``: COCO's ``(x0, y0, w, h)``.

Overlaps are pairwise: ``box_iou(a (N, 4), b (M, 4)) -> (N, M)``. The generalised
IoU (Rezatofighi et al., 2019) subtracts from the IoU the fraction of the smallest
enclosing box that the union leaves empty, so it lies in ``[-1, 1]`` and still
has a gradient when two boxes do not overlap.
"""

from __future__ import annotations

import numpy as np
import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre/size -> corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corners -> centre/size."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` COCO ``(x0, y0, w, h)`` -> corners."""
    x0, y0, w, h = boxes.unbind(-1)
    return torch.stack((x0, y0, x0 + w, y0 + h), dim=-1)


def box_xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corners -> COCO ``(x0, y0, w, h)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack((x0, y0, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` areas (0 for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(
        0
    )


def box_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU of xyxy boxes.

    Args:
        a: ``(N, 4)``; b: ``(M, 4)``.

    Returns:
        ``(iou, union)``, both ``(N, M)``; the IoU of two empty boxes is 0.
    """
    area_a, area_b = box_area(a), box_area(b)  # (N,), (M,)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp_min(0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
    return inter / union.clamp_min(1e-12), union


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU of xyxy boxes: ``(N, 4), (M, 4) -> (N, M)`` in ``[-1, 1]``.

    Raises:
        ValueError: a box with ``x1 < x0`` or ``y1 < y0`` (the formula assumes valid boxes).
    """
    for name, boxes in (("a", a), ("b", b)):
        if bool((boxes[:, 2:] < boxes[:, :2]).any()):
            raise ValueError(f"generalized_box_iou: boxes {name} have x1 < x0 or y1 < y0")
    iou, union = box_iou(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp_min(0)  # (N, M, 2)
    enclosing = wh[..., 0] * wh[..., 1]  # (N, M)
    return iou - (enclosing - union) / enclosing.clamp_min(1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision's ``nms``, in plain torch and NumPy).

    Keeps the highest-scoring box, drops every remaining box whose IoU with it
    exceeds ``iou_threshold``, and repeats. The pairwise overlaps are computed once
    and the greedy pass runs in NumPy (per-box torch calls are slow).

    Args:
        boxes: ``(K, 4)`` xyxy; scores: ``(K,)``.

    Returns:
        Indices of the kept boxes, ``(K',)`` int64, by decreasing score.
    """
    order = scores.argsort(descending=True)
    b = boxes[order].detach().double().cpu().numpy()  # (K, 4) in score order
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)  # (K,)
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)  # (K, K)
    suppress = inter > iou_threshold * np.maximum(area[:, None] + area[None, :] - inter, 1e-12)
    suppressed = np.zeros(len(b), dtype=bool)
    kept = []
    for i in range(len(b)):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= suppress[i]  # boxes before i are decided already
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """:func:`nms` within each label: boxes of different labels never suppress each other
    (they are shifted apart by label before one NMS, as torchvision's ``batched_nms``)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = (boxes.max() - boxes.min() + 1) * labels.to(boxes.dtype)  # (K,)
    return nms(boxes + shift[:, None], scores, iou_threshold)
