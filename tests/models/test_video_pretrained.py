"""MaMMUTVideo through the model registry (hash-verified save/load) and started from an image model."""

from __future__ import annotations

import json

import pytest
import torch

from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.pretrained import load_pretrained, save_pretrained
from multitower.models.video import (
    MaMMUTVideo,
    MaMMUTVideoConfig,
    TubeSpec,
    VideoConfig,
    tube_tokens,
)
from multitower.models.vit import ViTConfig

VISION = ViTConfig(image_size=16, patch_size=4, d_model=24, num_layers=1, num_heads=2)
CONFIG = MaMMUTConfig(
    vocab_size=30, d_model=32, num_layers=2, num_heads=2, vision=VISION, embed_dim=16,
    max_seq_len=16,
)  # fmt: skip
TUBES = (TubeSpec((2, 8, 8), (2, 8, 8)), TubeSpec((1, 4, 4), (4, 4, 4), (1, 0, 0)))


def trained_image_model(seed: int = 0) -> MaMMUT:
    """An image MaMMUT whose weights are far from their initialisation."""
    torch.manual_seed(seed)
    model = MaMMUT(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize(
    "video",
    [
        VideoConfig(encoder="tubes", num_frames=4, tubes=TUBES),
        VideoConfig(encoder="tubes", num_frames=4, tubes=TUBES, tube_kernels="learned"),
        VideoConfig(encoder="frames", num_frames=3),
    ],
)
def test_save_and_load_round_trip(tmp_path, video):
    model = MaMMUTVideo.wrap(trained_image_model(), video).eval()
    if video.tube_kernels == "learned":  # trained kernels, unlike any inflated one
        with torch.no_grad():
            for kernel in model.encoder.kernels:
                kernel.add_(torch.randn_like(kernel) * 0.1)
    save_pretrained(model, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "MaMMUTVideo"
    assert saved["video"]["num_frames"] == video.num_frames
    loaded = load_pretrained(tmp_path, MaMMUTVideo).eval()
    assert loaded.config == model.config  # the tube list included
    for (name, a), (other, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == other and torch.equal(a, b), name
    clip = torch.randn(2, video.num_frames, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.video_tokens(clip), loaded.video_tokens(clip))
    # an image checkpoint is refused by name, and a changed file by its hash
    with pytest.raises(ValueError, match="expected 'MaMMUT'"):
        load_pretrained(tmp_path, MaMMUT)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors.*(hash|SHA)"):
        load_pretrained(tmp_path, MaMMUTVideo)


def test_from_image_model_copies_every_weight_and_reproduces_image_patches():
    image = trained_image_model()
    before = {k: v.clone() for k, v in image.state_dict().items()}
    video = MaMMUTVideo.from_image_model(image, VideoConfig(num_frames=4, tubes=TUBES))
    for name, value in image.state_dict().items():
        assert torch.equal(video.state_dict()[f"mammut.{name}"], value), name
    # a copy: training the video model leaves the image model as it was
    with torch.no_grad():
        video.mammut.vision.patch_embed.weight.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in image.state_dict().items())

    patch = TubeSpec((1, 4, 4), (1, 4, 4))
    video = MaMMUTVideo.from_image_model(image, VideoConfig(num_frames=1, tubes=(patch,)))
    frame = torch.randn(3, 3, 16, 16)
    embed = video.mammut.vision.patch_embed
    with torch.no_grad():
        ours = tube_tokens(frame.unsqueeze(1), embed.weight, embed.bias, (patch,))  # (3, 16, 24)
        theirs = image.vision.patch_embed(frame).flatten(2).transpose(1, 2)  # (3, 16, 24)
    assert torch.equal(ours, theirs)
    # the decoder reads video tokens with the image model's weights
    tokens = torch.randn(3, 5, 24)
    text = torch.randint(3, 30, (3, 6))
    with torch.no_grad():
        assert torch.equal(video.caption_logits(tokens, text), image.caption_logits(tokens, text))
        assert torch.equal(video.encode_text(text), image.encode_text(text))


def test_config_refuses_a_tube_that_does_not_fit_and_a_foreign_mammut():
    with pytest.raises(ValueError, match="needs at least 20 pixels along y"):
        MaMMUTVideoConfig(
            CONFIG, VideoConfig(num_frames=2, tubes=(TubeSpec((1, 20, 4), (1, 4, 4)),))
        )
    other = MaMMUT(
        MaMMUTConfig(vocab_size=31, d_model=32, num_layers=2, num_heads=2, vision=VISION)
    )
    with pytest.raises(ValueError, match="another config"):
        MaMMUTVideo(MaMMUTVideoConfig(CONFIG), mammut=other)
