"""MaMMUT video: tube token counts and centres, the image special case, one ViT pass per clip,
video captioning/QA/retrieval through the unchanged decoder, and clear errors on bad clips."""

from __future__ import annotations

import math

import pytest
import torch

from multitower.config import ConfigError, build_dataclass
from multitower.generation.captioning import generate_beam, generate_greedy
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.video import (
    TUBEVIT_TUBES,
    FrameVideoEncoder,
    MaMMUTVideo,
    TubeSpec,
    TubeVideoEncoder,
    VideoConfig,
    default_tubes,
    sincos_positions,
    tube_centres,
    tube_kernel,
    tube_token_count,
    tube_tokens,
)
from multitower.models.vit import ViT, ViTConfig

VISION = ViTConfig(image_size=16, patch_size=4, d_model=24, num_layers=2, num_heads=2)
CONFIG = MaMMUTConfig(
    vocab_size=30, d_model=32, num_layers=4, num_heads=4, vision=VISION, embed_dim=16,
    max_seq_len=24, cross_attn_every=2,
)  # fmt: skip
PATCH = TubeSpec((1, 4, 4), (1, 4, 4))


def make_vit(seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    vit = ViT(VISION).double().eval()
    with torch.no_grad():
        for p in vit.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.15)
    return vit


def make_model(encoder: str = "tubes", num_frames: int = 8, seed: int = 1) -> MaMMUTVideo:
    torch.manual_seed(seed)
    mammut = MaMMUT(CONFIG).double().eval()
    with torch.no_grad():
        for p in mammut.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
        mammut.embed.weight[CONFIG.eos_id] *= 1.3
    return MaMMUTVideo.wrap(mammut, VideoConfig(encoder=encoder, num_frames=num_frames))


def clips(n: int, frames: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 3, 16, 16, generator=g).double()


# -- token counts and centres ---------------------------------------------------------------------
def test_tubevit_token_count_by_hand():
    # 32x224x224: n = floor((L - o - k) / s) + 1 per axis.
    #   8x8x8   s(16,32,32):            t (32-8)/16+1 = 2,  y/x (224-8)/32+1 = 7   ->  98
    #   16x4x4  s(6,32,32)  o(4,8,8):   t (32-4-16)/6+1 = 3, y/x (224-8-4)/32+1 = 7 -> 147
    #   4x12x12 s(16,32,32) o(0,16,16): t (32-4)/16+1 = 2, y/x (224-16-12)/32+1 = 7 ->  98
    #   1x16x16 s(32,16,16):            t (32-1)/32+1 = 1, y/x (224-16)/16+1 = 14   -> 196
    clip = (32, 224, 224)
    assert [t.grid(clip) for t in TUBEVIT_TUBES] == [(2, 7, 7), (3, 7, 7), (2, 7, 7), (1, 14, 14)]
    assert tube_token_count(TUBEVIT_TUBES, clip) == 98 + 147 + 98 + 196 == 539


def test_default_tubes_scale_tubevit_to_our_clips():
    tubes = default_tubes(8, 8)  # 8 frames, 8-pixel patches: temporal x 1/4, spatial x 1/2
    assert tubes[0] == TubeSpec((2, 4, 4), (4, 16, 16))
    assert tubes[1] == TubeSpec((4, 2, 2), (2, 16, 16), (1, 4, 4))  # stride 1.5 rounds up to 2
    assert tubes[2] == TubeSpec((1, 6, 6), (4, 16, 16), (0, 8, 8))
    assert tubes[3] == TubeSpec((1, 8, 8), (8, 8, 8))  # exactly the ViT's patch, frame 0 only
    # 8x64x64: 2*4*4 + 2*4*4 + 2*4*4 + 1*8*8
    assert tube_token_count(tubes, (8, 64, 64)) == 32 + 32 + 32 + 64
    assert default_tubes(32, 16) == TUBEVIT_TUBES


