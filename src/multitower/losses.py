"""Loss functions. Models return logits/features; these turn them into losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F

from multitower.interleave import TowerBatch
from multitower.nn.boxes import box_cxcywh_to_xyxy, generalized_box_iou


def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean cross-entropy of ``logits`` ``(B, T, V)`` against ``targets`` ``(B, T)``.

    Logits and targets must already be aligned (logits at t predict targets at t).
    ``weights`` ``(B, T)`` (0 = ignore); None weighs every position 1.
    """
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    if weights is None:
        return ce.mean()
    w = weights.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def interleaved_next_token_loss(
    logits: Mapping[str, torch.Tensor], batch: Mapping[str, TowerBatch]
) -> torch.Tensor:
    """Next-token loss summed over towers, normalised by the total target weight.

    Each tower predicts its own next token: logits at tower position t score the
    tower's token t+1 with that token's ``loss_weights``.
    """
    total = torch.zeros((), device=next(iter(logits.values())).device)
    norm = torch.zeros((), device=total.device)
    for tower, tower_logits in logits.items():
        tb = batch[tower]
        if tb.tokens.shape[1] < 2:
            continue
        w = tb.loss_weights[:, 1:].to(torch.float32)  # (B, T-1)
        ce = F.cross_entropy(
            tower_logits[:, :-1].flatten(0, 1).float(), tb.tokens[:, 1:].flatten(), reduction="none"
        )  # (B*(T-1),)
        total = total + (ce * w.flatten()).sum()
        norm = norm + w.sum()
    return total / norm.clamp_min(1e-8)


