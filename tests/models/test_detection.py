"""The MaMMUT detection head: shapes, the box prior, text-scored classes, frozen text, closed vocabulary."""

from __future__ import annotations

import pytest
import torch

from multitower.losses import set_detection_loss
from multitower.models.detection import (
    DetectionHeadConfig,
    MaMMUTDetector,
    MaMMUTDetectorConfig,
    grid_box_bias,
)
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.vit import ViTConfig
from multitower.train.optim import build_optimizer

MAMMUT = MaMMUTConfig(
    vocab_size=30, d_model=32, num_layers=2, num_heads=2, embed_dim=16, max_seq_len=12,
    vision=ViTConfig(image_size=32, patch_size=8, d_model=24, num_layers=1, num_heads=2),
)  # fmt: skip
PROMPTS = torch.tensor([[1, 5, 6, 2], [1, 7, 6, 2], [1, 5, 8, 2]])  # three "class names"
NOVEL = torch.tensor([[1, 7, 8, 2]])  # a name the head never saw boxes for


def _detector(**head) -> MaMMUTDetector:
    torch.manual_seed(0)
    return MaMMUTDetector(MaMMUTDetectorConfig(MAMMUT, DetectionHeadConfig(**head)))


def test_shapes_ranges_and_the_initial_boxes_are_the_patch_grid():
    model = _detector()
    images = torch.randn(2, 3, 32, 32)
    out = model(images, model.encode_class_names(PROMPTS))
    assert out.boxes.shape == (2, 16, 4) and out.objectness_logits.shape == (2, 16)
    assert out.region_embeddings.shape == (2, 16, 16) and out.class_logits.shape == (2, 16, 3)
    torch.testing.assert_close(out.region_embeddings.norm(dim=-1), torch.ones(2, 16))
    # the last box layer starts at zero: every token predicts its own patch
    grid = torch.sigmoid(grid_box_bias(4))
    torch.testing.assert_close(out.boxes, grid.expand(2, 16, 4))
    assert grid[0].tolist() == pytest.approx([0.125, 0.125, 0.25, 0.25], abs=1e-4)
    assert grid[1].tolist() == pytest.approx([0.375, 0.125, 0.25, 0.25], abs=1e-4)  # row-major


def test_region_projection_starts_as_the_image_projection():
    mammut = MaMMUT(MAMMUT)
    model = MaMMUTDetector(MaMMUTDetectorConfig(MAMMUT), mammut=mammut)
    assert model.mammut is mammut
    assert torch.equal(model.region_proj.weight, mammut.image_proj.weight)
    with pytest.raises(ValueError, match="differs"):
        MaMMUTDetector(MaMMUTDetectorConfig(MaMMUTConfig(vocab_size=31, vision=MAMMUT.vision)),
                       mammut=mammut)  # fmt: skip


def test_a_novel_class_name_is_scored_through_its_text_embedding():
    model = _detector().eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model.encode_class_names(PROMPTS)
        novel = model.encode_class_names(NOVEL)
        out = model(images, torch.cat([base, novel]))
        # the reference: scaled cosine similarity of region and text embedding, plus the bias
        expected = model.class_scale_value() * out.region_embeddings @ novel[0] + model.class_bias
        torch.testing.assert_close(out.class_logits[..., 3], expected)
        # the score follows the text tower: other text weights, another novel logit
        model.mammut.text_proj.weight.mul_(-1.0)
        flipped = model(images, model.encode_class_names(NOVEL)).class_logits[..., 0]
    assert not torch.allclose(flipped, out.class_logits[..., 3])


def test_class_scores_do_not_depend_on_the_order_of_the_class_list():
    model = _detector().eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        names = model.encode_class_names(PROMPTS)
        perm = torch.tensor([2, 0, 1])
        a = model(images, names).class_logits
        b = model(images, names[perm]).class_logits
    torch.testing.assert_close(b, a[..., perm])


def test_frozen_text_is_untouched_by_a_training_step_and_the_vision_side_moves():
    model = _detector()
    model.freeze_text()
    text_before = {n: p.detach().clone() for n, p in model.mammut.named_parameters()}
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    images = torch.randn(2, 3, 32, 32)
    out = model(images, model.encode_class_names(PROMPTS))
    targets = torch.tensor([[[0.3, 0.3, 0.2, 0.2]], [[0.6, 0.7, 0.3, 0.2]]])
    loss = set_detection_loss(
        out.class_logits, out.boxes, out.objectness_logits, targets, torch.tensor([[0], [2]])
    ).loss
    loss.backward()
    optimizer.step()
    for name, param in model.mammut.named_parameters():
        if name.startswith("vision."):
            continue
        assert param.grad is None, name
        assert torch.equal(param, text_before[name]), name
    assert not torch.equal(
        model.mammut.vision.patch_embed.weight, text_before["vision.patch_embed.weight"]
    )
    assert model.box_mlp[-1].weight.abs().sum() > 0


def test_closed_vocabulary_head_uses_its_table_only():
    model = _detector(class_table=3)
    images = torch.randn(1, 3, 32, 32)
    assert model(images).class_logits.shape == (1, 16, 3)
    with pytest.raises(ValueError, match="closed-vocabulary"):
        model(images, torch.randn(3, 16))
    with pytest.raises(ValueError, match="needs class_embeddings"):
        _detector()(images)
    with pytest.raises(ValueError, match="class embeddings must be"):
        _detector()(images, torch.randn(0, 16))


def test_head_config_errors_name_the_field():
    with pytest.raises(ValueError, match="prior_prob"):
        DetectionHeadConfig(prior_prob=1.0)
    with pytest.raises(ValueError, match="box_layers"):
        DetectionHeadConfig(box_layers=0)