def test_tube_centres_by_hand():
    tube = TubeSpec((2, 3, 4), (3, 5, 6), (1, 0, 2))
    # clip (7, 9, 14): t starts 1, 4 (1+3+2 > 7 stops there? 4+2=6 <= 7 fits; 7+2 > 7) -> 2
    #                  y starts 0, 5 (5+3 = 8 <= 9)   -> 2 ; x starts 2, 8 (8+4 = 12 <= 14) -> 2
    assert tube.grid((7, 9, 14)) == (2, 2, 2)
    c = tube_centres(tube, (7, 9, 14))
    # centre = start + (k - 1) / 2: t 1.5, 4.5; y 1, 6; x 3.5, 9.5; t-major order
    expected = [
        (t, y, x) for t in (1.5, 4.5) for y in (1.0, 6.0) for x in (3.5, 9.5)
    ]  # fmt: skip
    assert c.tolist() == [list(e) for e in expected]


def test_sincos_positions_by_hand():
    centres = torch.tensor([[2.0, 8.0, 4.0]])
    pos = sincos_positions(centres, 14, patch_size=4)  # f = 2 frequencies, 2 zero dims at the end
    coords = (2.0, 2.0, 1.0)  # t in frames; y, x in patches
    expected = []
    for c in coords:
        freqs = [10000.0 ** (-j / 2) for j in range(2)]
        expected += [math.sin(c * w) for w in freqs] + [math.cos(c * w) for w in freqs]
    torch.testing.assert_close(pos[0, :12], torch.tensor(expected, dtype=torch.float64))
    assert pos[0, 12:].abs().sum() == 0
    with pytest.raises(ValueError, match="dim >= 6"):
        sincos_positions(centres, 5, patch_size=4)


def test_each_token_sees_its_own_box():
    """Moving one pixel changes exactly the tokens whose boxes contain it, at their centres."""
    vit = make_vit()
    tube = TubeSpec((2, 8, 8), (3, 8, 8), (1, 0, 0))
    video = clips(1, frames=8)
    base = tube_tokens(video, vit.patch_embed.weight, vit.patch_embed.bias, [tube])
    bumped = video.clone()
    bumped[0, 5, :, 10, 3] += 1.0  # frame 5, y 10, x 3: in the box starting t 4, y 8, x 0
    moved = (tube_tokens(bumped, vit.patch_embed.weight, None, [tube]) - base).abs().sum(-1)
    changed = (moved[0] > 1e-9).nonzero().flatten().tolist()
    centres = tube_centres(tube, (8, 16, 16))
    assert len(changed) == 1 and centres[changed[0]].tolist() == [4.5, 11.5, 3.5]


# -- the image special case and the kernels --------------------------------------------------------
def test_single_frame_with_the_2d_tube_is_the_image_patching_exactly():
    vit = make_vit()
    images = clips(3, frames=1)[:, 0]  # (B, 3, 16, 16)
    patches = vit.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, D)
    got = tube_tokens(images[:, None], vit.patch_embed.weight, vit.patch_embed.bias, [PATCH])
    assert torch.equal(got, patches)
    assert torch.equal(
        tube_kernel(vit.patch_embed.weight, (1, 4, 4))[:, :, 0], vit.patch_embed.weight
    )
    # The whole tube encoder is then the image ViT with the sin/cos positions in place of its own.
    centres = tube_centres(PATCH, (1, 16, 16))
    with torch.no_grad():
        vit.pos_embed.copy_(sincos_positions(centres, 24, patch_size=4)[None])
    torch.testing.assert_close(
        TubeVideoEncoder([PATCH])(vit, images[:, None]), vit(images), rtol=0, atol=1e-12
    )


def test_every_tube_gives_the_patch_token_on_a_constant_clip():
    """The derived kernels keep the 2-D kernel's sum, so a flat colour reads the same everywhere."""
    vit = make_vit()
    colour = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    video = colour.view(1, 1, 3, 1, 1).expand(1, 8, 3, 16, 16).contiguous()
    patch = tube_tokens(video[:, :1], vit.patch_embed.weight, vit.patch_embed.bias, [PATCH])[0, 0]
    tubes = (*default_tubes(8, 4), TubeSpec((3, 6, 3), (2, 5, 7)))
    tokens = tube_tokens(video, vit.patch_embed.weight, vit.patch_embed.bias, tubes)[0]
    torch.testing.assert_close(tokens, patch.expand_as(tokens), rtol=1e-9, atol=1e-9)


