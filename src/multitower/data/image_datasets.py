"""A generated image-text dataset: coloured shapes on a plain background.

Each scene places 1-4 (configurable) shapes in distinct cells of a 3x3 grid, so
objects never overlap and every position ("in the top left", "on the right") and
spatial relation ("a blue square left of a green triangle") holds without
ambiguity. From the drawn objects the generator writes captions (object listings
with counts, single-object descriptions with size and position, relations),
question-answer pairs (colour, shape, size, position, counting, existence,
relations), and per-object boxes and class names for detection.

Everything is drawn with Pillow from a ``numpy`` generator seeded by
``(seed, scene index)``: the same seed gives byte-identical images and the same
texts, and scene ``i`` does not depend on how many scenes were asked for.
:func:`write_coco_style` writes a set in COCO-captions layout so it is read by
the same reader as real data (:func:`~multitower.data.image_readers.read_coco_captions`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from multitower.io import write_text_atomic

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
PLURALS: dict[str, str] = {s: s + "es" if s.endswith("s") else s + "s" for s in SHAPES}
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 10),
    "white": (245, 245, 245),
    "black": (0, 0, 0),
}
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip
GRID = 3  # positions are thirds of the image: left/center/right x top/middle/bottom
ROW_WORDS = ("top", "middle", "bottom")
COL_WORDS = ("left", "center", "right")
# Object side as a fraction of a grid cell.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.40, 0.55), "large": (0.78, 0.95)}


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn and described.

    Args:
        image_size: width and height in pixels (at least 32).
        min_objects: fewest objects per scene (>= 1).
        max_objects: most objects per scene (<= 9, one per grid cell).
        shapes: shape names to draw, from :data:`SHAPES`.
        colours: colour names to draw, from :data:`COLOUR_RGB`.
        background: background colour name, from :data:`COLOUR_RGB`, not in ``colours``.
        repeat_prob: chance that an object reuses the shape of an earlier one
            (and then, half the time, its colour too), so counts above one occur.
        captions_per_image: distinct captions per scene.
        questions_per_image: distinct question-answer pairs per scene (fewer when
            a scene has fewer valid questions).
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    background: str = "black"
    repeat_prob: float = 0.35
    captions_per_image: int = 5
    questions_per_image: int = 6

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"SceneConfig.image_size must be >= 32, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID:
            raise ValueError(
                "SceneConfig needs 1 <= min_objects <= max_objects <= 9, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "colours", tuple(self.colours))
        for name, allowed in (("shapes", SHAPES), ("colours", tuple(COLOUR_RGB))):
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if not values or bad or len(set(values)) != len(values):
                raise ValueError(
                    f"SceneConfig.{name} must be distinct names from {allowed}, got {values}"
                )
        if self.background not in COLOUR_RGB or self.background in self.colours:
            raise ValueError(
                f"SceneConfig.background must be one of {tuple(COLOUR_RGB)} and not in colours, "
                f"got {self.background!r}"
            )
        if not 0.0 <= self.repeat_prob <= 1.0:
            raise ValueError(f"SceneConfig.repeat_prob must lie in [0, 1], got {self.repeat_prob}")
        if self.captions_per_image < 1 or self.questions_per_image < 0:
            raise ValueError(
                "SceneConfig needs captions_per_image >= 1 and questions_per_image >= 0, got "
                f"{self.captions_per_image} and {self.questions_per_image}"
            )


@dataclass
class Scene:
    """One generated image with its texts and objects.

    Attributes:
        image: the RGB image.
        captions: lower-case captions, words only.
        qa: ``(question, answer)`` pairs, lower case, words only.
        boxes: per object, the tight pixel box ``(x0, y0, x1, y1)`` of its drawn
            pixels, with ``x1``/``y1`` exclusive.
        labels: per object, its class name (the shape).
        colours: per object, its colour name.
        sizes: per object, ``"small"`` or ``"large"``.
    """

    image: Image.Image
    captions: list[str]
    qa: list[tuple[str, str]]
    boxes: list[tuple[float, float, float, float]]
    labels: list[str]
    colours: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Object:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


# --------------------------------------------------------------------------- drawing


def _polygon(cx: float, cy: float, radii: Sequence[float], start_deg: float) -> list[tuple]:
    step = 360.0 / len(radii)
    return [
        (cx + r * math.cos(math.radians(start_deg + i * step)),
         cy + r * math.sin(math.radians(start_deg + i * step)))
        for i, r in enumerate(radii)
    ]  # fmt: skip


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple, fill) -> None:
    """Draw ``shape`` filling the square ``box = (x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r, 0.45 * r] * 5, -90.0), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, [r] * 6, 0.0), fill=fill)
    elif shape == "cross":
        arm = r / 3
        draw.rectangle((cx - arm, y0, cx + arm, y1), fill=fill)
        draw.rectangle((x0, cy - arm, x1, cy + arm), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _sample_objects(rng: np.random.Generator, config: SceneConfig) -> list[_Object]:
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    cells = rng.permutation(GRID * GRID)[:n]
    objects: list[_Object] = []
    for cell in cells:
        if objects and rng.random() < config.repeat_prob:
            previous = objects[int(rng.integers(len(objects)))]
            shape = previous.shape
            if rng.random() < 0.5:
                colour = previous.colour
            else:
                colour = config.colours[int(rng.integers(len(config.colours)))]
        else:
            shape = config.shapes[int(rng.integers(len(config.shapes)))]
            colour = config.colours[int(rng.integers(len(config.colours)))]
        size = "large" if rng.random() < 0.5 else "small"
        objects.append(_Object(shape, colour, size, int(cell) // GRID, int(cell) % GRID))
    return objects


def _render(
    rng: np.random.Generator, objects: list[_Object], config: SceneConfig
) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    size = config.image_size
    image = Image.new("RGB", (size, size), COLOUR_RGB[config.background])
    draw = ImageDraw.Draw(image)
    cell = size / GRID
    boxes = []
    for obj in objects:
        lo, hi = SIZE_RANGES[obj.size]
        side = cell * (lo + (hi - lo) * rng.random())
        # Keep one pixel clear of the cell border so neighbours never touch.
        slack = max(cell - side - 2.0, 0.0)
        x0 = obj.col * cell + 1.0 + slack * rng.random()
        y0 = obj.row * cell + 1.0 + slack * rng.random()
        square = (x0, y0, x0 + side - 1.0, y0 + side - 1.0)  # PIL boxes are inclusive
        _draw_shape(draw, obj.shape, square, COLOUR_RGB[obj.colour])
        mask = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask), obj.shape, square, 255)
        bbox = mask.getbbox()
        assert bbox is not None, "every object covers at least one pixel"
        boxes.append(tuple(float(v) for v in bbox))
    return image, boxes


# ------------------------------------------------------------------------------ text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _a(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def _counted(count: int, singular: str, plural: str) -> str:
    return _a(singular) if count == 1 else f"{NUMBER_WORDS[count]} {plural}"


def _position_phrase(obj: _Object) -> str:
    if obj.row == 1 and obj.col == 1:
        return "in the center"
    if obj.row == 1:
        return f"on the {COL_WORDS[obj.col]}"
    if obj.col == 1:
        return f"at the {ROW_WORDS[obj.row]}"
    return f"in the {ROW_WORDS[obj.row]} {COL_WORDS[obj.col]}"


def _position_answer(obj: _Object) -> str:
    return _position_phrase(obj).split(" ", 2)[-1]


_RELATIONS = {  # relation word -> test that a stands in that relation to b
    "left of": lambda a, b: a.col < b.col,
    "right of": lambda a, b: a.col > b.col,
    "above": lambda a, b: a.row < b.row,
    "below": lambda a, b: a.row > b.row,
}


def _listing(objects: list[_Object]) -> tuple[str, int]:
    """ "two red circles and a blue square", and the count of the first group."""
    groups = Counter(obj.name for obj in sorted(objects, key=lambda o: (o.row, o.col)))
    parts = []
    for name, count in groups.items():
        colour, shape = name.split(" ")
        parts.append(_counted(count, name, f"{colour} {PLURALS[shape]}"))
    return " and ".join(parts), next(iter(groups.values()))


def _captions(rng: np.random.Generator, objects: list[_Object], config: SceneConfig) -> list[str]:
    listing, first_count = _listing(objects)
    be = "is" if first_count == 1 else "are"
    n = len(objects)
    listings = [
        listing,
        f"there {be} {listing}",
        f"a picture of {listing}",
        f"an image with {listing}",
        f"{listing} on a {config.background} background",
    ]
    others = [f"a scene with {_counted(n, 'shape', 'shapes')}"]
    for obj in objects:
        others.append(f"{_a(obj.size + ' ' + obj.name)} {_position_phrase(obj)}")
        others.append(f"{_a(obj.name)} {_position_phrase(obj)}")
    for a in objects:
        for b in objects:
            for word, holds in _RELATIONS.items():
                if a is not b and a.name != b.name and holds(a, b):
                    others.append(f"{_a(a.name)} {word} {_a(b.name)}")
    shape_counts = Counter(obj.shape for obj in objects)
    for shape, count in shape_counts.items():
        if count > 1:
            others.append(f"there are {NUMBER_WORDS[count]} {PLURALS[shape]}")
    others = list(dict.fromkeys(others))
    # One listing caption always comes first; the rest are drawn from everything true.
    first = listings[int(rng.integers(len(listings)))]
    pool = [c for c in dict.fromkeys(listings + others) if c != first]
    order = rng.permutation(len(pool))
    return [first] + [pool[i] for i in order[: config.captions_per_image - 1]]


def _reference(obj: _Object, objects: list[_Object]) -> str | None:
    """The shortest unique description of ``obj`` ("square", "red square"), if any."""
    if sum(o.shape == obj.shape for o in objects) == 1:
        return obj.shape
    if sum(o.name == obj.name for o in objects) == 1:
        return obj.name
    return None


def _questions(
    rng: np.random.Generator, objects: list[_Object], config: SceneConfig
) -> list[tuple[str, str]]:
    by_type: dict[str, list[tuple[str, str]]] = {}

    def add(kind: str, question: str, answer: str) -> None:
        by_type.setdefault(kind, []).append((question, answer))

    shape_counts = Counter(o.shape for o in objects)
    colour_counts = Counter(o.colour for o in objects)
    names = {o.name for o in objects}
    add("count_all", "how many objects are there", NUMBER_WORDS[len(objects)])
    add("count_all", "how many shapes are there", NUMBER_WORDS[len(objects)])
    for shape in config.shapes:
        add(
            "count_shape", f"how many {PLURALS[shape]} are there", NUMBER_WORDS[shape_counts[shape]]
        )
        add("exists", f"is there {_a(shape)}", "yes" if shape_counts[shape] else "no")
    for colour in config.colours:
        add(
            "count_colour",
            f"how many {colour} objects are there",
            NUMBER_WORDS[colour_counts[colour]],
        )
        for shape in config.shapes:
            name = f"{colour} {shape}"
            if name in names or rng.random() < 0.1:
                add("exists_name", f"is there {_a(name)}", "yes" if name in names else "no")
    for shape, count in shape_counts.items():
        if count == 1:
            obj = next(o for o in objects if o.shape == shape)
            add("colour_of", f"what color is the {shape}", obj.colour)
    for colour, count in colour_counts.items():
        if count == 1:
            obj = next(o for o in objects if o.colour == colour)
            add("shape_of", f"what shape is the {colour} object", obj.shape)
    for obj in objects:
        ref = _reference(obj, objects)
        if ref is None:
            continue
        add("size_of", f"is the {ref} large or small", obj.size)
        add("where", f"where is the {ref}", _position_answer(obj))
        for word, holds in _RELATIONS.items():
            matches = [o for o in objects if o is not obj and holds(o, obj)]
            if len(matches) == 1:
                add("relation", f"what shape is {word} the {ref}", matches[0].shape)
                add("relation", f"what color is the shape {word} the {ref}", matches[0].colour)
    # Round-robin over question types in random order, for variety.
    kinds = [sorted(by_type)[i] for i in rng.permutation(len(by_type))]
    queues = {k: [by_type[k][i] for i in rng.permutation(len(by_type[k]))] for k in kinds}
    chosen: list[tuple[str, str]] = []
    while len(chosen) < config.questions_per_image and any(queues.values()):
        for kind in kinds:
            if queues[kind] and len(chosen) < config.questions_per_image:
                chosen.append(queues[kind].pop(0))
    return chosen


# --------------------------------------------------------------------------- public


def generate_scene(index: int, seed: int, config: SceneConfig | None = None) -> Scene:
    """Generate scene number ``index`` of the set with this ``seed`` (see :func:`generate_scenes`)."""
    config = config if config is not None else SceneConfig()
    rng = np.random.default_rng([seed, index])
    objects = _sample_objects(rng, config)
    image, boxes = _render(rng, objects, config)
    return Scene(
        image=image,
        captions=_captions(rng, objects, config),
        qa=_questions(rng, objects, config),
        boxes=boxes,
        labels=[o.shape for o in objects],
        colours=[o.colour for o in objects],
        sizes=[o.size for o in objects],
    )


def generate_scenes(n: int, seed: int, config: SceneConfig | None = None) -> list[Scene]:
    """Generate ``n`` scenes, deterministically from ``seed``.

    Scene ``i`` is drawn from a generator seeded by ``(seed, i)``, so the first
    ``k`` scenes of a set do not depend on ``n``, and the same arguments give
    byte-identical images and identical texts.

    Args:
        n: number of scenes (>= 0).
        seed: non-negative integer seed.
        config: drawing and text options (default :class:`SceneConfig`).
    """
    if n < 0 or seed < 0:
        raise ValueError(f"generate_scenes needs n >= 0 and seed >= 0, got n={n}, seed={seed}")
    config = config if config is not None else SceneConfig()
    return [generate_scene(i, seed, config) for i in range(n)]


def write_coco_style(
    scenes: Sequence[Scene],
    out_dir: str | Path,
    *,
    annotations_name: str = "captions.json",
    image_dir_name: str = "images",
) -> Path:
    """Write scenes as PNG files plus a COCO-captions JSON file.

    Layout: ``out_dir/images/000000.png, ...`` and ``out_dir/captions.json`` with
    ``"images"`` (``id``, ``file_name``, ``width``, ``height``, and the scene's
    ``qa``, ``boxes``, ``labels``) and ``"annotations"`` (``id``, ``image_id``,
    ``caption``). Read it back with
    ``read_coco_captions(path, out_dir / "images")``.

    Returns:
        The path of the JSON file.
    """
    root = Path(out_dir)
    image_dir = root / image_dir_name
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, scene in enumerate(scenes):
        file_name = f"{image_id:06d}.png"
        scene.image.save(image_dir / file_name, format="PNG")
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": scene.image.width,
                "height": scene.image.height,
                "qa": [list(pair) for pair in scene.qa],
                "boxes": [list(box) for box in scene.boxes],
                "labels": list(scene.labels),
            }
        )
        for caption in scene.captions:
            annotations.append({"id": len(annotations), "image_id": image_id, "caption": caption})
    path = root / annotations_name
    payload = {"info": {"description": "multitower generated shapes"}, "images": images,
               "annotations": annotations}  # fmt: skip
    write_text_atomic(path, json.dumps(payload, indent=1))
    return path


def captions_vocabulary(scenes: Sequence[Scene], *, include_qa: bool = True) -> list[str]:
    """The sorted set of words in the scenes' captions (and questions and answers).

    Args:
        scenes: generated scenes.
        include_qa: also collect the words of questions and answers, so a
            tokenizer built from the list covers VQA prompts too.
    """
    words: set[str] = set()
    for scene in scenes:
        for caption in scene.captions:
            words.update(caption.split())
        if include_qa:
            for question, answer in scene.qa:
                words.update(question.split())
                words.update(answer.split())
    return sorted(words)
