"""MaMMUT on video: sparse video tubes through the same ViT (spec, "Video"; TubeViT arXiv 2212.03229).

Two ways to turn a clip ``(B, F, C, H, W)`` into tokens for the text decoder,
both through the image ViT of a :class:`~multitower.models.mammut.MaMMUT`::

    tubes  (the whole clip through the ViT once)
      clip -> for each TubeSpec: strided 3-D conv with a kernel derived from the
              ViT's 2-D patch embedding                       (B, n_tube, D)
           -> concatenate the tubes                           (B, N, D), N = sum of n_tube
           -> + fixed sin/cos positions at the tube centres in (t, y, x)
           -> ViT blocks + final norm, ONE sequence per clip  (B, N, D)

    frames (the baseline: every frame through the ViT on its own)
      clip -> ViT patch embedding of each frame               (B * F, n, D), n = (S / p)^2
           -> + the same sin/cos positions (the 2-D tube at every frame)
           -> ViT blocks + final norm, one sequence per FRAME (B * F, n, D)
           -> concatenate the frames                          (B, F * n, D)

The tube kernels have no parameters of their own: at every forward they are
computed from the ViT's ``patch_embed`` (``(D, C, p, p)`` weight and its bias),
so an image-trained ViT encodes clips without re-initialising anything and
training on video updates the image patch embedding. :func:`tube_kernel` resizes
the 2-D kernel to the tube's ``(h, w)`` (bilinear, antialiased when shrinking),
rescales it by ``p^2 / (h w)``, shifts it so its sum over pixels is exactly the
2-D kernel's, and spreads it evenly over ``t`` frames
(divided by ``t``), so a clip of one constant colour gives the same token from
every tube as from the image patch. A ``1 x p x p`` tube at stride ``p`` is the
image patching exactly.

Neither encoder uses the ViT's learned 2-D position embedding: video tokens get
fixed sin/cos positions at their centres (:func:`sincos_positions`), as TubeViT.
For retrieval the video embedding is the mean of the tokens, projected
(:meth:`MaMMUTVideo.encode_video`, the same pooling as images); captioning and
QA cross-attend to all of them through the unchanged decoder, so
:mod:`multitower.generation.captioning` decodes video as it decodes images
(pass ``model.mammut`` and ``model.video_tokens(clip)``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from multitower.models.mammut import ImageKV, MaMMUT, MaMMUTConfig, MaMMUTOutput
from multitower.models.video_config import (
    TUBEVIT_TUBES,
    VIDEO_ENCODERS,
    TubeSpec,
    VideoConfig,
    default_tubes,
    tube_token_count,
)
from multitower.models.vit import ViT, ViTConfig

__all__ = [
    "TUBEVIT_TUBES",
    "VIDEO_ENCODERS",
    "FrameVideoEncoder",
    "MaMMUTVideo",
    "MaMMUTVideoConfig",
    "TubeSpec",
    "TubeVideoEncoder",
    "VideoConfig",
    "check_video",
    "default_tubes",
    "sincos_positions",
    "tube_centres",
    "tube_kernel",
    "tube_token_count",
    "tube_tokens",
]


def check_video(video: torch.Tensor, config: ViTConfig) -> None:
    """Raise a clear ``ValueError`` unless ``video`` is a float ``(B, F, C, S, S)`` clip batch."""
    expected = (config.channels, config.image_size, config.image_size)
    if video.dim() != 5:
        raise ValueError(
            f"video must have shape (B, F, {', '.join(map(str, expected))}) "
            f"(batch, frames, channels, height, width), got {tuple(video.shape)}"
        )
    if video.shape[1] == 0:
        raise ValueError(f"video has zero frames: shape {tuple(video.shape)}")
    if tuple(video.shape[2:]) != expected:
        raise ValueError(
            f"video frames must be (C, H, W) = {expected} for this ViT, got "
            f"{tuple(video.shape[2:])} (video shape {tuple(video.shape)})"
        )
    if not video.is_floating_point():
        raise ValueError(f"video must hold float pixels, got {video.dtype}")


def tube_kernel(weight: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """A 3-D tube kernel derived from a 2-D patch-embedding kernel.

    Args:
        weight: ``(D, C, p_h, p_w)`` Conv2d weight of the image patch embedding.
        kernel: the tube's ``(t, h, w)``.

    Returns:
        ``(D, C, t, h, w)``: the weight resized to ``(h, w)`` (bilinear), scaled by
        ``p_h p_w / (h w)`` and shifted so that its sum over pixels equals the
        2-D kernel's exactly, then repeated over ``t``
        frames and divided by ``t``. ``(1, p_h, p_w)`` returns the weight itself.
    """
    kt, kh, kw = (int(k) for k in kernel)
    _, _, ph, pw = weight.shape
    w = weight
    if (kh, kw) != (ph, pw):
        w = F.interpolate(w, size=(kh, kw), mode="bilinear", align_corners=False, antialias=True)
        w = w * (ph * pw / (kh * kw))  # (D, C, h, w)
        # Interpolation keeps the sum over pixels only roughly; shift every pixel
        # by the same amount so it is kept exactly (a flat colour reads the same).
        gap = weight.sum(dim=(2, 3), keepdim=True) - w.sum(dim=(2, 3), keepdim=True)
        w = w + gap / (kh * kw)
    w = w.unsqueeze(2)  # (D, C, 1, h, w)
    if kt == 1:
        return w
    return w.expand(-1, -1, kt, -1, -1) / kt  # (D, C, t, h, w)


def tube_centres(tube: TubeSpec, clip: Sequence[int]) -> torch.Tensor:
    """``(n_t * n_y * n_x, 3)`` float64 centres ``(t, y, x)`` of the tube's boxes, t-major order.

    Along each axis the centre of box ``i`` is ``offset + i * stride + (kernel - 1) / 2``
    (frames, pixels, pixels).
    """
    n = tube.grid(clip)
    axes = [
        o + torch.arange(count, dtype=torch.float64) * s + (k - 1) / 2
        for count, k, s, o in zip(n, tube.kernel, tube.stride, tube.offset)
    ]
    t, y, x = torch.meshgrid(*axes, indexing="ij")  # each (n_t, n_y, n_x)
    return torch.stack([t, y, x], dim=-1).reshape(-1, 3)


def sincos_positions(centres: torch.Tensor, dim: int, *, patch_size: int) -> torch.Tensor:
    """Fixed sin/cos embeddings ``(N, dim)`` of 3-D centres ``(N, 3)`` = ``(t, y, x)``.

    ``t`` is measured in frames, ``y`` and ``x`` in patches (pixels / ``patch_size``).
    Each axis gets ``f = dim // 6`` frequencies ``omega_j = 10000^(-j / f)`` and
    contributes ``[sin(c omega), cos(c omega)]`` (``2 f`` dims), in the order t, y, x;
    the ``dim - 6 f`` dims left over are zero.

    Raises:
        ValueError: ``dim < 6``.
    """
    if dim < 6:
        raise ValueError(f"sin/cos positions over (t, y, x) need dim >= 6, got {dim}")
    f = dim // 6
    coords = centres.to(torch.float64) / torch.tensor([1.0, patch_size, patch_size])  # (N, 3)
    omega = 10000.0 ** (-torch.arange(f, dtype=torch.float64) / f)  # (f,)
    parts = []
    for axis in range(3):
        angles = coords[:, axis : axis + 1] * omega  # (N, f)
        parts += [angles.sin(), angles.cos()]
    out = torch.cat(parts, dim=1)  # (N, 6 f)
    return F.pad(out, (0, dim - 6 * f))  # (N, dim)


def tube_tokens(
    video: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tubes: Sequence[TubeSpec],
    *,
    kernels: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Project every tube of a clip batch to tokens (no positions yet).

    Args:
        video: ``(B, F, C, H, W)``.
        weight: ``(D, C, p, p)`` image patch-embedding weight; bias ``(D,)`` or None.
        tubes: the tube shapes.
        kernels: one ``(D, C, t, h, w)`` kernel per tube (learned kernels); None:
            each is :func:`tube_kernel` of ``weight``.

    Returns:
        ``(B, N, D)``, tubes in order, each tube's boxes t-major then y then x
        (the order of :func:`tube_centres`).

    Raises:
        ValueError: a tube does not fit in the clip (the message names it).
    """
    B, n_frames, C, H, W = video.shape
    video = video.to(weight.dtype)
    out = []
    for i, tube in enumerate(tubes):
        kernel = tube_kernel(weight, tube.kernel) if kernels is None else kernels[i]
        n_t, n_y, n_x = tube.grid((n_frames, H, W))
        (kt, _, _), (st, sy, sx), (ot, oy, ox) = tube.kernel, tube.stride, tube.offset
        if kt == 1:
            # One frame per box: a plain 2-D patching of the frames it visits.
            frames = video[:, ot : ot + (n_t - 1) * st + 1 : st]  # (B, n_t, C, H, W)
            frames = frames.reshape(B * n_t, C, H, W)[:, :, oy:, ox:]
            w = kernel[:, :, 0].to(video.dtype)  # (D, C, h, w)
            x = F.conv2d(frames, w, bias, stride=(sy, sx))  # (B * n_t, D, n_y, n_x)
            x = x.reshape(B, n_t, -1, n_y, n_x).permute(0, 1, 3, 4, 2)  # (B, n_t, n_y, n_x, D)
            out.append(x.reshape(B, n_t * n_y * n_x, -1))
        else:
            clip = video[:, ot:, :, oy:, ox:].permute(0, 2, 1, 3, 4)  # (B, C, F', H', W')
            x = F.conv3d(
                clip, kernel.to(video.dtype), bias, stride=tube.stride
            )  # (B, D, n_t, n_y, n_x)
            out.append(x.flatten(2).transpose(1, 2))  # (B, n, D)
    return torch.cat(out, dim=1)  # (B, N, D)


