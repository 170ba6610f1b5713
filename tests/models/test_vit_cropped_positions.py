"""ViT cropped positional embeddings (RO-ViT): off is exactly the plain ViT; on, crops in training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multitower.models.vit import ViT, ViTConfig, _random_crop

BASE = dict(image_size=32, patch_size=8, d_model=16, num_layers=1, num_heads=2)


def test_off_is_the_plain_learned_table_in_train_and_eval_mode():
    torch.manual_seed(0)
    vit = ViT(ViTConfig(**BASE))
    assert vit.pos_embed.shape == (1, 16, 16)
    assert vit.positions() is vit.pos_embed
    images = torch.randn(2, 3, 32, 32)
    # reference: patchify, add the table, run the trunk
    x = vit.patch_embed(images).flatten(2).transpose(1, 2) + vit.pos_embed
    expected = vit.encode_tokens(x)
    vit.train()
    torch.testing.assert_close(vit(images), expected, rtol=0, atol=0)
    vit.eval()
    torch.testing.assert_close(vit(images), expected, rtol=0, atol=0)
    # the same parameters as a config that predates the option
    assert {k: v.shape for k, v in vit.state_dict().items()} == {
        k: v.shape for k, v in ViT(ViTConfig(**BASE, pos_emb_upsample=3)).state_dict().items()
    }


def test_on_eval_resizes_the_whole_table_and_train_crops_it():
    torch.manual_seed(0)
    vit = ViT(ViTConfig(**BASE, cropped_pos_emb=True, pos_emb_upsample=4))
    assert vit.pos_embed.shape == (1, 16 * 16, 16)  # a 16 x 16 table for a 4 x 4 grid
    table = vit.pos_embed.reshape(1, 16, 16, 16).permute(0, 3, 1, 2)
    vit.eval()
    full = F.interpolate(table, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(vit.positions(), full.flatten(2).transpose(1, 2))
    vit.train()
    a = vit.positions(generator=torch.Generator().manual_seed(1))
    b = vit.positions(generator=torch.Generator().manual_seed(1))
    c = vit.positions(generator=torch.Generator().manual_seed(2))
    assert a.shape == (1, 16, 16)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    y0, x0, h, w = _random_crop(16, torch.Generator().manual_seed(1))
    crop = table[:, :, y0 : y0 + h, x0 : x0 + w]
    ref = F.interpolate(crop, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(a, ref.flatten(2).transpose(1, 2))


def test_training_gradients_reach_only_the_cropped_part_of_the_table():
    vit = ViT(ViTConfig(**BASE, cropped_pos_emb=True, pos_emb_upsample=4)).train()
    g = torch.Generator().manual_seed(3)
    y0, x0, h, w = _random_crop(16, torch.Generator().manual_seed(3))
    vit.positions(generator=g).sum().backward()
    grad = vit.pos_embed.grad.reshape(16, 16, 16).abs().sum(-1)  # (rows, cols)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[y0 : y0 + h, x0 : x0 + w] = True
    assert bool((grad[~inside] == 0).all()) and bool((grad[inside] > 0).any())


def test_crops_stay_inside_the_table_and_cover_ro_vits_area_range():
    g = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(300):
        y0, x0, h, w = _random_crop(16, g)
        assert y0 >= 0 and x0 >= 0 and y0 + h <= 16 and x0 + w <= 16 and h >= 1 and w >= 1
        areas.append(h * w / 256)
    assert min(areas) < 0.2 and max(areas) > 0.8


def test_upsample_must_be_a_positive_int():
    with pytest.raises(ValueError, match="pos_emb_upsample"):
        ViTConfig(**BASE, pos_emb_upsample=0)
