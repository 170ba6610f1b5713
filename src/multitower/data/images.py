"""Images for the vision encoder: decoding and transforms.

Decoding turns any file Pillow can read, in any colour mode, into an RGB image
(alpha composited on white, 16-bit scaled rather than clipped, EXIF orientation
applied). :class:`ImageTransform` resizes the shorter side and center-crops with
bicubic filtering, then normalises into a ``(3, H, W)`` float tensor; at train
time it can take a random resized crop drawn from a seeded ``torch.Generator``.
Horizontal flips are off by default because captions and questions speak of
left and right.

Readers of real image-text data (COCO captions, WebDataset shards) live in
:mod:`multitower.data.image_readers`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from multitower.data.errors import BadRecordError

# The normalisation of CLIP / open_clip image towers (also what CoCa uses).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp")

ImageSource = str | Path | bytes | Image.Image

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_INT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# --------------------------------------------------------------------------- decoding


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB.

    Transparency (alpha channels, palette or single-colour ``transparency``) is
    composited on a white background. 16-bit grayscale (``I;16*``) is scaled by
    1/257 to 8 bits rather than clipped at 255; 32-bit integer (``I``) images are
    read as 16-bit when any value exceeds 255 and as 8-bit otherwise; float
    (``F``) images are read as [0, 1] when their maximum is at most 1 and as
    [0, 255] otherwise. Other modes (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``,
    ...) use Pillow's own conversion.

    Raises:
        ValueError: the mode has no conversion to RGB.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image.copy()
    if mode in _INT16_MODES or mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)  # (H, W)
        top = float(values.max()) if values.size else 0.0
        if mode in _INT16_MODES or (mode == "I" and top > 255):
            values = np.clip(values, 0, 65535) / 257.0
        elif mode == "F" and top <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray, gray, gray], axis=-1))  # (H, W, 3) uint8 -> RGB
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"cannot convert image mode {mode!r} to RGB: {exc}") from exc


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"


def open_image(source: ImageSource, *, min_size: int = 8, name: str | None = None) -> Image.Image:
    """Decode an image fully and return it as RGB, upright per its EXIF orientation.

    Args:
        source: a path, the encoded bytes of a file, or a Pillow image.
        min_size: the smallest accepted width and height in pixels.
        name: how to name the image in error messages (default: the path).

    Returns:
        An 8-bit RGB ``PIL.Image.Image`` (a new object; ``source`` is not changed).

    Raises:
        BadRecordError: the file is missing, unreadable, corrupt or truncated, its
            mode cannot be converted, or it is smaller than ``min_size`` on a side.
            The message names the image.
    """
    label = _source_name(source, name)
    try:
        if isinstance(source, Image.Image):
            source.load()
            rgb = to_rgb(ImageOps.exif_transpose(source))
        else:
            if isinstance(source, str | Path) and not Path(source).is_file():
                raise BadRecordError(f"{label}: image file does not exist")
            fp = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(fp) as opened:
                opened.load()  # decode now so truncation and corruption surface here
                rgb = to_rgb(ImageOps.exif_transpose(opened))
    except BadRecordError:
        raise
    except Exception as exc:  # any decoder failure is a bad record, not a crash
        raise BadRecordError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    width, height = rgb.size
    if min(width, height) < min_size:
        raise BadRecordError(
            f"{label}: image is {width}x{height} pixels, smaller than min_size={min_size} on a side"
        )
    return rgb


# ------------------------------------------------------------------------- transforms


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    """A uniform integer in [0, high)."""
    return int(torch.randint(0, high, (), generator=generator))


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """Draw a crop box ``(x0, y0, x1, y1)`` as torchvision's ``RandomResizedCrop`` does.

    The crop covers a fraction of the area drawn from ``scale`` with an aspect
    ratio (width / height) drawn log-uniformly from ``ratio``; after ten failed
    draws it falls back to the largest center crop whose ratio lies in ``ratio``.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            y0 = _randint(height - h + 1, generator)
            x0 = _randint(width - w + 1, generator)
            return x0, y0, x0 + w, y0 + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    x0, y0 = (width - w) // 2, (height - h) // 2
    return x0, y0, x0 + w, y0 + h