def _tube_positions(
    tubes: Sequence[TubeSpec], clip: Sequence[int], dim: int, patch_size: int, like: torch.Tensor
) -> torch.Tensor:
    centres = torch.cat([tube_centres(t, clip) for t in tubes])  # (N, 3)
    return sincos_positions(centres, dim, patch_size=patch_size).to(like)  # (N, D)


class TubeVideoEncoder(nn.Module):
    """Sparse tubes: ``(B, F, C, S, S)`` -> ``(B, N, D)``, one ViT sequence per clip.

    With inflated kernels it holds no parameters: the kernels come from the ViT
    passed to :meth:`forward`. With ``learned_from`` (a ViT) every tube gets a
    kernel of its own, initialised by :func:`tube_kernel` from that ViT's patch
    embedding (so before training it computes exactly what the inflated one does).

    Args:
        tubes: the tube shapes (see :func:`default_tubes`).
        learned_from: the ViT whose patch embedding initialises learned kernels;
            None: inflated kernels.
    """

    def __init__(self, tubes: Sequence[TubeSpec], learned_from: ViT | None = None) -> None:
        super().__init__()
        if not tubes:
            raise ValueError("TubeVideoEncoder needs at least one tube")
        self.tubes = tuple(tubes)
        self.kernels: nn.ParameterList | None = None
        if learned_from is not None:
            weight = learned_from.patch_embed.weight.detach()
            self.kernels = nn.ParameterList(
                nn.Parameter(tube_kernel(weight, tube.kernel).clone()) for tube in self.tubes
            )

    def num_tokens(self, clip: Sequence[int]) -> int:
        """Tokens per clip of ``(F, H, W)``: the sum over tubes of ``n_t n_y n_x``."""
        return tube_token_count(self.tubes, clip)

    def forward(self, vit: ViT, video: torch.Tensor) -> torch.Tensor:
        check_video(video, vit.config)
        clip = tuple(video.shape[1:2]) + tuple(video.shape[3:])  # (F, H, W)
        embed = vit.patch_embed
        x = tube_tokens(video, embed.weight, embed.bias, self.tubes, kernels=self.kernels)
        x = x + _tube_positions(self.tubes, clip, x.shape[-1], vit.config.patch_size, x)
        return vit.encode_tokens(x)  # (B, N, D): the whole clip in one sequence


