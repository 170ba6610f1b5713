"""Configs of MaMMUT's video encoders: sparse video tubes (TubeViT, arXiv 2212.03229) or per frame.

Torch-free, so a bad video config is reported before torch loads. The model
code is :mod:`multitower.models.video`, which re-exports these names.

A clip is ``F`` frames of ``H x W`` pixels. A :class:`TubeSpec` cuts a regular
grid of 3-D boxes ("tubes") from it: along each axis ``a`` in ``(t, y, x)``
with clip length ``L``, kernel ``k``, stride ``s`` and offset ``o`` it places

    n_a = floor((L - o - k) / s) + 1          (needs L - o >= k)

boxes, starting at ``o, o + s, o + 2s, ...``; the tube gives ``n_t * n_y * n_x``
tokens, and a list of tubes gives the sum over its tubes. The centre of box
``i`` along an axis is ``o + i * s + (k - 1) / 2`` (frames for ``t``, pixels
for ``y`` and ``x``); the fixed sin/cos positions are computed there.

Worked example, TubeViT's four tubes on a ``32 x 224 x 224`` clip
(:data:`TUBEVIT_TUBES`)::

    8x8x8   stride (16,32,32)             n = 2 * 7 * 7   =  98
    16x4x4  stride (6,32,32)  off (4,8,8) n = 3 * 7 * 7   = 147
    4x12x12 stride (16,32,32) off (0,16,16) n = 2 * 7 * 7 =  98
    1x16x16 stride (32,16,16)             n = 1 * 14 * 14 = 196
                                                    total 539

(The spec quotes 559 for this layout; the formula above, which is what a
strided 3-D convolution computes, gives 539.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Triple = tuple[int, int, int]
AXES = ("t", "y", "x")
VIDEO_ENCODERS = ("tubes", "frames")
TUBE_KERNELS = ("inflated", "learned")


def _triple(value: object, name: str, *, minimum: int) -> Triple:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"TubeSpec.{name} must be three ints (t, y, x), got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        raise ValueError(
            f"TubeSpec.{name} must be three ints >= {minimum} (t, y, x), got {value!r}"
        )
    return (int(value[0]), int(value[1]), int(value[2]))


@dataclass(frozen=True)
class TubeSpec:
    """One tube shape: a strided grid of ``kernel``-sized boxes over the clip.

    Args:
        kernel: box size ``(t, y, x)`` in frames and pixels.
        stride: step between boxes ``(t, y, x)``.
        offset: where the first box starts ``(t, y, x)``.
    """

    kernel: Triple
    stride: Triple
    offset: Triple = (0, 0, 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _triple(self.kernel, "kernel", minimum=1))
        object.__setattr__(self, "stride", _triple(self.stride, "stride", minimum=1))
        object.__setattr__(self, "offset", _triple(self.offset, "offset", minimum=0))

    def grid(self, clip: Sequence[int]) -> Triple:
        """Boxes per axis ``(n_t, n_y, n_x)`` on a clip of ``(F, H, W)``.

        Raises:
            ValueError: the clip is too short or too small for one box along an
                axis (the message names the axis, the tube and the clip size).
        """
        counts = []
        for axis, length, k, s, o in zip(AXES, clip, self.kernel, self.stride, self.offset):
            if length - o < k:
                unit = "frames" if axis == "t" else "pixels"
                raise ValueError(
                    f"tube kernel={self.kernel} offset={self.offset} needs at least {o + k} "
                    f"{unit} along {axis}, but the clip {tuple(clip)} (F, H, W) has {length}"
                )
            counts.append((length - o - k) // s + 1)
        return (counts[0], counts[1], counts[2])

    def num_tokens(self, clip: Sequence[int]) -> int:
        """``n_t * n_y * n_x`` tokens of this tube on a ``(F, H, W)`` clip."""
        n_t, n_y, n_x = self.grid(clip)
        return n_t * n_y * n_x

    def min_frames(self) -> int:
        """The fewest frames this tube fits in: ``offset_t + kernel_t``."""
        return self.offset[0] + self.kernel[0]


def tube_token_count(tubes: Sequence[TubeSpec], clip: Sequence[int]) -> int:
    """Tokens of a list of tubes on a ``(F, H, W)`` clip: the sum of each tube's ``n_t n_y n_x``."""
    return sum(tube.num_tokens(clip) for tube in tubes)


