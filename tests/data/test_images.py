"""Image decoding and transforms, the generated shapes dataset, and the image-text readers."""

from __future__ import annotations

import io
import json
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multitower.data.errors import BadRecordError
from multitower.data.image_datasets import (
    COLOUR_RGB,
    NUMBER_WORDS,
    PLURALS,
    SHAPES,
    Scene,
    SceneConfig,
    captions_vocabulary,
    generate_scenes,
    write_coco_style,
)
from multitower.data.image_readers import (
    ImageTextRecord,
    read_coco_captions,
    read_webdataset_shards,
)
from multitower.data.images import (
    CLIP_MEAN,
    CLIP_STD,
    ImageTransform,
    load_image,
    open_image,
    random_resized_crop_box,
)


def _pixels(x: torch.Tensor, transform: ImageTransform) -> np.ndarray:
    """Undo normalisation: (3, H, W) tensor -> (H, W, 3) uint8."""
    return (
        (transform.denormalize(x) * 255)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        .permute(1, 2, 0)
        .numpy()
    )


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------ load and transform


def test_load_image_normalises_each_channel():
    image = Image.new("RGB", (30, 20), (255, 0, 128))
    x = load_image(image, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    for c, value in enumerate((255, 0, 128)):
        expected = (value / 255 - CLIP_MEAN[c]) / CLIP_STD[c]
        torch.testing.assert_close(x[c], torch.full((16, 16), expected))
    y = load_image(image, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    torch.testing.assert_close(y[0], torch.ones(16, 16))
    torch.testing.assert_close(y[1], -torch.ones(16, 16))


def test_center_crop_at_scale_one_is_an_exact_crop():
    rng = np.random.default_rng(0)
    landscape = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)  # (H, W, 3)
    t = ImageTransform(image_size=20)
    np.testing.assert_array_equal(_pixels(t(Image.fromarray(landscape)), t), landscape[:, 10:30])
    portrait = rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_pixels(t(Image.fromarray(portrait)), t), portrait[10:30])