def ctc_loss(
    log_probs: torch.Tensor,
    out_lengths: torch.Tensor,
    targets: torch.Tensor | list[list[int]],
    target_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of each utterance's CTC loss divided by its target length.

    The blank is class 0. An utterance whose target cannot fit in its frames (it
    needs one frame per label plus one blank between repeated labels) has infinite
    loss; it counts as 0 with zero gradient (``zero_infinity=True``).

    Args:
        log_probs: ``(B, T, C)`` log-probabilities, batch first.
        out_lengths: ``(B,)`` valid frames of each row (``<= T``).
        targets: padded ``(B, S)`` label ids in ``[1, C)``, or a list of B id lists.
        target_lengths: ``(B,)`` label counts; required with padded targets, optional
            with a list (then it must match the list).

    Raises:
        ValueError: shapes or lengths disagree.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T, C), got shape {tuple(log_probs.shape)}")
    B = log_probs.shape[0]
    if not isinstance(targets, torch.Tensor):
        if len(targets) != B:
            raise ValueError(f"targets must hold {B} sequences (one per row), got {len(targets)}")
        counts = [len(t) for t in targets]
        if target_lengths is not None and target_lengths.tolist() != counts:
            raise ValueError(
                f"target_lengths {target_lengths.tolist()} disagree with the targets' lengths {counts}"
            )
        padded = torch.zeros(B, max(counts, default=0), dtype=torch.long)
        for i, t in enumerate(targets):
            padded[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        targets = padded.to(log_probs.device)
        target_lengths = torch.tensor(counts, dtype=torch.long, device=log_probs.device)
    if target_lengths is None:
        raise ValueError("target_lengths is required when targets is a padded tensor")
    if targets.dim() != 2 or targets.shape[0] != B:
        raise ValueError(f"targets must be ({B}, S), got shape {tuple(targets.shape)}")
    for name, lengths in (("out_lengths", out_lengths), ("target_lengths", target_lengths)):
        if lengths.shape != (B,):
            raise ValueError(f"{name} must have shape ({B},), got {tuple(lengths.shape)}")
    losses = F.ctc_loss(
        log_probs.transpose(0, 1).float(),  # (T, B, C)
        targets,
        out_lengths,
        target_lengths,
        blank=0,
        reduction="none",
        zero_infinity=True,
    )  # (B,)
    return (losses / target_lengths.clamp_min(1).to(losses.dtype)).mean()


# -- MaMMUT ------------------------------------------------------------------------------------
def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast bf16/fp16 features for the loss; keep float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_contrastive_inputs(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    all_image_features: torch.Tensor,
    all_text_features: torch.Tensor,
    offset: int,
) -> None:
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            "contrastive loss: image and text features must both be (B, E), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if all_image_features.shape != all_text_features.shape:
        raise ValueError(
            "contrastive loss: gathered image and text features differ in shape: "
            f"{tuple(all_image_features.shape)} vs {tuple(all_text_features.shape)}"
        )
    n = image_features.shape[0]
    if not 0 <= offset <= all_image_features.shape[0] - n:
        raise ValueError(
            f"contrastive loss: offset {offset} puts the {n} local rows outside the "
            f"{all_image_features.shape[0]} gathered rows"
        )


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    all_image_features: torch.Tensor | None = None,
    all_text_features: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) between matching image and text rows.

    Image ``i`` matches text ``i``. Without the ``all_*`` arguments this is the
    mean of the image->text and text->image cross-entropies over the batch::

        logits = logit_scale * image_features @ text_features.T           # (B, B)
        loss = (CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2

    Distributed: pass the local rows, the features gathered over every rank
    (``all_*``, local rows included at ``[offset, offset + B)``) and the offset.
    The loss then scores local images against all texts and local texts against
    all images; its mean over ranks equals the single-process loss on the global
    batch (open_clip's ``local_loss``).

    Args:
        image_features, text_features: ``(B, E)`` L2-normalised embeddings.
        logit_scale: ``1 / temperature`` (already clamped).
        all_image_features, all_text_features: ``(N, E)`` gathered features.
        offset: index of the first local row inside the gathered rows.

    Returns:
        A scalar (float32, or float64 for float64 features).
    """
    all_images = image_features if all_image_features is None else all_image_features
    all_texts = text_features if all_text_features is None else all_text_features
    _check_contrastive_inputs(image_features, text_features, all_images, all_texts, offset)
    labels = torch.arange(image_features.shape[0], device=image_features.device) + offset
    texts = _at_least_float32(all_texts)  # (N, E)
    images = _at_least_float32(all_images)  # (N, E)
    image_logits = logit_scale * _at_least_float32(image_features) @ texts.T  # (B, N)
    text_logits = logit_scale * _at_least_float32(text_features) @ images.T  # (B, N)
    return 0.5 * (F.cross_entropy(image_logits, labels) + F.cross_entropy(text_logits, labels))


def focal_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gamma: float = 2.0,
    all_text_features: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Sigmoid focal loss over all image-text pairs (the focal contrastive loss of RO-ViT/MaMMUT).

    Every pair is a binary problem, matching (image ``i``, text ``i``) or not::

        z_ij = logit_scale * <image_i, text_j>,  p = sigmoid(z_ij)
        p_t  = p if i == j else 1 - p
        loss = sum_ij -(1 - p_t)^gamma * log(p_t) / B

    so easy negatives, which dominate a large batch, weigh little. Each pair
    appears once, so the loss is symmetric in images and texts. Distributed:
    pass the local rows, the texts gathered over every rank and the offset of
    the local rows; the mean over ranks equals the single-process loss on the
    global batch.

    Args:
        image_features, text_features: ``(B, E)`` L2-normalised embeddings.
        logit_scale: ``1 / temperature``.
        gamma: focusing exponent (0 gives plain sigmoid cross-entropy).
        all_text_features: ``(N, E)`` gathered texts.
        offset: index of the first local row inside the gathered rows.

    Raises:
        ValueError: shapes, offset, or a negative ``gamma``.
    """
    if gamma < 0:
        raise ValueError(f"focal_contrastive_loss: gamma must be >= 0, got {gamma}")
    all_texts = text_features if all_text_features is None else all_text_features
    _check_contrastive_inputs(image_features, text_features, all_texts, all_texts, offset)
    n = image_features.shape[0]
    texts = _at_least_float32(all_texts)  # (N, E)
    logits = logit_scale * _at_least_float32(image_features) @ texts.T  # (B, N)
    rows = torch.arange(n, device=logits.device)
    targets = torch.zeros_like(logits)
    targets[rows, rows + offset] = 1.0
    signed = torch.where(targets.bool(), logits, -logits)  # log p_t = logsigmoid(signed)
    log_pt = F.logsigmoid(signed)
    weight = (1.0 - log_pt.exp()).pow(gamma)
    return -(weight * log_pt).sum() / n


def caption_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    pad_id: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Captioning cross-entropy, padding ignored.

    Args:
        logits: ``(B, T, V)``, aligned with ``targets`` (logits at t predict targets at t).
        targets: ``(B, T)`` ids; positions holding ``pad_id`` are ignored.
        pad_id: the padding id.
        weights: optional ``(B, T)`` extra weights (e.g. 0 on a VQA question prefix).

    Returns:
        The weighted mean cross-entropy over non-padding targets.

    Raises:
        ValueError: mismatched shapes.
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"caption_loss: logits (B, T, V) and targets (B, T) disagree: "
            f"{tuple(logits.shape)} vs {tuple(targets.shape)}"
        )
    mask = (targets != pad_id).float()  # (B, T)
    if weights is not None:
        if weights.shape != targets.shape:
            raise ValueError(
                f"caption_loss: weights shape {tuple(weights.shape)} != targets shape "
                f"{tuple(targets.shape)}"
            )
        mask = mask * weights.float()
    return next_token_loss(logits, targets, mask)


# -- detection ---------------------------------------------------------------------------------
def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al., 2017, RetinaNet), not reduced::

        p_t  = p if target == 1 else 1 - p,   p = sigmoid(logit)
        loss = -alpha_t * (1 - p_t)^gamma * log(p_t),  alpha_t = alpha or 1 - alpha

    Args:
        logits, targets: same shape; targets in ``[0, 1]``.
        alpha: weight of the positives (negative: no alpha weighting).
        gamma: focusing exponent (0: binary cross-entropy).
    """
    logits = _at_least_float32(logits)
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def _linear_sum_assignment():
    """scipy's exact assignment solver, an optional dependency (the detection extra)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as err:
        raise ImportError(
            "the detection loss's bipartite matching needs scipy: "
            "pip install 'multitower[detection]'"
        ) from err
    return linear_sum_assignment


