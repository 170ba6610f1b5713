"""Zero-shot image-text retrieval: recall@K in both directions.

The protocol of COCO / Flickr30K retrieval with several captions per image:

- image -> text: for each image, rank all texts by similarity; a hit at K when
  *any* of the image's own captions is among the top K;
- text -> image: for each caption, rank all images; a hit at K when the
  caption's own image is among the top K.

Ties are broken against the correct item: the rank of the correct item counts
every wrong item scoring at least as high. A constant similarity matrix thus
scores (almost) zero instead of depending on sort order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def _check_inputs(similarity: torch.Tensor, text_to_image: torch.Tensor) -> None:
    if similarity.dim() != 2:
        raise ValueError(
            f"similarity must be 2-D (N_images, N_texts), got shape {tuple(similarity.shape)}"
        )
    n_images, n_texts = similarity.shape
    if n_images == 0 or n_texts == 0:
        raise ValueError(f"similarity must be non-empty, got shape {tuple(similarity.shape)}")
    if text_to_image.dim() != 1 or text_to_image.shape[0] != n_texts:
        raise ValueError(
            f"text_to_image must have shape (N_texts={n_texts},), got {tuple(text_to_image.shape)}"
        )
    if text_to_image.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"text_to_image must be an integer tensor, got {text_to_image.dtype}")
    if int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_images:
        raise ValueError(
            f"text_to_image values must lie in [0, N_images={n_images}), got range "
            f"[{int(text_to_image.min())}, {int(text_to_image.max())}]"
        )
    captioned = torch.zeros(n_images, dtype=torch.bool).index_fill_(
        0, text_to_image.long().cpu(), True
    )
    if not bool(captioned.all()):
        missing = torch.nonzero(~captioned).flatten()[:10].tolist()
        raise ValueError(f"every image needs at least one text; images without one: {missing}")
    if torch.isnan(similarity).any():
        raise ValueError("similarity contains NaN")


@torch.no_grad()
def retrieval_ranks(
    similarity: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based rank of the first correct item, per query, in both directions.

    Args:
        similarity: ``(N_images, N_texts)`` scores, higher is more similar.
        text_to_image: ``(N_texts,)`` index of each text's image.
        chunk_size: rows (columns) compared at once, to bound memory.

    Returns:
        ``(i2t_ranks (N_images,), t2i_ranks (N_texts,))`` as int64 tensors:
        ``1 + `` the number of wrong items scoring at least as high as the best
        correct one.

    Raises:
        ValueError: wrong shapes, indices out of range, an image without a
            text, or NaN scores.
    """
    _check_inputs(similarity, text_to_image)
    sim = similarity.float()
    owner = text_to_image.to(device=sim.device, dtype=torch.long)  # (N_texts,)
    n_images, n_texts = sim.shape
    text_ids = torch.arange(n_texts, device=sim.device)
    image_ids = torch.arange(n_images, device=sim.device)

    own_score = sim[owner, text_ids]  # (N_texts,) each text's score with its own image
    best_own = torch.full((n_images,), float("-inf"), device=sim.device)
    best_own = best_own.scatter_reduce(0, owner, own_score, reduce="amax")  # (N_images,)

    i2t = torch.empty(n_images, dtype=torch.long, device=sim.device)
    for start in range(0, n_images, chunk_size):
        rows = slice(start, start + chunk_size)
        wrong = owner.unsqueeze(0) != image_ids[rows].unsqueeze(1)  # (C, N_texts)
        beats = (sim[rows] >= best_own[rows].unsqueeze(1)) & wrong  # (C, N_texts)
        i2t[rows] = 1 + beats.sum(dim=1)

    t2i = torch.empty(n_texts, dtype=torch.long, device=sim.device)
    for start in range(0, n_texts, chunk_size):
        cols = slice(start, start + chunk_size)
        wrong = image_ids.unsqueeze(1) != owner[cols].unsqueeze(0)  # (N_images, C)
        beats = (sim[:, cols] >= own_score[cols].unsqueeze(0)) & wrong  # (N_images, C)
        t2i[cols] = 1 + beats.sum(dim=0)
    return i2t.cpu(), t2i.cpu()


def retrieval_recall(
    similarity: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Recall@K for image->text and text->image retrieval, as fractions in [0, 1].

    Args:
        similarity: ``(N_images, N_texts)`` scores, higher is more similar.
        text_to_image: ``(N_texts,)`` LongTensor, the image index of each text.
        ks: the cut-offs K.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}`` for the
        default ``ks`` (``"i2t_r{K}"`` / ``"t2i_r{K}"`` in general).

    Raises:
        ValueError: as :func:`retrieval_ranks`, or a K below 1.
    """
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    i2t, t2i = retrieval_ranks(similarity, text_to_image)
    out: dict[str, float] = {}
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{direction}_r{k}"] = float((ranks <= k).float().mean())
    return out