@dataclass(frozen=True)
class ImageTransform:
    """Decode, resize, crop and normalise an image into a ``(3, S, S)`` float tensor.

    Evaluation (the default): resize the shorter side to ``image_size`` and take
    the center square, in one bicubic resample of the center square of the input.
    Training (``train=True``): a random resized crop when ``crop_scale`` is set,
    and a horizontal flip with probability 1/2 when ``horizontal_flip`` is set;
    both draw from the ``torch.Generator`` passed in, so a seeded generator gives
    the same crops on every run.

    Args:
        image_size: output height and width ``S`` in pixels.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after subtracting ``mean``.
        min_size: images smaller than this on a side are rejected.
        crop_scale: ``(low, high)`` fraction of the image area kept by the
            train-time random resized crop; ``None`` disables the crop.
        crop_ratio: ``(low, high)`` aspect ratio (width / height) of that crop.
        horizontal_flip: flip at train time. Off by default: a flip makes captions
            that say "left" or "right" false.
    """

    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    min_size: int = 8
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(
                f"ImageTransform.image_size must be an int >= 1, got {self.image_size!r}"
            )
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"ImageTransform.{name} must have 3 values (R, G, B), got {value}")
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageTransform.std must be > 0 per channel, got {self.std}")
        if self.min_size < 1:
            raise ValueError(f"ImageTransform.min_size must be >= 1, got {self.min_size}")
        if self.crop_scale is not None:
            lo, hi = (float(v) for v in self.crop_scale)
            if not 0 < lo <= hi <= 1:
                raise ValueError(
                    f"ImageTransform.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}"
                )
            object.__setattr__(self, "crop_scale", (lo, hi))
        lo, hi = (float(v) for v in self.crop_ratio)
        if not 0 < lo <= hi:
            raise ValueError(
                f"ImageTransform.crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}"
            )
        object.__setattr__(self, "crop_ratio", (lo, hi))

    @property
    def augments(self) -> bool:
        """Whether ``train=True`` does anything beyond the evaluation transform."""
        return self.crop_scale is not None or self.horizontal_flip

    def __call__(
        self,
        image: ImageSource,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        name: str | None = None,
    ) -> torch.Tensor:
        """Transform one image.

        Args:
            image: a path, encoded bytes, or a Pillow image of any mode.
            train: apply the train-time augmentation.
            generator: the source of randomness for ``train=True``; required when
                the transform augments, ignored otherwise.
            name: how to name the image in error messages.

        Returns:
            A float32 tensor of shape ``(3, image_size, image_size)``.

        Raises:
            BadRecordError: the image cannot be decoded or is too small.
            ValueError: ``train=True`` on an augmenting transform without a generator.
        """
        if train and self.augments and generator is None:
            raise ValueError(
                "ImageTransform(train=True) needs a torch.Generator (seed it for reproducible crops)"
            )
        rgb = open_image(image, min_size=self.min_size, name=name)
        width, height = rgb.size
        size = (self.image_size, self.image_size)
        if train and self.crop_scale is not None:
            assert generator is not None
            box = random_resized_crop_box(
                width, height, self.crop_scale, self.crop_ratio, generator
            )
            out = rgb.resize(size, Image.Resampling.BICUBIC, box=box)
        else:
            # Resizing the center square equals "resize shorter side, then center crop".
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            box_f = (left, top, left + side, top + side)
            out = rgb.resize(size, Image.Resampling.BICUBIC, box=box_f)
        if train and self.horizontal_flip:
            assert generator is not None
            if float(torch.rand((), generator=generator)) < 0.5:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.normalize(out)

    def normalize(self, image: Image.Image) -> torch.Tensor:
        """Scale an RGB image to [0, 1] and normalise it: ``(3, H, W)`` float32."""
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # (H, W, 3)
        x = pixels.permute(2, 0, 1).to(torch.float32) / 255.0  # (3, H, W)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`normalize`: ``(..., 3, H, W)`` back to [0, 1] pixel values."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return x * std + mean


def load_image(
    path_or_pil: ImageSource,
    image_size: int,
    *,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
    min_size: int = 8,
) -> torch.Tensor:
    """Load an image as a normalised ``(3, image_size, image_size)`` float32 tensor.

    The evaluation transform of :class:`ImageTransform`: decode, convert to RGB,
    resize the shorter side to ``image_size`` and center-crop (bicubic), normalise.

    Raises:
        BadRecordError: unreadable, corrupt, truncated or too small (the message
            names the path).
    """
    return ImageTransform(image_size=image_size, mean=mean, std=std, min_size=min_size)(path_or_pil)
