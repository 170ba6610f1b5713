"""MaMMUT model: ViT, the two decoder passes and their invariants."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from multitower.config import build_dataclass
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.pretrained import load_pretrained, save_pretrained
from multitower.models.vit import ViT, ViTConfig

VISION = ViTConfig(image_size=16, patch_size=4, d_model=24, num_layers=2, num_heads=2)
CONFIG = MaMMUTConfig(
    vocab_size=40, d_model=32, num_layers=4, num_heads=4, vision=VISION, embed_dim=16,
    max_seq_len=24, cross_attn_every=2,
)  # fmt: skip


def make_model(config: MaMMUTConfig = CONFIG) -> MaMMUT:
    torch.manual_seed(0)
    model = MaMMUT(config).double().eval()
    # Larger random weights than the init, so every path visibly changes the outputs.
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.15)
    return model


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).double()


def capture_hidden(model: MaMMUT):
    """Record the final-norm output (B, T, D) of each decoder pass."""
    seen: list[torch.Tensor] = []
    handle = model.norm.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    return seen, handle


# -- ViT ----------------------------------------------------------------------------------------
def test_vit_tokens_and_patch_order():
    torch.manual_seed(0)
    vit = ViT(VISION).double().eval()
    x = images(2)
    out = vit(x)
    assert out.shape == (2, VISION.num_patches, VISION.d_model)
    # Changing one pixel of the bottom-right patch changes that patch's embedding input only,
    # so before attention mixing only that token's patch embedding moves.
    y = x.clone()
    y[:, :, -1, -1] += 1.0
    pe_x = vit.patch_embed(x).flatten(2).transpose(1, 2)
    pe_y = vit.patch_embed(y).flatten(2).transpose(1, 2)
    moved = (pe_x - pe_y).abs().sum(-1) > 0  # (B, N)
    assert moved[:, -1].all() and not moved[:, :-1].any()


def test_vit_is_bidirectional_and_rejects_bad_input():
    torch.manual_seed(0)
    vit = ViT(VISION).double().eval()
    x = images(1)
    y = x.clone()
    y[:, :, -4:, -4:] = 0.0  # the last patch
    assert not torch.allclose(vit(x)[:, 0], vit(y)[:, 0])  # the first token sees the last patch
    with pytest.raises(ValueError, match=r"shape \(B, 3, 16, 16\)"):
        vit(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        vit(torch.zeros(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="patch_size=5 must divide"):
        ViTConfig(image_size=16, patch_size=5)


# -- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("every", "layers", "expected"),
    [(1, None, (0, 1, 2, 3)), (2, None, (1, 3)), (4, None, (3,)), (2, (2, 0), (0, 2)), (2, (), ())],
)
def test_cross_attention_placement(every, layers, expected):
    cfg = dataclasses.replace(CONFIG, cross_attn_every=every, cross_attn_layers=layers)
    assert cfg.cross_layers == expected
    model = MaMMUT(cfg)
    assert sorted(int(k) for k in model.cross) == list(expected)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="cross_attn_every must lie in"):
        dataclasses.replace(CONFIG, cross_attn_every=5)
    with pytest.raises(ValueError, match="cross_attn_layers must be distinct"):
        dataclasses.replace(CONFIG, cross_attn_layers=(1, 1))
    with pytest.raises(ValueError, match="cross_attn_layers must be distinct"):
        dataclasses.replace(CONFIG, cross_attn_layers=(4,))
    with pytest.raises(ValueError, match="eos_id must lie in"):
        dataclasses.replace(CONFIG, eos_id=40)
    with pytest.raises(ValueError, match="head_dim"):
        dataclasses.replace(CONFIG, d_model=36, num_heads=4)
    with pytest.raises(ValueError, match="depth: unknown key"):
        build_dataclass(MaMMUTConfig, {**dataclasses.asdict(CONFIG), "depth": 3}, "")


# -- contrastive pass ---------------------------------------------------------------------------
def test_contrastive_pass_is_bidirectional():
    model = make_model()
    tokens = torch.tensor([[1, 5, 6, 7, 8, 2]])
    changed = tokens.clone()
    changed[0, 4] = 9
    seen, handle = capture_hidden(model)
    model.encode_text(tokens)
    model.encode_text(changed)
    handle.remove()
    first, second = seen
    # Bidirectional: an earlier position sees the later change.
    assert not torch.allclose(first[:, :4], second[:, :4])


def test_contrastive_pass_ignores_padding():
    model = make_model()
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 9, 2, 0, 0]])
    base = model.encode_text(tokens)
    assert torch.allclose(base.norm(dim=-1), torch.ones(2, dtype=base.dtype))
    more_padding = torch.cat([tokens, torch.zeros(2, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model.encode_text(more_padding), base)
    # Whatever sits in padded slots is ignored when the mask says so.
    garbage = tokens.clone()
    garbage[1, 3:] = torch.tensor([11, 12])
    torch.testing.assert_close(model.encode_text(garbage, tokens != 0), base)
    # The second text alone gives the same embedding as inside the batch.
    torch.testing.assert_close(model.encode_text(tokens[1:, :3]), base[1:])


def test_contrastive_pass_never_reads_the_image():
    model = make_model()
    calls = []
    for layer in model.cross.values():
        layer.register_forward_hook(lambda m, i, o: calls.append(1))
    tokens = torch.tensor([[1, 5, 6, 2]])
    model.encode_text(tokens)
    assert calls == []  # no cross-attention layer ran
    x = images(1).requires_grad_(True)
    out_a = model(x, tokens, tokens[:, :-1])
    out_b = model(images(1, seed=1), tokens, tokens[:, :-1])
    torch.testing.assert_close(out_a.text_features, out_b.text_features)
    assert not torch.allclose(out_a.caption_logits, out_b.caption_logits)
    (grad,) = torch.autograd.grad(out_a.text_features.sum(), x, allow_unused=True)
    assert grad is None


def test_encode_text_errors():
    model = make_model()
    with pytest.raises(ValueError, match="at least one non-padding token"):
        model.encode_text(torch.tensor([[1, 5], [0, 0]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.encode_text(torch.tensor([[1, 40]]))
    model.setup_caches(1, 8)
    with pytest.raises(ValueError, match="remove_caches"):
        model.encode_text(torch.tensor([[1, 5]]))


# -- generative pass ----------------------------------------------------------------------------
def test_caption_pass_is_causal():
    model = make_model()
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9]])
    changed = tokens.clone()
    changed[0, 3] = 20
    x = images(1)
    a = model.caption_logits(model.image_tokens(x), tokens)
    b = model.caption_logits(model.image_tokens(x), changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # positions before the change: identical
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_caption_pass_reads_the_image_only_through_cross_layers():
    model = make_model()
    tokens = torch.tensor([[1, 5, 6, 7]])
    tok_a, tok_b = model.image_tokens(images(1)), model.image_tokens(images(1, seed=3))
    assert not torch.allclose(
        model.caption_logits(tok_a, tokens), model.caption_logits(tok_b, tokens)
    )
    # Precomputed keys/values give the same logits as image tokens.
    torch.testing.assert_close(
        model.caption_logits(model.image_kv(tok_a), tokens), model.caption_logits(tok_a, tokens)
    )
    blind = make_model(dataclasses.replace(CONFIG, cross_attn_layers=()))
    torch.testing.assert_close(
        blind.caption_logits(tok_a, tokens), blind.caption_logits(tok_b, tokens)
    )


def test_forward_order_of_passes_does_not_matter():
    model = make_model()
    x, text, cap = images(2), torch.tensor([[1, 5, 2], [1, 6, 2]]), torch.tensor([[1, 5], [1, 7]])
    a = model(x, text, cap, contrastive_first=True)
    b = model(x, text, cap, contrastive_first=False)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)


def test_logit_scale_is_clamped():
    model = make_model()
    assert float(model.logit_scale_value().detach()) == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.logit_scale_value().detach()) == pytest.approx(100.0)
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    assert float(model.logit_scale_value().detach()) == pytest.approx(1.0)


def test_save_and_reload(tmp_path):
    model = make_model().float()
    save_pretrained(model, tmp_path)
    again = load_pretrained(tmp_path, MaMMUT)
    x, tokens = images(1).float(), torch.tensor([[1, 5, 6]])
    torch.testing.assert_close(
        again.caption_logits(again.image_tokens(x), tokens),
        model.caption_logits(model.image_tokens(x), tokens),
    )