class FrameVideoEncoder(nn.Module):
    """Per-frame baseline: ``(B, F, C, S, S)`` -> ``(B, F * n, D)``, one ViT sequence per frame.

    Every frame is patched by the ViT's own patch embedding and encoded on its
    own (attention never crosses frames); the frames' tokens are concatenated in
    time order. Positions are the tube encoder's sin/cos at the patch centres
    ``(t, y, x)``, so the decoder can tell the frames apart.
    """

    def num_tokens(self, clip: Sequence[int], patch_size: int) -> int:
        n_frames, height, width = clip
        return n_frames * (height // patch_size) * (width // patch_size)

    def forward(self, vit: ViT, video: torch.Tensor) -> torch.Tensor:
        check_video(video, vit.config)
        B, n_frames, C, H, W = video.shape
        p = vit.config.patch_size
        frames = video.reshape(B * n_frames, C, H, W).to(vit.patch_embed.weight.dtype)
        x = vit.patch_embed(frames).flatten(2).transpose(1, 2)  # (B * F, n, D)
        n, D = x.shape[1], x.shape[2]
        patch = TubeSpec((1, p, p), (1, p, p))
        positions = _tube_positions((patch,), (n_frames, H, W), D, p, x)  # (F * n, D)
        x = x + positions.reshape(1, n_frames, n, D).expand(B, -1, -1, -1).reshape(-1, n, D)
        x = vit.encode_tokens(x)  # (B * F, n, D): every frame its own sequence
        return x.reshape(B, n_frames * n, D)


@dataclass(frozen=True)
class MaMMUTVideoConfig:
    """A MaMMUT model reading clips: the image-text model and how clips become tokens.

    Args:
        mammut: the :class:`MaMMUTConfig` of the image-text model (its ViT encodes clips).
        video: which encoder and how many frames (:class:`VideoConfig`).

    Raises:
        ValueError: a configured tube does not fit in ``num_frames x S x S``.
    """

    mammut: MaMMUTConfig
    video: VideoConfig = field(default_factory=VideoConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.mammut, MaMMUTConfig):
            raise ValueError(
                f"MaMMUTVideoConfig.mammut must be a MaMMUTConfig, got {self.mammut!r}"
            )
        if not isinstance(self.video, VideoConfig):
            raise ValueError(f"MaMMUTVideoConfig.video must be a VideoConfig, got {self.video!r}")
        if self.video.encoder == "tubes":
            vision = self.mammut.vision
            clip = (self.video.num_frames, vision.image_size, vision.image_size)
            tube_token_count(self.video.tube_list(vision.patch_size), clip)  # raises if no fit


class MaMMUTVideo(nn.Module):
    """A MaMMUT model reading clips: a video encoder in front of the unchanged image-text model.

    ``MaMMUTVideo(config)`` builds a fresh MaMMUT (this is what
    :func:`~multitower.models.pretrained.load_pretrained` calls);
    :meth:`from_image_model` starts from a trained one. The state dict is the
    MaMMUT's under ``mammut.``, plus ``encoder.kernels.*`` with learned tube kernels
    (``VideoConfig.tube_kernels="learned"``, initialised from this MaMMUT's patch
    embedding); otherwise the video encoders hold no parameters.

    Args:
        config: the image-text model and the video encoder.
        mammut: an existing MaMMUT to wrap (not copied) instead of a fresh one; its
            config must be ``config.mammut``.

    Raises:
        ValueError: ``mammut`` has another config.
    """

    def __init__(self, config: MaMMUTVideoConfig, *, mammut: MaMMUT | None = None) -> None:
        super().__init__()
        if mammut is not None and mammut.config != config.mammut:
            raise ValueError("MaMMUTVideo: the MaMMUT passed has another config than config.mammut")
        self.config = config
        self.mammut = mammut if mammut is not None else MaMMUT(config.mammut)
        video = config.video
        vision = config.mammut.vision
        self.clip_shape = (video.num_frames, vision.image_size, vision.image_size)
        self.encoder: TubeVideoEncoder | FrameVideoEncoder
        if video.encoder == "tubes":
            learned = self.mammut.vision if video.tube_kernels == "learned" else None
            self.encoder = TubeVideoEncoder(video.tube_list(vision.patch_size), learned)
        else:
            self.encoder = FrameVideoEncoder()

    @classmethod
    def wrap(cls, mammut: MaMMUT, video: VideoConfig) -> MaMMUTVideo:
        """Read clips with ``mammut`` itself (shared, not copied)."""
        return cls(MaMMUTVideoConfig(mammut.config, video), mammut=mammut)

    @classmethod
    def from_image_model(cls, mammut: MaMMUT, video: VideoConfig) -> MaMMUTVideo:
        """A video model starting from a copy of a (trained) image MaMMUT.

        Every weight is copied: ViT, decoder, cross-attention, projections and
        temperature. The tube kernels are inflated from the copied ViT patch
        embedding (:func:`tube_kernel`; at every forward, or once for learned
        kernels), so nothing is re-initialised; a one-frame clip through the ``1 x p x p`` tube gives
        exactly the image model's patch tokens. The image model is left untouched.
        """
        return cls.wrap(copy.deepcopy(mammut), video)

    @property
    def video_config(self) -> VideoConfig:
        """The video encoder's config (``config.video``)."""
        return self.config.video

    @property
    def num_tokens(self) -> int:
        """Video tokens per clip of ``num_frames`` frames."""
        if isinstance(self.encoder, TubeVideoEncoder):
            return self.encoder.num_tokens(self.clip_shape)
        return self.encoder.num_tokens(self.clip_shape, self.mammut.config.vision.patch_size)

    def video_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, F, C, S, S)`` clips -> ``(B, N, Dv)`` tokens for cross-attention."""
        return self.encoder(self.mammut.vision, video)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, F, C, S, S)`` -> ``(B, E)`` L2-normalised embeddings: mean of the tokens, projected."""
        return self.mammut.pool_image(self.video_tokens(video))

    def encode_text(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The contrastive text pass of the shared decoder (:meth:`MaMMUT.encode_text`)."""
        return self.mammut.encode_text(tokens, padding_mask)

    def caption_logits(
        self,
        video: torch.Tensor | ImageKV,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generative pass on video tokens ``(B, N, Dv)`` (from :meth:`video_tokens`) or their KV."""
        return self.mammut.caption_logits(video, tokens, positions=positions)

    def forward(
        self,
        video: torch.Tensor,
        text_tokens: torch.Tensor,
        caption_tokens: torch.Tensor,
        *,
        text_padding_mask: torch.Tensor | None = None,
        contrastive_first: bool = True,
    ) -> MaMMUTOutput:
        """Both training passes over a batch of clips; the video encoder runs once.

        Args: as :meth:`MaMMUT.forward`, with ``video`` ``(B, F, C, S, S)`` for images.
        """
        return self.mammut.two_passes(
            self.video_tokens(video),  # (B, N, Dv)
            text_tokens,
            caption_tokens,
            text_padding_mask,
            contrastive_first=contrastive_first,
        )
