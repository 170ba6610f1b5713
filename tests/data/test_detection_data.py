"""Detection data: the open-vocabulary split, COCO/LVIS instances (round trip, errors), padding."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from multitower.data.detection import (
    Category,
    DetectionRecord,
    class_prompt,
    detection_image,
    keep_classes,
    lvis_frequency,
    read_coco_instances,
    scene_detection_records,
    split_scene_classes,
    write_coco_instances,
)
from multitower.data.image_datasets import SceneConfig
from multitower.data.images import ImageTransform

SCENE = SceneConfig(image_size=32, max_objects=3)


def test_split_is_deterministic_disjoint_and_keeps_every_shape_and_colour_in_base():
    split = split_scene_classes(SCENE.shapes, SCENE.colours, seed=0)
    assert split == split_scene_classes(SCENE.shapes, SCENE.colours, seed=0)
    assert split != split_scene_classes(SCENE.shapes, SCENE.colours, seed=1)
    assert len(split.novel) == len(SCENE.shapes)
    assert len(split.base) + len(split.novel) == len(SCENE.shapes) * len(SCENE.colours)
    assert not set(split.base) & set(split.novel)
    for shape in SCENE.shapes:
        assert any(n.endswith(" " + shape) for n in split.base)
    for colour in SCENE.colours:
        assert any(n.startswith(colour + " ") for n in split.base)
    novel_colours = [n.split()[0] for n in split.novel]
    assert len(set(novel_colours)) == len(novel_colours)  # one novel colour per shape


def test_novel_class_names_never_appear_in_detection_training_targets():
    split = split_scene_classes(SCENE.shapes, SCENE.colours)
    records = scene_detection_records(200, 0, SCENE)
    novel = set(split.novel)
    assert any(label in novel for r in records for label in r.labels)  # they are in the images
    train = keep_classes(records, split.base)
    assert len(train) == len(records)
    assert all(label not in novel for r in train for label in r.labels)
    for before, after in zip(records, train):
        assert len(after.boxes) == len(after.labels)
        kept = [(b, n) for b, n in zip(before.boxes, before.labels) if n not in novel]
        assert list(zip(after.boxes, after.labels)) == kept


def test_prompts_follow_the_captions():
    assert class_prompt("red circle") == "a red circle"
    assert class_prompt("  Orange  Star ") == "an orange star"
    with pytest.raises(ValueError, match="empty"):
        class_prompt("  ")


def test_lvis_frequency_boundaries():
    assert [lvis_frequency(n) for n in (1, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]


def test_coco_instances_round_trip_with_frequencies(tmp_path):
    records = scene_detection_records(4, 3, SCENE)
    names = sorted({n for r in records for n in r.labels})
    categories = [Category(i + 1, n, "rcf"[i % 3]) for i, n in enumerate(names)]
    path = write_coco_instances(records, categories, tmp_path)
    got, cats = read_coco_instances(path, tmp_path / "images")
    assert cats == categories
    assert [r.labels for r in got] == [r.labels for r in records]
    for a, b in zip(got, records):
        assert a.boxes == pytest.approx(b.boxes)
        assert (a.width, a.height) == (b.width, b.height)
        assert Image.open(a.image).size == (b.width, b.height)


def _coco(tmp_path, *, bbox=(1, 1, 4, 4), category_id=1, file_name="a.png", **category):
    Image.new("RGB", (10, 8)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 7, "file_name": file_name, "width": 10, "height": 8}],
        "categories": [{"id": 1, "name": "cat", **category}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": category_id, "bbox": list(bbox)}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_frequency_is_counted_when_the_file_has_none(tmp_path):
    _, cats = read_coco_instances(_coco(tmp_path), tmp_path)
    assert cats == [Category(1, "cat", "r")]
    _, cats = read_coco_instances(_coco(tmp_path, image_count=500), tmp_path)
    assert cats[0].frequency == "f"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"bbox": (6, 1, 8, 4)},
            r"annotations\[0\]: bbox \[6, 1, 8, 4\] lies outside its 10x8 image",
        ),
        ({"bbox": (1, 1, 0, 4)}, "non-positive width"),
        ({"bbox": (1, 1, 4)}, r"bbox must be \[x, y, width, height\]"),
        ({"category_id": 9}, r"annotations\[0\]: category_id 9 is not in 'categories'"),
        ({"frequency": "x"}, r"categories\[0\]: frequency must be one of"),
    ],
)
def test_bad_coco_files_name_the_entry(tmp_path, kwargs, message):
    path = _coco(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message) as err:
        read_coco_instances(path, tmp_path)
    assert str(path) in str(err.value)


def test_missing_image_file_and_missing_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images\[0\]: image file not found: .*b.png"):
        read_coco_instances(_coco(tmp_path, file_name="b.png"), tmp_path)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match=r"images\[0\]: missing field 'file_name'"):
        read_coco_instances(path, tmp_path)


def test_detection_image_pads_bottom_right_so_boxes_only_scale():
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    image.paste((255, 255, 255), (10, 2, 14, 6))  # a white box at x 10-14, y 2-6
    record = DetectionRecord("r", image, 20, 10, [(10.0, 2.0, 14.0, 6.0)], ["box"])
    transform = ImageTransform(image_size=40)
    x = transform.denormalize(detection_image(record, 40, transform))  # (3, 40, 40), side 20 -> 40
    assert x.shape == (3, 40, 40)
    white = (x.mean(0) > 0.9).nonzero()
    assert white[:, 0].min() >= 3 and white[:, 0].max() <= 12  # rows 4-12 (y 2-6 doubled)
    assert white[:, 1].min() >= 19 and white[:, 1].max() <= 28  # cols 20-28
    assert torch.allclose(x[:, 30:, :], torch.full_like(x[:, 30:, :], 128 / 255), atol=0.02)