def test_resize_shorter_side_then_center_crop_keeps_the_middle():
    # 80x40: red [0, 16), green [16, 64), blue [64, 80). Size 20 halves the image and
    # keeps source columns [20, 60): green only, even counting the bicubic support.
    a = np.zeros((40, 80, 3), dtype=np.uint8)
    a[:, :16] = COLOUR_RGB["red"]
    a[:, 16:64] = COLOUR_RGB["green"]
    a[:, 64:] = COLOUR_RGB["blue"]
    t = ImageTransform(image_size=20)
    out = _pixels(t(Image.fromarray(a)), t).astype(int)
    assert out.shape == (20, 20, 3)
    assert np.abs(out - np.array(COLOUR_RGB["green"])).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree turn
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (40, 20), (10, 200, 10)).save(path, exif=exif)
    assert open_image(path).size == (20, 40)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (12, 12), 100), (100, 100, 100)),
        (Image.new("1", (12, 12), 1), (255, 255, 255)),
        (Image.new("RGBA", (12, 12), (200, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        (Image.new("RGBA", (12, 12), (200, 10, 0, 255)), (200, 10, 0)),
        (Image.new("RGBA", (12, 12), (0, 0, 0, 102)), (153, 153, 153)),  # 40% black on white
        (Image.new("LA", (12, 12), (0, 51)), (204, 204, 204)),
        (Image.new("CMYK", (12, 12), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.fromarray(np.full((12, 12), 128 * 257, dtype=np.uint16)), (128, 128, 128)),
        (Image.fromarray(np.full((12, 12), 0.5, dtype=np.float32)), (128, 128, 128)),
    ],
    ids=["L", "1", "RGBA-clear", "RGBA-opaque", "RGBA-40%", "LA", "CMYK", "I;16", "F"],
)
def test_modes_convert_to_rgb(image, expected):
    rgb = np.asarray(open_image(image)).astype(int)
    assert rgb.shape == (12, 12, 3)
    assert np.abs(rgb - np.array(expected)).max() <= 1


def test_palette_with_transparency_and_16_bit_files(tmp_path):
    pal = Image.new("P", (12, 12), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = 1  # palette index 1 is transparent
    pal.save(tmp_path / "pal.png", transparency=1)
    assert np.asarray(open_image(tmp_path / "pal.png")).min() == 255
    pal_opaque = Image.new("P", (12, 12), 1)
    pal_opaque.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    np.testing.assert_array_equal(np.asarray(open_image(pal_opaque))[0, 0], [0, 0, 255])

    # A 16-bit ramp must be scaled, not clipped at 255 as Pillow's own convert does.
    ramp = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(open_image(tmp_path / "deep.png"))[..., 0].astype(int)
    np.testing.assert_array_equal(rgb, np.rint(ramp / 257).astype(int))
    assert len(np.unique(rgb)) == 255 and rgb.max() == 254  # 65280 / 257

    cmyk_path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 12), (255, 0, 255, 0)).save(cmyk_path)
    x = load_image(cmyk_path, 8)
    px = _pixels(x, ImageTransform(image_size=8)).astype(int)
    assert np.abs(px - np.array([0, 255, 0])).max() <= 2


def test_unreadable_images_raise_bad_record_naming_the_path(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(BadRecordError, match=re.escape(str(missing))):
        load_image(missing, 16)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(BadRecordError, match=r"garbage\.jpg: cannot decode"):
        load_image(garbage, 16)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG"):
        data = _encode(noise, fmt)
        truncated = tmp_path / f"truncated.{fmt.lower()}"
        truncated.write_bytes(data[: len(data) // 2])
        with pytest.raises(BadRecordError, match="truncated"):
            load_image(truncated, 16)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (40, 5)).save(tiny)
    with pytest.raises(
        BadRecordError, match=r"tiny.png: image is 40x5 pixels, smaller than min_size=8"
    ):
        load_image(tiny, 16)
    assert load_image(tiny, 16, min_size=5).shape == (3, 16, 16)
    with pytest.raises(ValueError):  # BadRecordError is a ValueError
        load_image(b"\x00\x01", 16)


def test_transform_config_is_validated():
    for kwargs, field in [
        ({"image_size": 0}, "image_size"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
        ({"crop_ratio": (2.0, 1.0)}, "crop_ratio"),
    ]:
        with pytest.raises(ValueError, match=field):
            ImageTransform(**kwargs)


def test_random_resized_crop_is_seeded_and_in_bounds():
    g = torch.Generator().manual_seed(0)
    for width, height in [(64, 64), (100, 30), (30, 100)]:
        for _ in range(200):
            x0, y0, x1, y1 = random_resized_crop_box(width, height, (0.3, 1.0), (0.75, 4 / 3), g)
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    # the fallback (all draws fail for a very wide crop ratio) stays inside the image too
    assert random_resized_crop_box(10, 100, (0.9, 1.0), (5.0, 6.0), g) == (0, 49, 10, 51)

    scene = generate_scenes(1, seed=3)[0].image
    t = ImageTransform(image_size=32, crop_scale=(0.3, 0.6))
    a = t(scene, train=True, generator=torch.Generator().manual_seed(7))
    b = t(scene, train=True, generator=torch.Generator().manual_seed(7))
    c = t(scene, train=True, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert not torch.equal(a, t(scene))  # evaluation does not crop randomly
    with pytest.raises(ValueError, match="Generator"):
        t(scene, train=True)


def test_no_flip_by_default_and_full_crop_equals_eval():
    scene = generate_scenes(1, seed=5)[0].image  # square
    full = ImageTransform(image_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        torch.testing.assert_close(full(scene, train=True, generator=g), full(scene))
    flipping = ImageTransform(image_size=32, horizontal_flip=True)
    outs = {flipping(scene, train=True, generator=g).numpy().tobytes() for _ in range(20)}
    assert len(outs) == 2  # sometimes flipped, sometimes not
    mirrored = scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert any(
        torch.equal(flipping(scene, train=True, generator=g), flipping(mirrored)) for _ in range(20)
    )


# -------------------------------------------------------------------- generated scenes


def test_scenes_are_deterministic_and_prefix_stable():
    a = generate_scenes(12, seed=1)
    b = generate_scenes(12, seed=1)
    for sa, sb in zip(a, b):
        assert sa.image.tobytes() == sb.image.tobytes()
        assert (sa.captions, sa.qa, sa.boxes, sa.labels) == (
            sb.captions,
            sb.qa,
            sb.boxes,
            sb.labels,
        )
    prefix = generate_scenes(4, seed=1)
    assert [s.image.tobytes() for s in prefix] == [s.image.tobytes() for s in a[:4]]
    other = generate_scenes(12, seed=2)
    assert [s.image.tobytes() for s in other] != [s.image.tobytes() for s in a]


def test_scene_config_is_validated():
    for kwargs, field in [
        ({"image_size": 16}, "image_size"),
        ({"max_objects": 10}, "max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"shapes": ("circle", "blob")}, "shapes"),
        ({"colours": ("red", "red")}, "colours"),
        ({"colours": ("red", "black")}, "background"),
        ({"repeat_prob": 1.5}, "repeat_prob"),
    ]:
        with pytest.raises(ValueError, match=field):
            SceneConfig(**kwargs)
    assert len(SHAPES) >= 5 and len(COLOUR_RGB) - 1 >= 6


WORD_TO_NUMBER = {w: i for i, w in enumerate(NUMBER_WORDS)}
SINGULAR = {plural: shape for shape, plural in PLURALS.items()}


def _third(value: float, size: int) -> int:
    return min(int(value * 3 // size), 2)


def _region_ok(box, words: str, size: int) -> bool:
    """Whether the box's centre lies in the region the words name ("top left", "center", ...)."""
    row = _third((box[1] + box[3]) / 2, size)
    col = _third((box[0] + box[2]) / 2, size)
    want_row = {"top": 0, "bottom": 2}
    want_col = {"left": 0, "right": 2}
    parts = words.split()
    if parts == ["center"]:
        return (row, col) == (1, 1)
    if len(parts) == 2:
        return row == want_row[parts[0]] and col == want_col[parts[1]]
    if parts[0] in want_col:
        return row == 1 and col == want_col[parts[0]]
    return col == 1 and row == want_row[parts[0]]


def _relation_ok(a, b, word: str) -> bool:
    """Spatial relation between two boxes, from pixels only."""
    return {
        "left of": a[2] <= b[0],
        "right of": a[0] >= b[2],
        "above": a[3] <= b[1],
        "below": a[1] >= b[3],
    }[word]


def _find(scene: Scene, ref: str) -> list[int]:
    """Objects matching a reference "circle" or "red circle"."""
    words = ref.split()
    return [
        i
        for i in range(len(scene.labels))
        if scene.labels[i] == words[-1] and (len(words) == 1 or scene.colours[i] == words[0])
    ]


def _check_question(scene: Scene, question: str, answer: str, size: int) -> None:
    n = len(scene.labels)
    if m := re.fullmatch(r"how many (objects|shapes) are there", question):
        assert WORD_TO_NUMBER[answer] == n
    elif m := re.fullmatch(r"how many (\w+) objects are there", question):
        assert WORD_TO_NUMBER[answer] == scene.colours.count(m[1])
    elif m := re.fullmatch(r"how many (\w+) are there", question):
        assert WORD_TO_NUMBER[answer] == scene.labels.count(SINGULAR[m[1]])
    elif m := re.fullmatch(r"is there an? (.+)", question):
        assert answer == ("yes" if _find(scene, m[1]) else "no")
    elif m := re.fullmatch(r"what color is the (\w+)", question):
        (i,) = _find(scene, m[1])
        assert answer == scene.colours[i]
    elif m := re.fullmatch(r"what shape is the (\w+) object", question):
        assert scene.colours.count(m[1]) == 1
        assert answer == scene.labels[scene.colours.index(m[1])]
    elif m := re.fullmatch(r"is the (.+) large or small", question):
        (i,) = _find(scene, m[1])
        assert answer == scene.sizes[i]
    elif m := re.fullmatch(r"where is the (.+)", question):
        (i,) = _find(scene, m[1])
        assert _region_ok(scene.boxes[i], answer, size)
    elif m := re.fullmatch(
        r"what (shape|color) is (?:the shape )?(left of|right of|above|below) the (.+)", question
    ):
        (ref,) = _find(scene, m[3])
        (j,) = [
            j for j in range(n) if j != ref and _relation_ok(scene.boxes[j], scene.boxes[ref], m[2])
        ]
        assert answer == (scene.labels[j] if m[1] == "shape" else scene.colours[j])
    else:
        raise AssertionError(f"unrecognised question {question!r}")


NAME = r"(\w+) (" + "|".join(SHAPES) + r")"


def _check_caption(scene: Scene, caption: str, size: int) -> None:
    n = len(scene.labels)
    assert caption == caption.lower() and re.fullmatch(r"[a-z ]+", caption)
    for colour in COLOUR_RGB:
        if re.search(rf"\b{colour}\b", caption) and colour != "black":
            assert colour in scene.colours, caption
    # exact counts: "two red circles", "there are three stars"
    for m in re.finditer(
        r"\b(two|three|four|five|six|seven|eight|nine) (?:(\w+) )?(\w+es|\w+s)\b", caption
    ):
        if m[3] in ("objects", "shapes"):
            assert WORD_TO_NUMBER[m[1]] == n
        elif m[2] in COLOUR_RGB:
            pairs = list(zip(scene.colours, scene.labels))
            assert pairs.count((m[2], SINGULAR[m[3]])) == WORD_TO_NUMBER[m[1]], caption
        else:
            assert scene.labels.count(SINGULAR[m[3]]) == WORD_TO_NUMBER[m[1]], caption
    if m := re.fullmatch(rf"an? {NAME} (left of|right of|above|below) an? {NAME}", caption):
        firsts, seconds = _find(scene, f"{m[1]} {m[2]}"), _find(scene, f"{m[4]} {m[5]}")
        assert any(
            _relation_ok(scene.boxes[i], scene.boxes[j], m[3]) for i in firsts for j in seconds
        )
    if m := re.fullmatch(rf"an? (?:(small|large) )?{NAME} (?:in|on|at) the (.+)", caption):
        found = [
            i
            for i in _find(scene, f"{m[2]} {m[3]}")
            if m[1] in (None, scene.sizes[i]) and _region_ok(scene.boxes[i], m[4], size)
        ]
        assert found, caption


CROWDED = SceneConfig(
    image_size=96,
    min_objects=5,
    max_objects=9,
    shapes=SHAPES,
    colours=tuple(c for c in COLOUR_RGB if c != "black"),
    repeat_prob=0.6,
)


@pytest.mark.parametrize(
    ("config", "n"), [(SceneConfig(), 150), (CROWDED, 40)], ids=["default", "crowded"]
)
def test_captions_qa_and_boxes_match_the_pixels(config, n):
    scenes = generate_scenes(n, seed=0, config=config)
    size = config.image_size
    large_sides, small_sides = [], []
    question_kinds = set()
    for scene in scenes:
        n = len(scene.labels)
        assert (
            config.min_objects <= n <= config.max_objects
            and len(scene.boxes) == len(scene.colours) == len(scene.sizes) == n
        )
        pixels = np.asarray(scene.image)  # (H, W, 3)
        for colour in set(scene.colours):
            drawn = np.all(pixels == COLOUR_RGB[colour], axis=-1)
            covered = np.zeros_like(drawn)
            for box, c in zip(scene.boxes, scene.colours):
                if c != colour:
                    continue
                x0, y0, x1, y1 = (int(v) for v in box)
                region = drawn[y0:y1, x0:x1]
                # tight: the drawn pixels touch all four sides of the box
                assert (
                    region[0].any()
                    and region[-1].any()
                    and region[:, 0].any()
                    and region[:, -1].any()
                )
                covered[y0:y1, x0:x1] = True
            assert not (drawn & ~covered).any(), "pixels of a colour outside its objects' boxes"
        known = np.zeros(pixels.shape[:2], dtype=bool)
        for box in scene.boxes:
            x0, y0, x1, y1 = (int(v) for v in box)
            assert not known[y0:y1, x0:x1].any(), "boxes overlap"
            known[y0:y1, x0:x1] = True
        assert np.all(pixels[~known] == COLOUR_RGB["black"])
        for box, s in zip(scene.boxes, scene.sizes):
            side = max(box[2] - box[0], box[3] - box[1])
            (large_sides if s == "large" else small_sides).append(side)

        assert len(scene.captions) == config.captions_per_image == len(set(scene.captions))
        # the first caption lists every object
        numbers = "|".join(NUMBER_WORDS[2:])
        counts = re.findall(rf"\b(an?|{numbers}) {NAME}(?:s|es)?\b", scene.captions[0])
        assert sum(1 if w in ("a", "an") else WORD_TO_NUMBER[w] for w, _, _ in counts) == n
        for caption in scene.captions:
            _check_caption(scene, caption, size)
        assert len(scene.qa) == config.questions_per_image
        for question, answer in scene.qa:
            _check_question(scene, question, answer, size)
            question_kinds.add(" ".join(question.split()[:2]))
    assert min(large_sides) > max(small_sides)
    assert {
        "how many",
        "is there",
        "what color",
        "what shape",
        "where is",
        "is the",
    } <= question_kinds
    # counts above one and every shape and colour occur
    assert any(len(s.labels) != len(set(s.labels)) for s in scenes)
    assert {lab for s in scenes for lab in s.labels} == set(config.shapes)
    assert {c for s in scenes for c in s.colours} == set(config.colours)


def test_captions_vocabulary():
    scenes = generate_scenes(20, seed=0)
    vocab = captions_vocabulary(scenes)
    assert vocab == sorted(set(vocab))
    caption_words = {w for s in scenes for c in s.captions for w in c.split()}
    assert set(captions_vocabulary(scenes, include_qa=False)) == caption_words
    assert {"what", "how", "yes", "no"} <= set(vocab)
    assert all(re.fullmatch(r"[a-z]+", w) for w in vocab)


# ----------------------------------------------------------------------------- readers


def test_coco_round_trip(tmp_path):
    scenes = generate_scenes(6, seed=4)
    path = write_coco_style(scenes, tmp_path / "coco")
    records = read_coco_captions(path, tmp_path / "coco" / "images")
    assert [r.key for r in records] == [str(i) for i in range(6)]
    for record, scene in zip(records, scenes):
        assert record.captions == scene.captions
        assert record.qa == scene.qa
        assert record.boxes == scene.boxes and record.labels == scene.labels
        assert record.open().tobytes() == scene.image.tobytes()
    t = ImageTransform(image_size=64)
    torch.testing.assert_close(records[0].load(t), t(scenes[0].image))


def _write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload) if not isinstance(payload, str) else payload)
    return path


def test_coco_reader_errors(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    ok_images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "gone.png"}]
    good = {
        "images": [*ok_images, {"id": 3, "file_name": "uncaptioned.png"}],
        "annotations": [
            {"image_id": 1, "caption": "A cat. "},
            {"image_id": 2, "caption": "a dog"},
            {"image_id": 1, "caption": "a small cat"},
            {"image_id": 1, "caption": "   "},
        ],
    }
    records = read_coco_captions(_write_json(tmp_path / "good.json", good), images)
    assert [(r.key, r.captions) for r in records] == [
        ("1", ["A cat.", "a small cat"]),
        ("2", ["a dog"]),
    ]
    assert records[0].open().size == (16, 16)
    with pytest.raises(BadRecordError, match=r"gone\.png"):  # missing image: at load time
        records[1].load(ImageTransform(image_size=8))

    cases = [
        ("{not json", "not valid JSON"),
        ([1, 2], "top level must be an object"),
        ({"images": ok_images}, "missing list 'annotations'"),
        (
            {"images": [{"id": 1}], "annotations": []},
            r"images\[0\]: needs keys 'id' and 'file_name'",
        ),
        ({"images": ok_images, "annotations": [{"image_id": 1}]}, r"annotations\[0\]: needs keys"),
        (
            {"images": ok_images, "annotations": [{"image_id": 9, "caption": "x"}]},
            "image_id 9 is not in",
        ),
        ({"images": ok_images + ok_images[:1], "annotations": []}, "duplicate image id 1"),
        (
            {"images": ok_images, "annotations": [{"image_id": 1, "caption": 5}]},
            "caption must be a string",
        ),
    ]
    for i, (payload, message) in enumerate(cases):
        path = _write_json(tmp_path / f"bad{i}.json", payload)
        with pytest.raises(ValueError, match=message):
            read_coco_captions(path, images)
    with pytest.raises(FileNotFoundError):
        read_coco_captions(tmp_path / "nope.json", images)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path):
    red = Image.new("RGB", (20, 20), COLOUR_RGB["red"])
    blue = Image.new("RGB", (20, 20), COLOUR_RGB["blue"])
    with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:
        _add(tar, "000.jpg", _encode(red, "JPEG"))
        _add(tar, "000.txt", b"a red square\n")
        _add(tar, "001.png", _encode(blue, "PNG"))
        _add(tar, "001.json", json.dumps({"captions": ["blue", "all blue"], "labels": ["x"],
                                          "boxes": [[0, 0, 20, 20]]}).encode())  # fmt: skip
        _add(tar, "002.txt", b"a caption without an image")
        _add(tar, "sub/003.jpeg", _encode(red, "JPEG"))
        _add(tar, "sub/003.json", json.dumps({"caption": "red again"}).encode())
    with tarfile.open(tmp_path / "shard-1.tar", "w") as tar:
        _add(tar, "004.png", b"corrupt bytes")
        _add(tar, "004.txt", b"broken")
        _add(tar, "005.png", _encode(blue, "PNG"))  # no caption

    with pytest.warns(UserWarning, match="skipped 1 bad sample"):
        records = list(read_webdataset_shards(str(tmp_path / "shard-{0..1}.tar")))
    assert [r.key for r in records] == ["000", "001", "sub/003", "004"]
    assert records[0].captions == ["a red square"]
    assert records[1].captions == ["blue", "all blue"] and records[1].labels == ["x"]
    assert records[1].boxes == [(0.0, 0.0, 20.0, 20.0)]
    assert records[2].captions == ["red again"]
    t = ImageTransform(image_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    blue_px = records[1].load(t)[:, 0, 0] * 255
    torch.testing.assert_close(blue_px, torch.tensor(COLOUR_RGB["blue"], dtype=torch.float32))
    assert torch.allclose(records[0].load(t)[0], torch.tensor(220 / 255), atol=0.03)  # JPEG
    with pytest.raises(BadRecordError, match=r"shard-1.tar:004"):
        records[3].load(t)

    with pytest.raises(BadRecordError, match="002: no image member"):
        list(read_webdataset_shards([tmp_path / "shard-0.tar"], strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_glob = list(read_webdataset_shards(str(tmp_path / "shard-*.tar")))
    assert [r.key for r in by_glob] == [r.key for r in records]
    with pytest.raises(FileNotFoundError):
        read_webdataset_shards(str(tmp_path / "shard-{0..2}.tar"))
    with pytest.raises(FileNotFoundError):
        read_webdataset_shards(str(tmp_path / "none-*.tar"))

    # a truncated shard: the samples before the cut are kept, the failure is reported
    data = (tmp_path / "shard-0.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="corrupt or truncated tar"):
        partial = list(read_webdataset_shards(tmp_path / "cut.tar"))
    assert 1 <= len(partial) < 3
    with pytest.raises(BadRecordError, match=r"cut\.tar"):
        list(read_webdataset_shards(tmp_path / "cut.tar", strict=True))


def test_record_from_pil_image():
    scene = generate_scenes(1, seed=0)[0]
    record = ImageTextRecord(key="k", image=scene.image, captions=scene.captions)
    assert record.open().tobytes() == scene.image.tobytes()