# TubeViT's four tubes for 32 x 224 x 224 clips and a 16-pixel patch.
TUBEVIT_TUBES: tuple[TubeSpec, ...] = (
    TubeSpec((8, 8, 8), (16, 32, 32)),
    TubeSpec((16, 4, 4), (6, 32, 32), (4, 8, 8)),
    TubeSpec((4, 12, 12), (16, 32, 32), (0, 16, 16)),
    TubeSpec((1, 16, 16), (32, 16, 16)),
)
_TUBEVIT_FRAMES = 32
_TUBEVIT_PATCH = 16


def _scaled(value: int, factor: float, minimum: int) -> int:
    return max(minimum, math.floor(value * factor + 0.5))


def default_tubes(num_frames: int, patch_size: int) -> tuple[TubeSpec, ...]:
    """TubeViT's four tubes scaled to a clip of ``num_frames`` and a ViT with ``patch_size``.

    Spatial sizes are scaled by ``patch_size / 16`` (so the last tube is exactly
    the ViT's patch, ``1 x p x p`` at stride ``p``), temporal sizes by
    ``num_frames / 32``; each is rounded half up, kernels and strides to at least 1.
    """
    if num_frames < 1 or patch_size < 1:
        raise ValueError(
            f"default_tubes needs num_frames >= 1 and patch_size >= 1, got {num_frames}, {patch_size}"
        )
    ft, fs = num_frames / _TUBEVIT_FRAMES, patch_size / _TUBEVIT_PATCH
    factors = (ft, fs, fs)
    out = []
    for tube in TUBEVIT_TUBES:
        kernel = tuple(_scaled(v, f, 1) for v, f in zip(tube.kernel, factors))
        stride = tuple(_scaled(v, f, 1) for v, f in zip(tube.stride, factors))
        offset = tuple(_scaled(v, f, 0) for v, f in zip(tube.offset, factors))
        out.append(TubeSpec(kernel, stride, offset))  # type: ignore[arg-type]
    return tuple(out)


@dataclass(frozen=True)
class VideoConfig:
    """How MaMMUT turns a clip into tokens for the decoder.

    Args:
        encoder: ``"tubes"`` (sparse tubes, the whole clip through the ViT once)
            or ``"frames"`` (the baseline: every frame through the ViT on its own,
            tokens concatenated).
        num_frames: frames per clip ``F`` (the data samples this many; the
            default tubes are scaled to it).
        tubes: the tube list; ``None`` = :func:`default_tubes` for ``num_frames``
            and the ViT's patch size. Ignored by ``"frames"``.
        tube_kernels: ``"inflated"``: every tube's kernel is computed from the
            ViT's 2-D patch embedding at each forward (no parameters of its own;
            spread evenly over its ``t`` frames, so a tube does not see the order
            of the frames it spans); ``"learned"``: each tube has its own kernel,
            initialised that way and then trained, as in TubeViT (it can learn
            to weigh its frames differently, e.g. to see which way a shape moves).
    """

    encoder: str = "tubes"
    num_frames: int = 8
    tubes: tuple[TubeSpec, ...] | None = None
    tube_kernels: str = "inflated"

    def __post_init__(self) -> None:
        if self.encoder not in VIDEO_ENCODERS:
            raise ValueError(
                f"VideoConfig.encoder must be one of {VIDEO_ENCODERS}, got {self.encoder!r}"
            )
        if self.tube_kernels not in TUBE_KERNELS:
            raise ValueError(
                f"VideoConfig.tube_kernels must be one of {TUBE_KERNELS}, got {self.tube_kernels!r}"
            )
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise ValueError(
                f"VideoConfig.num_frames must be a positive int, got {self.num_frames!r}"
            )
        if self.tubes is not None:
            tubes = tuple(self.tubes)
            if not tubes:
                raise ValueError("VideoConfig.tubes must hold at least one tube (or be null)")
            if not all(isinstance(t, TubeSpec) for t in tubes):
                raise ValueError(f"VideoConfig.tubes must be TubeSpec entries, got {tubes!r}")
            for i, tube in enumerate(tubes):
                if tube.min_frames() > self.num_frames:
                    raise ValueError(
                        f"VideoConfig.tubes[{i}] (kernel={tube.kernel}, offset={tube.offset}) "
                        f"needs {tube.min_frames()} frames but num_frames={self.num_frames}"
                    )
            object.__setattr__(self, "tubes", tubes)

    def tube_list(self, patch_size: int) -> tuple[TubeSpec, ...]:
        """The configured tubes, or the defaults for ``num_frames`` and ``patch_size``."""
        return self.tubes if self.tubes is not None else default_tubes(self.num_frames, patch_size)