@torch.no_grad()
def hungarian_match(
    class_logits: torch.Tensor,
    boxes: torch.Tensor,
    target_labels: torch.Tensor,
    target_boxes: torch.Tensor,
    *,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bipartite matching of DETR: one prediction per target at the least total cost.

    ``cost = class_weight * focal cost + l1_weight * L1(cxcywh) - giou_weight * GIoU``,
    the focal cost being the focal loss of calling the prediction the target's
    class minus that of calling it background (Deformable DETR). Solved exactly
    by :func:`scipy.optimize.linear_sum_assignment`.

    Args:
        class_logits: ``(N, C)`` per-prediction class logits.
        boxes: ``(N, 4)`` predicted cxcywh boxes.
        target_labels: ``(M,)`` class indices in ``[0, C)``.
        target_boxes: ``(M, 4)`` cxcywh boxes.

    Returns:
        ``(prediction_index, target_index)``, both ``(M,)`` int64, ordered by target.

    Raises:
        ValueError: more targets than predictions, or a label outside ``[0, C)``.
    """
    n, m = boxes.shape[0], target_boxes.shape[0]
    if m > n:
        raise ValueError(f"hungarian_match: {m} targets but only {n} predictions")
    empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
    if m == 0:
        return empty, empty
    if bool((target_labels < 0).any()) or bool((target_labels >= class_logits.shape[1]).any()):
        raise ValueError(
            f"hungarian_match: labels must lie in [0, {class_logits.shape[1]}), "
            f"got {target_labels.tolist()}"
        )
    prob = torch.sigmoid(_at_least_float32(class_logits[:, target_labels]))  # (N, M)
    neg = (1 - alpha) * prob.pow(gamma) * -torch.log(1 - prob + 1e-8)
    pos = alpha * (1 - prob).pow(gamma) * -torch.log(prob + 1e-8)
    b, t = _at_least_float32(boxes), _at_least_float32(target_boxes)
    cost = (
        class_weight * (pos - neg)
        + l1_weight * torch.cdist(b, t, p=1)
        - giou_weight * generalized_box_iou(box_cxcywh_to_xyxy(b), box_cxcywh_to_xyxy(t))
    )  # (N, M)
    rows, cols = _linear_sum_assignment()(cost.cpu().numpy())
    order = cols.argsort()
    pred = torch.as_tensor(rows[order], dtype=torch.long, device=boxes.device)
    return pred, torch.as_tensor(cols[order], dtype=torch.long, device=boxes.device)


class DetectionLoss(NamedTuple):
    """The set loss of one batch: the weighted total and its parts (each per target box)."""

    loss: torch.Tensor
    classification: torch.Tensor
    l1: torch.Tensor
    giou: torch.Tensor
    objectness: torch.Tensor


def set_detection_loss(
    class_logits: torch.Tensor,
    boxes: torch.Tensor,
    objectness_logits: torch.Tensor,
    target_boxes: torch.Tensor,
    target_labels: torch.Tensor,
    *,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
    objectness_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> DetectionLoss:
    """DETR-style set loss with a sigmoid focal classification (OWL-ViT, Deformable DETR).

    Each image's targets are matched to predictions by :func:`hungarian_match`
    (the same weights are the matching costs). A matched prediction learns its
    target's class (focal loss over every prediction and class: unmatched ones
    learn "none of these"), its box (L1 on cxcywh and ``1 - GIoU``) and
    objectness 1; unmatched ones objectness 0 (focal). Every part is summed and
    divided by the number of target boxes in the batch (at least 1).

    Args:
        class_logits: ``(B, N, C)``.
        boxes: ``(B, N, 4)`` cxcywh in ``[0, 1]``.
        objectness_logits: ``(B, N)``.
        target_boxes: ``(B, M, 4)`` cxcywh, padded.
        target_labels: ``(B, M)`` class indices, ``-1`` on padding.

    Raises:
        ValueError: shapes that disagree.
    """
    B, N = class_logits.shape[:2]
    if class_logits.dim() != 3:
        raise ValueError(
            f"set_detection_loss: class_logits must be (B, N, C), got {tuple(class_logits.shape)}"
        )
    if boxes.shape != (B, N, 4) or objectness_logits.shape != (B, N):
        raise ValueError(
            f"set_detection_loss: class_logits {tuple(class_logits.shape)}, boxes "
            f"{tuple(boxes.shape)} and objectness {tuple(objectness_logits.shape)} disagree"
        )
    if target_boxes.shape[:2] != target_labels.shape or target_boxes.shape[0] != B:
        raise ValueError(
            f"set_detection_loss: target_boxes {tuple(target_boxes.shape)} and target_labels "
            f"{tuple(target_labels.shape)} disagree (batch {B})"
        )
    costs = dict(class_weight=class_weight, l1_weight=l1_weight, giou_weight=giou_weight)
    batch_idx, pred_idx, tgt_boxes, tgt_labels = [], [], [], []
    for b in range(B):
        valid = target_labels[b] >= 0  # (M,)
        labels, tboxes = target_labels[b][valid], target_boxes[b][valid]
        pred, tgt = hungarian_match(
            class_logits[b], boxes[b], labels, tboxes, alpha=alpha, gamma=gamma, **costs
        )
        batch_idx.append(torch.full_like(pred, b))
        pred_idx.append(pred)
        tgt_boxes.append(tboxes[tgt])
        tgt_labels.append(labels[tgt])
    bi, pi = torch.cat(batch_idx), torch.cat(pred_idx)  # (K,), (K,)
    matched_labels = torch.cat(tgt_labels)  # (K,)
    num = max(int(bi.numel()), 1)
    class_targets = torch.zeros_like(class_logits, dtype=torch.float32)  # (B, N, C)
    class_targets[bi, pi, matched_labels] = 1.0
    cls = sigmoid_focal_loss(class_logits, class_targets, alpha=alpha, gamma=gamma).sum() / num
    obj_targets = torch.zeros_like(objectness_logits, dtype=torch.float32)  # (B, N)
    obj_targets[bi, pi] = 1.0
    obj = sigmoid_focal_loss(objectness_logits, obj_targets, alpha=alpha, gamma=gamma).sum() / num
    pred_boxes = _at_least_float32(boxes[bi, pi])  # (K, 4)
    true_boxes = _at_least_float32(torch.cat(tgt_boxes))  # (K, 4)
    l1 = (pred_boxes - true_boxes).abs().sum() / num
    if pred_boxes.shape[0]:
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(true_boxes))
        giou_loss = (1 - giou.diagonal()).sum() / num
    else:
        giou_loss = pred_boxes.sum()  # 0 with a gradient path
    total = class_weight * cls + l1_weight * l1 + giou_weight * giou_loss + objectness_weight * obj
    return DetectionLoss(total, cls, l1, giou_loss, obj)