def test_tube_kernels_carry_gradient_to_the_image_patch_embedding():
    vit = make_vit()
    TubeVideoEncoder(default_tubes(8, 4))(vit, clips(2)).sum().backward()
    assert vit.patch_embed.weight.grad is not None and vit.patch_embed.weight.grad.abs().sum() > 0


# -- one ViT pass per clip ---------------------------------------------------------------------------
def count_trunk_calls(vit: ViT) -> tuple[list[tuple[int, ...]], object]:
    calls: list[tuple[int, ...]] = []
    handle = vit.blocks.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    return calls, handle


def test_tubes_run_the_vit_once_per_clip_and_frames_once_per_frame():
    vit = make_vit()
    video = clips(2, frames=8)
    calls, handle = count_trunk_calls(vit)
    tubes = default_tubes(8, 4)
    out = TubeVideoEncoder(tubes)(vit, video)
    n = tube_token_count(tubes, (8, 16, 16))
    assert calls == [(2, n, 24)] and out.shape == (2, n, 24)  # one call, one sequence per clip
    calls.clear()
    out = FrameVideoEncoder()(vit, video)
    assert calls == [(2 * 8, 16, 24)] and out.shape == (2, 8 * 16, 24)  # one sequence per frame
    handle.remove()


def test_frames_never_attend_across_frames_but_tubes_mix_the_clip():
    vit = make_vit()
    video = clips(1, frames=8)
    later = video.clone()
    later[:, 5] += 0.5
    frames = FrameVideoEncoder()
    moved = (frames(vit, later) - frames(vit, video)).abs().sum(-1).reshape(8, 16) > 1e-9
    assert moved[5].all() and not moved[torch.arange(8) != 5].any()
    tubes = TubeVideoEncoder(default_tubes(8, 4))
    assert ((tubes(vit, later) - tubes(vit, video)).abs().sum(-1) > 1e-9).all()


# -- bad clips -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 0, 3, 16, 16), "zero frames"),
        ((2, 8, 3, 12, 16), r"frames must be \(C, H, W\) = \(3, 16, 16\).*\(3, 12, 16\)"),
        ((2, 8, 1, 16, 16), r"\(3, 16, 16\)"),
        ((8, 3, 16, 16), r"\(B, F, 3, 16, 16\)"),
        (
            (2, 3, 3, 16, 16),
            r"kernel=\(4, 1, 1\).*needs at least 5 frames along t, but the clip \(3, 16, 16\)",
        ),
    ],
)
def test_bad_clips_give_clear_errors(shape, message):
    vit = make_vit()
    with pytest.raises(ValueError, match=message):
        TubeVideoEncoder(default_tubes(8, 4))(vit, torch.zeros(shape, dtype=torch.float64))


def test_integer_pixels_are_refused():
    with pytest.raises(ValueError, match="float pixels"):
        FrameVideoEncoder()(make_vit(), torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8))


