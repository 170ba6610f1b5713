"""Detection data: boxes with class names, the open-vocabulary split, COCO/LVIS-style instances.

* :class:`DetectionRecord`: an image with pixel boxes ``(x0, y0, x1, y1)`` and one
  class name per box. Generated shape scenes give them directly; the class of a
  shape is its colour and shape, ``"red circle"``.
* The **open-vocabulary split** (:func:`split_scene_classes`) divides the scene
  classes into *base* classes, whose boxes detection training uses, and *novel*
  classes, which are only named at test time (as LVIS's rare classes in the
  paper's APr). Every shape and every colour keeps base classes, so a novel class
  is a new combination of a seen shape and a seen colour; the pre-training
  captions may mention novel classes, as in the paper's setting.
* :func:`read_coco_instances` reads a COCO ``instances`` JSON with its image folder
  (boxes ``[x, y, w, h]``), and LVIS's category frequency ``r``/``c``/``f`` (given
  in the file, or counted from the images: rare 1-10 images, common 11-100,
  frequent more). :func:`write_coco_instances` writes records in that layout.
* :func:`detection_image`: an image padded to a square at the bottom and right
  (grey, as OWL-ViT) and resized, so boxes only scale: a box normalised by the
  padded side stays where it was.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multitower.data.image_datasets import SceneConfig, generate_scenes
from multitower.data.image_readers import read_coco_json
from multitower.data.images import ImageSource, ImageTransform, open_image
from multitower.io import write_bytes_atomic, write_text_atomic

FREQUENCIES = ("r", "c", "f")
# LVIS v1: rare classes have 1-10 training images, common 11-100, frequent more.
RARE_MAX_IMAGES, COMMON_MAX_IMAGES = 10, 100
_BOX_SLACK = 1.0  # pixels a COCO box may stick out of its image (rounding in real files)


@dataclass
class DetectionRecord:
    """One image with its objects.

    Attributes:
        key: the image's id.
        image: a path, encoded bytes or a Pillow image (decoded when loaded).
        width, height: the image size in pixels (boxes are in these pixels).
        boxes: ``(x0, y0, x1, y1)`` per object.
        labels: the class name of each object.
    """

    key: str
    image: ImageSource
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Category:
    """A detection class: its COCO id, name, and LVIS frequency (``r``/``c``/``f``)."""

    id: int
    name: str
    frequency: str


@dataclass(frozen=True)
class OpenVocabSplit:
    """Class names whose boxes detection training sees (``base``) and those it never does."""

    base: tuple[str, ...]
    novel: tuple[str, ...]

    def __post_init__(self) -> None:
        overlap = sorted(set(self.base) & set(self.novel))
        if overlap:
            raise ValueError(f"OpenVocabSplit: classes both base and novel: {overlap}")
        if not self.base:
            raise ValueError("OpenVocabSplit: no base classes to train on")

    @property
    def all(self) -> tuple[str, ...]:
        """Base then novel classes: the class list of the evaluation."""
        return self.base + self.novel


# -- class names ---------------------------------------------------------------------------------
def scene_class_name(colour: str, shape: str) -> str:
    """The class of a shape in a scene: ``"red circle"``."""
    return f"{colour} {shape}"


def class_prompt(name: str) -> str:
    """The text a class name is embedded as: ``"a red circle"``, ``"an orange star"``
    (the shape of the scenes' captions)."""
    name = " ".join(name.lower().split())
    if not name:
        raise ValueError("class_prompt: empty class name")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def split_scene_classes(
    shapes: Sequence[str], colours: Sequence[str], *, seed: int = 0
) -> OpenVocabSplit:
    """The deterministic base/novel split of the scene classes (colour x shape).

    Each shape gets one novel colour; the colours are drawn as a permutation
    seeded by ``seed``, so different shapes get different novel colours while
    there are colours left. Every shape and every colour therefore keeps base
    classes (needs at least two colours).

    Raises:
        ValueError: fewer than two colours, or repeated names.
    """
    shapes, colours = tuple(shapes), tuple(colours)
    if len(colours) < 2 or len(set(colours)) != len(colours) or len(set(shapes)) != len(shapes):
        raise ValueError(
            f"split_scene_classes needs distinct shapes and >= 2 distinct colours, got "
            f"{shapes} and {colours}"
        )
    order = np.random.default_rng(seed).permutation(len(colours))
    novel = {
        scene_class_name(colours[order[i % len(colours)]], shape) for i, shape in enumerate(shapes)
    }
    every = [scene_class_name(c, s) for s in shapes for c in colours]
    return OpenVocabSplit(
        tuple(n for n in every if n not in novel), tuple(n for n in every if n in novel)
    )


def keep_classes(records: Iterable[DetectionRecord], names: Iterable[str]) -> list[DetectionRecord]:
    """The records with only the boxes of ``names`` (the images stay: other objects in
    them are unannotated background, as novel objects are in LVIS training images)."""
    keep = set(names)
    out = []
    for r in records:
        pairs = [(b, n) for b, n in zip(r.boxes, r.labels) if n in keep]
        out.append(replace(r, boxes=[b for b, _ in pairs], labels=[n for _, n in pairs]))
    return out


def scene_detection_records(n: int, seed: int, config: SceneConfig) -> list[DetectionRecord]:
    """Generated scenes as detection records, classes ``"colour shape"``."""
    return [
        DetectionRecord(
            key=f"scene-{seed}-{i}",
            image=s.image,
            width=s.image.width,
            height=s.image.height,
            boxes=list(s.boxes),
            labels=[scene_class_name(c, shape) for c, shape in zip(s.colours, s.labels)],
        )
        for i, s in enumerate(generate_scenes(n, seed, config))
    ]


# -- images ----------------------------------------------------------------------------------------
def detection_image(
    record: DetectionRecord, image_size: int, transform: ImageTransform
) -> torch.Tensor:
    """``(3, S, S)``: the image padded to a square (bottom and right, grey) and resized.

    Boxes normalised by ``max(width, height)`` keep their place in the result.

    Raises:
        BadRecordError: the image cannot be decoded (the message names it).
    """
    rgb = open_image(record.image, name=record.key)
    side = max(rgb.size)
    if rgb.size != (side, side):
        square = Image.new("RGB", (side, side), (128, 128, 128))
        square.paste(rgb, (0, 0))
        rgb = square
    if side != image_size:
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return transform.normalize(rgb)


# -- COCO / LVIS instances ------------------------------------------------------------------------
def lvis_frequency(image_count: int) -> str:
    """LVIS's frequency group of a class seen in ``image_count`` training images."""
    if image_count <= RARE_MAX_IMAGES:
        return "r"
    return "c" if image_count <= COMMON_MAX_IMAGES else "f"


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return float(value)


def read_coco_instances(
    annotations_json: str | Path, image_dir: str | Path
) -> tuple[list[DetectionRecord], list[Category]]:
    """Read a COCO ``instances`` file (or an LVIS one) and check it.

    The file holds ``"images": [{"id", "file_name", "width", "height"}]``,
    ``"categories": [{"id", "name", "frequency"?, "image_count"?}]`` and
    ``"annotations": [{"image_id", "category_id", "bbox": [x, y, w, h], "iscrowd"?}]``.
    Crowd annotations are left out (COCO evaluates them as "ignore"). A
    category's frequency is its ``frequency`` field, else LVIS's rule on its
    ``image_count`` field, else on the number of images annotated with it here.

    Returns:
        ``(records, categories)``: one record per image (in file order, images
        without boxes included) and the categories in file order.

    Raises:
        FileNotFoundError: the JSON file, the folder or an image file is missing.
        ValueError: malformed JSON, a missing or mistyped field, an unknown image or
            category id, a duplicate id, or a box that is empty or lies outside
            its image; the message names the file and the entry.
    """
    path, root = Path(annotations_json), Path(image_dir)
    lists = ("images", "annotations", "categories")
    data = read_coco_json(path, root, lists, "instances", "instances file")

    categories: dict[int, dict] = {}
    for i, cat in enumerate(data["categories"]):
        where = f"{path}: categories[{i}]"
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not cat.get("name"):
            raise ValueError(f"{where}: needs an int 'id' and a 'name', got {cat!r}"[:300])
        if cat["id"] in categories:
            raise ValueError(f"{where}: duplicate category id {cat['id']}")
        if "frequency" in cat and cat["frequency"] not in FREQUENCIES:
            raise ValueError(
                f"{where}: frequency must be one of {FREQUENCIES}, got {cat['frequency']!r}"
            )
        categories[cat["id"]] = cat

    records: dict[int, DetectionRecord] = {}
    for i, entry in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be an object")
        for key in ("id", "file_name", "width", "height"):
            if key not in entry:
                raise ValueError(f"{where}: missing field {key!r}")
        width, height = entry["width"], entry["height"]
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ValueError(
                f"{where}: width and height must be positive ints, got {width!r}, {height!r}"
            )
        if entry["id"] in records:
            raise ValueError(f"{where}: duplicate image id {entry['id']!r}")
        file = root / str(entry["file_name"])
        if not file.is_file():
            raise FileNotFoundError(f"{where}: image file not found: {file}")
        records[entry["id"]] = DetectionRecord(str(entry["id"]), file, width, height)

    images_per_category: dict[int, set] = {c: set() for c in categories}
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise ValueError(f"{where}: must be an object")
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise ValueError(f"{where}: missing field {key!r}")
        if ann["image_id"] not in records:
            raise ValueError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in categories:
            raise ValueError(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (_number(v, f"{where}.bbox") for v in bbox)
        record = records[ann["image_id"]]
        if w <= 0 or h <= 0:
            raise ValueError(f"{where}: bbox {bbox} has a non-positive width or height")
        if (
            x < -_BOX_SLACK
            or y < -_BOX_SLACK
            or x + w > record.width + _BOX_SLACK
            or (y + h > record.height + _BOX_SLACK)
        ):
            raise ValueError(
                f"{where}: bbox {bbox} lies outside its {record.width}x{record.height} image "
                f"(images[id={ann['image_id']!r}])"
            )
        if ann.get("iscrowd", 0):
            continue
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(record.width)), min(y + h, float(record.height))
        record.boxes.append((x0, y0, x1, y1))
        record.labels.append(str(categories[ann["category_id"]]["name"]))
        images_per_category[ann["category_id"]].add(ann["image_id"])

    names = Counter(str(c["name"]) for c in categories.values())
    repeated = sorted(n for n, k in names.items() if k > 1)
    if repeated:
        raise ValueError(f"{path}: category names must be distinct, repeated: {repeated}")
    out = []
    for cid, cat in categories.items():
        freq = cat.get("frequency")
        if freq is None:
            count = cat.get("image_count", len(images_per_category[cid]))
            freq = lvis_frequency(int(count))
        out.append(Category(cid, str(cat["name"]), freq))
    return list(records.values()), out


def write_coco_instances(
    records: Sequence[DetectionRecord],
    categories: Sequence[Category],
    out_dir: str | Path,
    *,
    annotations_name: str = "instances.json",
    image_dir_name: str = "images",
) -> Path:
    """Write records as PNG files and a COCO ``instances`` JSON (with LVIS frequencies).

    Returns:
        The JSON path; read it back with ``read_coco_instances(path, out_dir / image_dir_name)``.

    Raises:
        ValueError: a record's label is not among ``categories``.
    """
    root = Path(out_dir)
    ids = {c.name: c.id for c in categories}
    images, annotations = [], []
    for image_id, record in enumerate(records):
        file_name = f"{image_id:06d}.png"
        buffer = io.BytesIO()
        open_image(record.image, name=record.key).save(buffer, format="PNG")
        write_bytes_atomic(root / image_dir_name / file_name, buffer.getvalue())
        images.append(
            {"id": image_id, "file_name": file_name, "width": record.width, "height": record.height}
        )
        for (x0, y0, x1, y1), label in zip(record.boxes, record.labels):
            if label not in ids:
                raise ValueError(f"write_coco_instances: {record.key}: unknown class {label!r}")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": ids[label],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": c.id, "name": c.name, "frequency": c.frequency} for c in categories]
    path = root / annotations_name
    payload = {"images": images, "annotations": annotations, "categories": cats}
    write_text_atomic(path, json.dumps(payload, indent=1))
    return path
