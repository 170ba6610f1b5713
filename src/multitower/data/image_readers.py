"""Image-text records and readers for real data: COCO captions and WebDataset shards.

The readers return :class:`ImageTextRecord` objects. Images are decoded lazily
(see :mod:`multitower.data.images`), so a missing or corrupt image raises
:class:`~multitower.data.errors.BadRecordError` when that record is loaded, not
when the dataset is opened.
"""

from __future__ import annotations

import glob
import json
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from multitower.data.errors import BadRecordError
from multitower.data.images import (
    IMAGE_EXTENSIONS,
    ImageSource,
    ImageTransform,
    open_image,
)

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


def read_coco_json(
    path: Path, root: Path, lists: tuple[str, ...], kind: str, file_label: str
) -> dict[str, Any]:
    """A COCO-style JSON file's top-level object, checked: the file and the image folder
    ``root`` exist, the JSON parses to an object and each key of ``lists`` is a list.
    Errors name the file (``COCO <file_label> not found``, ``(COCO <kind> format)``)."""
    if not path.is_file():
        raise FileNotFoundError(f"COCO {file_label} not found: {path}")
    if not root.is_dir():
        raise FileNotFoundError(f"COCO image folder not found: {root}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be an object, got {type(data).__name__}")
    for key in lists:
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing list {key!r} (COCO {kind} format)")
    return data


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
    path, root = Path(annotations_json), Path(image_dir)
    data = read_coco_json(path, root, ("images", "annotations"), "captions", "annotation file")

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