def test_video_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"VideoConfig\.encoder"):
        VideoConfig(encoder="pixels")
    with pytest.raises(ValueError, match=r"VideoConfig\.num_frames"):
        VideoConfig(num_frames=0)
    with pytest.raises(ValueError, match=r"tubes\[0\].*needs 9 frames but num_frames=8"):
        VideoConfig(num_frames=8, tubes=(TubeSpec((8, 4, 4), (1, 4, 4), (1, 0, 0)),))
    with pytest.raises(ValueError, match=r"TubeSpec\.stride must be three ints >= 1"):
        TubeSpec((1, 4, 4), (0, 4, 4))
    with pytest.raises(ValueError, match=r"TubeSpec\.kernel must be three ints"):
        TubeSpec((4, 4), (1, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"needs at least 20 pixels along y"):
        MaMMUTVideo.wrap(
            MaMMUT(CONFIG), VideoConfig(num_frames=2, tubes=(TubeSpec((1, 20, 4), (1, 4, 4)),))
        )


def test_video_config_from_yaml_dict():
    raw = {
        "encoder": "tubes",
        "num_frames": 4,
        "tubes": [{"kernel": [2, 8, 8], "stride": [2, 8, 8]}],
    }
    config = build_dataclass(VideoConfig, raw, "video")
    assert config.tubes == (TubeSpec((2, 8, 8), (2, 8, 8)),)
    with pytest.raises(ConfigError, match="video"):
        build_dataclass(VideoConfig, {"num_frames": -1}, "video")


# -- MaMMUT on video: captioning, QA and retrieval through the same decoder ------------------------------
def test_the_video_model_adds_no_parameters():
    model = make_model()
    names = {n for n, _ in model.named_parameters()}
    assert names == {f"mammut.{n}" for n, _ in model.mammut.named_parameters()}


def test_learned_tube_kernels_start_as_the_inflated_ones_and_train_on_their_own():
    inflated = make_model()
    learned = MaMMUTVideo.wrap(
        inflated.mammut, VideoConfig(num_frames=8, tube_kernels="learned")
    ).eval()
    names = {n for n, _ in learned.named_parameters()} - {
        f"mammut.{n}" for n, _ in learned.mammut.named_parameters()
    }
    assert names == {f"encoder.kernels.{i}" for i in range(len(learned.encoder.tubes))}
    clip = clips(2)
    assert torch.equal(learned.video_tokens(clip), inflated.video_tokens(clip))
    learned.video_tokens(clip).square().sum().backward()
    assert all(k.grad is not None and k.grad.abs().sum() > 0 for k in learned.encoder.kernels)
    assert learned.mammut.vision.patch_embed.weight.grad is None  # the tubes no longer use it
    with torch.no_grad():  # a kernel of its own: weighing its frames apart changes the tokens
        learned.encoder.kernels[0][:, :, 0] *= 2.0
    assert not torch.equal(learned.video_tokens(clip), inflated.video_tokens(clip))
    with pytest.raises(ValueError, match=r"VideoConfig\.tube_kernels"):
        VideoConfig(tube_kernels="random")


@pytest.mark.parametrize("encoder", ["tubes", "frames"])
def test_video_captioning_cached_equals_uncached(encoder):
    model = make_model(encoder)
    prefixes = [[1], [1, 5, 6, 7], [1, 8]]  # a caption and two questions
    with torch.no_grad():
        tokens = model.video_tokens(clips(3))
    assert tokens.shape == (3, model.num_tokens, 24)
    greedy = generate_greedy(model.mammut, tokens, prefixes, max_new_tokens=12)
    assert greedy == generate_greedy(
        model.mammut, tokens, prefixes, max_new_tokens=12, use_cache=False
    )
    assert any(len(g) > 0 for g in greedy)
    beam = generate_beam(model.mammut, tokens, prefixes, beam_size=3, max_new_tokens=8)
    assert beam == generate_beam(
        model.mammut, tokens, prefixes, beam_size=3, max_new_tokens=8, use_cache=False
    )


def test_video_answers_depend_on_the_clip():
    model = make_model()
    with torch.no_grad():
        a = model.caption_logits(model.video_tokens(clips(2, seed=0)), torch.tensor([[1, 5]] * 2))
        b = model.caption_logits(model.video_tokens(clips(2, seed=3)), torch.tensor([[1, 5]] * 2))
    assert (a - b).abs().max() > 1e-6


def test_video_embedding_is_the_projected_mean_of_the_tokens():
    model = make_model()
    video = clips(2)
    with torch.no_grad():
        tokens = model.video_tokens(video)
        expected = torch.nn.functional.normalize(model.mammut.image_proj(tokens.mean(1)), dim=-1)
        got = model.encode_video(video)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2, dtype=torch.float64))


def test_video_forward_runs_the_encoder_once_and_matches_the_parts():
    model = make_model()
    video = clips(2)
    text = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    caption = torch.tensor([[1, 5, 6], [1, 7, 8]])
    calls, handle = count_trunk_calls(model.mammut.vision)
    with torch.no_grad():
        out = model(video, text, caption)
    handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        torch.testing.assert_close(out.image_features, model.encode_video(video))
        torch.testing.assert_close(out.text_features, model.encode_text(text))
        torch.testing.assert_close(
            out.caption_logits, model.caption_logits(model.video_tokens(video), caption)
        )
