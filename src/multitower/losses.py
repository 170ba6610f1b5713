"""Loss functions. Models return logits/features; these turn them into losses."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from multitower.interleave import TowerBatch


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
