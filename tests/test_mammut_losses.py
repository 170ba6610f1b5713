"""MaMMUT losses against loop-based references, and the 2-process gathered loss."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from multitower.experiments.mammut.task import gathered_contrastive_loss
from multitower.losses import caption_loss, contrastive_loss, focal_contrastive_loss

WORLD = 2


def features(n: int, dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=gen, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(n, dim, generator=gen, dtype=torch.float64), dim=-1)
    return img, txt


def infonce_reference(img: torch.Tensor, txt: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE written as loops over rows."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        i2t = [scale * float(img[i] @ txt[j]) for j in range(n)]
        t2i = [scale * float(txt[i] @ img[j]) for j in range(n)]
        total += -(i2t[i] - math.log(sum(math.exp(v) for v in i2t))) / (2 * n)
        total += -(t2i[i] - math.log(sum(math.exp(v) for v in t2i))) / (2 * n)
    return total


def focal_reference(img: torch.Tensor, txt: torch.Tensor, scale: float, gamma: float) -> float:
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            p = 1 / (1 + math.exp(-scale * float(img[i] @ txt[j])))
            p_t = p if i == j else 1 - p
            total += -((1 - p_t) ** gamma) * math.log(p_t)
    return total / n


def test_contrastive_loss_equals_loop_reference():
    img, txt = features(7)
    for scale in (1.0, 14.3, 100.0):
        got = contrastive_loss(img, txt, scale)
        assert float(got) == pytest.approx(infonce_reference(img, txt, scale), rel=1e-5)


def test_contrastive_loss_is_symmetric_and_rewards_matches():
    img, txt = features(5)
    assert float(contrastive_loss(img, txt, 10.0)) == pytest.approx(
        float(contrastive_loss(txt, img, 10.0)), rel=1e-6
    )
    assert float(contrastive_loss(img, img, 50.0)) < 1e-3  # perfect matches: loss ~ 0
    chance = contrastive_loss(img, txt, 0.0)  # equal logits: log(n)
    assert float(chance) == pytest.approx(math.log(5), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_loss_equals_loop_reference(gamma):
    img, txt = features(6, seed=3)
    got = focal_contrastive_loss(img, txt, 7.0, gamma=gamma)
    assert float(got) == pytest.approx(focal_reference(img, txt, 7.0, gamma), rel=1e-5)


def test_local_rows_average_to_the_global_loss():
    """Per-"rank" losses over local rows against all rows average to the full-batch loss."""
    img, txt = features(8, seed=1)
    full = contrastive_loss(img, txt, 9.0)
    full_focal = focal_contrastive_loss(img, txt, 9.0)
    parts, focal_parts = [], []
    for r in range(WORLD):
        rows = slice(4 * r, 4 * r + 4)
        kw = dict(all_text_features=txt, offset=4 * r)
        parts.append(contrastive_loss(img[rows], txt[rows], 9.0, all_image_features=img, **kw))
        focal_parts.append(focal_contrastive_loss(img[rows], txt[rows], 9.0, **kw))
    torch.testing.assert_close(sum(parts) / WORLD, full)
    torch.testing.assert_close(sum(focal_parts) / WORLD, full_focal)


def test_contrastive_loss_errors():
    img, txt = features(4)
    with pytest.raises(ValueError, match=r"both be \(B, E\)"):
        contrastive_loss(img, txt[:3], 1.0)
    with pytest.raises(ValueError, match="offset 2 puts the 4 local rows"):
        contrastive_loss(img, txt, 1.0, all_image_features=img, all_text_features=txt, offset=2)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_contrastive_loss(img, txt, 1.0, gamma=-1.0)


def test_caption_loss_ignores_padding_and_uses_weights():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 9, generator=gen, dtype=torch.float64)
    targets = torch.tensor([[4, 5, 6, 2, 0], [7, 2, 0, 0, 0]])
    weights = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    terms, norm = 0.0, 0.0
    for b in range(2):
        for t in range(5):
            if targets[b, t] == 0:
                continue
            logp = float(torch.log_softmax(logits[b, t], dim=-1)[targets[b, t]])
            terms += -logp * float(weights[b, t])
            norm += float(weights[b, t])
    got = caption_loss(logits, targets, pad_id=0, weights=weights)
    assert float(got) == pytest.approx(terms / norm, rel=1e-6)
    # Changing a logit at a padded target changes nothing.
    logits2 = logits.clone()
    logits2[1, 3] += 5.0
    torch.testing.assert_close(
        caption_loss(logits2, targets, pad_id=0), caption_loss(logits, targets, pad_id=0)
    )
    with pytest.raises(ValueError, match="disagree"):
        caption_loss(logits[:, :4], targets, pad_id=0)


# -- two processes ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        img, txt = features(8, seed=5)
        results = {}
        for kind in ("infonce", "focal"):
            rows = slice(4 * rank, 4 * rank + 4)
            local_img = img[rows].clone().requires_grad_(True)
            local_txt = txt[rows].clone().requires_grad_(True)
            scale = torch.tensor(11.0, dtype=torch.float64, requires_grad=True)
            loss = gathered_contrastive_loss(local_img, local_txt, scale, kind=kind, gamma=2.0)
            loss.backward()
            results[kind] = {
                "loss": loss.detach(),
                "img_grad": local_img.grad,
                "txt_grad": local_txt.grad,
                "scale_grad": scale.grad,
            }
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gathered_loss_equals_single_process(tmp_path):
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    img, txt = features(8, seed=5)
    for kind in ("infonce", "focal"):
        img_full = img.clone().requires_grad_(True)
        txt_full = txt.clone().requires_grad_(True)
        scale = torch.tensor(11.0, dtype=torch.float64, requires_grad=True)
        if kind == "focal":
            full = focal_contrastive_loss(img_full, txt_full, scale, gamma=2.0)
        else:
            full = contrastive_loss(img_full, txt_full, scale)
        full.backward()
        # DDP averages over ranks: the mean of the per-rank losses is the global loss,
        # and each rank's gradient (summed over every rank's loss) / WORLD is its slice.
        mean_loss = sum(r[kind]["loss"] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, full.detach())
        img_grad = torch.cat([r[kind]["img_grad"] for r in ranks]) / WORLD
        txt_grad = torch.cat([r[kind]["txt_grad"] for r in ranks]) / WORLD
        torch.testing.assert_close(img_grad, img_full.grad)
        torch.testing.assert_close(txt_grad, txt_full.grad)
        scale_grad = sum(r[kind]["scale_grad"] for r in ranks) / WORLD
        torch.testing.assert_close(scale_grad, scale.grad)
