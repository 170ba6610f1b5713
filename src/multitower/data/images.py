"""Images for the vision encoder: decoding, transforms, and image-text readers.

Decoding turns any file Pillow can read, in any colour mode, into an RGB image
(alpha composited on white, 16-bit scaled rather than clipped, EXIF orientation
applied). :class:`ImageTransform` resizes the shorter side and center-crops with
bicubic filtering, then normalises into a ``(3, H, W)`` float tensor; at train
time it can take a random resized crop drawn from a seeded ``torch.Generator``.
Horizontal flips are off by default because captions and questions speak of
left and right.

The readers return :class:`ImageTextRecord` objects for COCO-captions JSON files
and WebDataset-style tar shards. Images are decoded lazily, so a missing or
corrupt image raises :class:`~multitower.data.errors.BadRecordError` when that
record is loaded, not when the dataset is opened.
"""

from __future__ import annotations

import glob
import io
import json
import math
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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


# ---------------------------------------------------------------------------- records


@dataclass
class ImageTextRecord:
    """One image with its captions, and optionally questions and objects.

    Attributes:
        key: the record's id (a COCO image id, a WebDataset key).
        image: a path, the encoded bytes of the file, or a decoded Pillow image;
            decoded only by :meth:`open` / :meth:`load`.
        captions: one or more captions.
        qa: ``(question, answer)`` pairs.
        boxes: object boxes ``(x0, y0, x1, y1)`` in pixels of the original image.
        labels: one class name per box.
        source: where the record came from, for error messages.
    """

    key: str
    image: ImageSource
    captions: list[str]
    qa: list[tuple[str, str]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    source: str = ""

    def _name(self) -> str:
        if isinstance(self.image, str | Path):
            return str(self.image)
        return f"{self.source}:{self.key}" if self.source else self.key

    def open(self, *, min_size: int = 8) -> Image.Image:
        """Decode the image to RGB. Raises BadRecordError naming the record."""
        return open_image(self.image, min_size=min_size, name=self._name())

    def load(
        self,
        transform: ImageTransform,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decode and transform the image: ``(3, S, S)``. Raises BadRecordError."""
        return transform(self.image, train=train, generator=generator, name=self._name())


def _parse_extras(entry: dict, where: str) -> dict:
    """Read the optional ``qa`` / ``boxes`` / ``labels`` fields of a record."""
    extras: dict = {}
    try:
        if "qa" in entry:
            extras["qa"] = [(str(q), str(a)) for q, a in entry["qa"]]
        if "boxes" in entry:
            boxes = [tuple(float(v) for v in box) for box in entry["boxes"]]
            if any(len(box) != 4 for box in boxes):
                raise ValueError("every box needs 4 numbers (x0, y0, x1, y1)")
            extras["boxes"] = boxes
        if "labels" in entry:
            extras["labels"] = [str(label) for label in entry["labels"]]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: malformed qa/boxes/labels: {exc}") from exc
    if "boxes" in extras and "labels" in extras and len(extras["boxes"]) != len(extras["labels"]):
        raise ValueError(
            f"{where}: {len(extras['boxes'])} boxes but {len(extras['labels'])} labels"
        )
    return extras


def read_coco_captions(
    annotations_json: str | Path, image_dir: str | Path
) -> list[ImageTextRecord]:
    """Read a COCO-captions annotation file into one record per captioned image.

    The file holds ``"images": [{"id", "file_name", ...}]`` and
    ``"annotations": [{"image_id", "caption", ...}]``. Captions are grouped per
    image in file order; images without a (non-empty) caption are left out.
    Image entries may also carry ``"qa"``, ``"boxes"`` (x0, y0, x1, y1) and
    ``"labels"``, as :func:`~multitower.data.image_datasets.write_coco_style`
    writes them. Image files are not opened here: a missing or corrupt one
    raises BadRecordError when its record is loaded.

    Args:
        annotations_json: path to the JSON file.
        image_dir: folder the ``file_name`` entries are relative to.

    Returns:
        Records in the order of ``"images"``, with ``image`` set to the file path.

    Raises:
        FileNotFoundError: the JSON file or the image folder does not exist.
        ValueError: malformed JSON, a missing key (named with the entry's index),
            a duplicate image id, or a caption for an image id not listed.
    """
    path = Path(annotations_json)
    root = Path(image_dir)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    if not root.is_dir():
        raise FileNotFoundError(f"COCO image folder not found: {root}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be an object, got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing list {key!r} (COCO captions format)")

    entries: dict[str, dict] = {}
    for i, entry in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise ValueError(f"{where}: needs keys 'id' and 'file_name', got {entry!r}"[:300])
        key = str(entry["id"])
        if key in entries:
            raise ValueError(f"{where}: duplicate image id {entry['id']!r}")
        entries[key] = {**entry, "_where": where}
    captions: dict[str, list[str]] = {key: [] for key in entries}
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise ValueError(f"{where}: needs keys 'image_id' and 'caption', got {ann!r}"[:300])
        key = str(ann["image_id"])
        if key not in captions:
            raise ValueError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if not isinstance(ann["caption"], str):
            raise ValueError(f"{where}: caption must be a string, got {ann['caption']!r}")
        text = ann["caption"].strip()
        if text:
            captions[key].append(text)

    records = []
    for key, entry in entries.items():
        if not captions[key]:
            continue
        records.append(
            ImageTextRecord(
                key=key,
                image=root / str(entry["file_name"]),
                captions=captions[key],
                source=str(path),
                **_parse_extras(entry, entry["_where"]),
            )
        )
    return records


# ------------------------------------------------------------------------ webdataset


def _expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and ``{000..009}`` ranges (zero padding kept)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.group(1), numeric.group(2)
        width = len(lo) if lo.startswith("0") else 0
        options = [str(v).zfill(width) for v in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [p for option in options for p in _expand_braces(head + option + tail)]


def _resolve_shards(pattern_or_paths: str | Path | Sequence[str | Path]) -> list[Path]:
    patterns = (
        [str(pattern_or_paths)]
        if isinstance(pattern_or_paths, str | Path)
        else [str(p) for p in pattern_or_paths]
    )
    if not patterns:
        raise ValueError("read_webdataset_shards: no shard paths given")
    shards: list[Path] = []
    for pattern in patterns:
        for expanded in _expand_braces(pattern):
            if any(ch in expanded for ch in "*?["):
                matches = sorted(glob.glob(expanded))
                if not matches:
                    raise FileNotFoundError(f"no WebDataset shard matches {expanded!r}")
                shards.extend(Path(m) for m in matches)
            elif not Path(expanded).is_file():
                raise FileNotFoundError(f"WebDataset shard not found: {expanded}")
            else:
                shards.append(Path(expanded))
    return shards


def _split_key(member_name: str) -> tuple[str, str]:
    """``"dir/000123.jpg"`` -> ``("dir/000123", "jpg")``: key before the first dot of the basename."""
    folder, _, base = member_name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _build_record(shard: Path, key: str, files: dict[str, bytes]) -> ImageTextRecord:
    where = f"{shard}:{key}"
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)
    if image_ext is None:
        raise BadRecordError(f"{where}: no image member (.{', .'.join(IMAGE_EXTENSIONS)})")
    captions: list[str] = []
    extras: dict = {}
    if "json" in files:
        try:
            meta = json.loads(files["json"].decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRecordError(f"{where}.json: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise BadRecordError(f"{where}.json: must hold an object")
        if "captions" in meta:
            if not isinstance(meta["captions"], list):
                raise BadRecordError(f"{where}.json: 'captions' must be a list of strings")
            captions = [str(c).strip() for c in meta["captions"]]
        elif "caption" in meta:
            captions = [str(meta["caption"]).strip()]
        try:
            extras = _parse_extras(meta, f"{where}.json")
        except ValueError as exc:
            raise BadRecordError(str(exc)) from exc
    if not captions and "txt" in files:
        try:
            captions = [files["txt"].decode("utf-8").strip()]
        except UnicodeDecodeError as exc:
            raise BadRecordError(f"{where}.txt: not UTF-8 text ({exc})") from exc
    captions = [c for c in captions if c]
    if not captions:
        raise BadRecordError(f"{where}: no caption (.txt, or .json with 'caption'/'captions')")
    return ImageTextRecord(
        key=key, image=files[image_ext], captions=captions, source=str(shard), **extras
    )


def _iter_shard(shard: Path, strict: bool) -> Iterator[ImageTextRecord]:
    skipped: list[str] = []

    def finish(key: str, files: dict[str, bytes]) -> Iterator[ImageTextRecord]:
        try:
            yield _build_record(shard, key, files)
        except BadRecordError as exc:
            if strict:
                raise
            skipped.append(str(exc))

    key: str | None = None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(shard, mode="r|*") as tar:  # streaming: members in file order
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = _split_key(member.name)
                if member_key != key:
                    if key is not None:
                        yield from finish(key, files)
                    key, files = member_key, {}
                handle = tar.extractfile(member)
                assert handle is not None
                files[ext] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        message = f"{shard}: corrupt or truncated tar shard ({type(exc).__name__}: {exc})"
        if strict:
            raise BadRecordError(message) from exc
        skipped.append(message)
        key = None  # the last sample may be incomplete
    if key is not None:
        yield from finish(key, files)
    if skipped:
        warnings.warn(
            f"{shard}: skipped {len(skipped)} bad sample(s); first: {skipped[0]}",
            stacklevel=2,
        )


def read_webdataset_shards(
    pattern_or_paths: str | Path | Sequence[str | Path],
    *,
    strict: bool = False,
) -> Iterator[ImageTextRecord]:
    """Iterate over the samples of WebDataset-style tar shards.

    Members are grouped by key, the member path up to the first dot of its base
    name (``000123.jpg`` and ``000123.txt`` form sample ``000123``); consecutive
    members with the same key form one sample. A sample needs one image
    (``.jpg``/``.jpeg``/``.png``/``.webp``/``.bmp``) and a caption: ``.json`` with
    ``"captions"`` (a list) or ``"caption"``, else ``.txt`` (one caption). The
    ``.json`` may also carry ``"qa"``, ``"boxes"`` and ``"labels"``. The image is
    kept as encoded bytes and decoded when the record is loaded.

    Args:
        pattern_or_paths: a path, a glob, a brace pattern
            (``"shards/train-{000000..000009}.tar"``), or a list of those.
        strict: raise BadRecordError on the first incomplete sample or corrupt
            shard, which ends the iteration. Otherwise such samples are skipped
            and a warning per shard reports how many.

    Returns:
        An iterator of records, shard by shard in the order given.

    Raises:
        FileNotFoundError: (at call time) a shard does not exist or a glob
            matches nothing.
    """
    shards = _resolve_shards(pattern_or_paths)  # eager, so bad paths fail at call time

    def iterate() -> Iterator[ImageTextRecord]:
        for shard in shards:
            yield from _iter_shard(shard, strict)

    return iterate()
