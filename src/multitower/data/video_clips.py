"""A generated video-text dataset: shapes that move, bounce, appear, disappear and change colour.

Each clip holds one or two shapes (distinct shapes; with two, each keeps to its
own half of the frame, top or bottom, so they never overlap). Every shape does
one thing over the clip:

* ``move``: slides left, right, up or down at constant speed (the speed and the
  path are drawn at random);
* ``bounce``: slides to the left or right edge of the frame, touches it at a
  random frame and slides back (no single frame shows which edge unless it is
  the one of the touch);
* ``appear`` / ``disappear``: is visible only from / until a random frame;
* ``change``: turns from one colour to another at a random frame;
* ``still``: stays put (a control).

From these events the generator writes several captions ("a red circle moves
to the left", "a blue square appears after a green triangle") and
question-answer pairs whose answers need time (which way, appear or disappear,
what colour it turns, which changes first, how many at the end).

**Order-dependent questions.** Each clip is drawn forwards and then, on a fair
coin, played backwards (moves flip direction, appearing becomes disappearing,
``red -> blue`` becomes ``blue -> red``, the order of events flips). A question
is marked ``needs_order`` when its answer on the reversed clip differs. The
reversed clip has exactly the same frames, only in the opposite order, and is
exactly as likely, so a model that sees the frames without their order (frames
shuffled, or a single frame without its time) cannot beat chance on these
questions; report their accuracy separately.

Everything is drawn with Pillow from a ``numpy`` generator seeded by
``(seed, clip index)``: the same seed gives byte-identical frames and texts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from multitower.data.image_datasets import COLOUR_RGB, NUMBER_WORDS, SHAPES, _draw_shape

EVENTS = ("move", "bounce", "appear", "disappear", "change", "still")
DIRECTIONS = ("left", "right", "up", "down")
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
_REVERSED_EVENT = {"appear": "disappear", "disappear": "appear"}


@dataclass(frozen=True)
class ClipConfig:
    """How clips are drawn and described.

    Args:
        image_size: frame width and height in pixels (at least 32).
        num_frames: frames per clip (at least 4).
        max_objects: 1 or 2 shapes per clip (the count is drawn in ``[1, max_objects]``).
        shapes: shape names, from :data:`~multitower.data.image_datasets.SHAPES`.
        colours: colour names (at least two), from ``COLOUR_RGB``.
        background: background colour name, not in ``colours``.
        events: which events may be drawn, from :data:`EVENTS`.
    """

    image_size: int = 64
    num_frames: int = 8
    max_objects: int = 2
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    background: str = "black"
    events: tuple[str, ...] = EVENTS

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"ClipConfig.image_size must be >= 32, got {self.image_size}")
        if self.num_frames < 4:
            raise ValueError(f"ClipConfig.num_frames must be >= 4, got {self.num_frames}")
        if self.max_objects not in (1, 2):
            raise ValueError(f"ClipConfig.max_objects must be 1 or 2, got {self.max_objects}")
        for name, allowed, least in (
            ("shapes", SHAPES, self.max_objects),
            ("colours", tuple(COLOUR_RGB), 2),
            ("events", EVENTS, 1),
        ):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            bad = [v for v in values if v not in allowed]
            if len(values) < least or bad or len(set(values)) != len(values):
                raise ValueError(
                    f"ClipConfig.{name} must be at least {least} distinct names from {allowed}, "
                    f"got {values}"
                )
        if self.background not in COLOUR_RGB or self.background in self.colours:
            raise ValueError(
                f"ClipConfig.background must be one of {tuple(COLOUR_RGB)} and not in colours, "
                f"got {self.background!r}"
            )


@dataclass(frozen=True)
class Event:
    """What one shape does. Positions are the top-left corner in pixels at the first and last frame.

    ``frame``: for ``appear`` the first visible frame, for ``disappear`` the
    first invisible one, for ``change`` the first frame in ``colour_after``, for
    ``bounce`` the frame at which the shape touches the edge ``turn`` (its
    position then); ``direction`` is that edge (``left`` or ``right``).
    """

    kind: str
    shape: str
    colour: str
    side: float
    start: tuple[float, float]
    end: tuple[float, float]
    frame: int = 0
    colour_after: str = ""
    direction: str = ""
    turn: tuple[float, float] = (0.0, 0.0)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def visible(self, f: int) -> bool:
        if self.kind == "appear":
            return f >= self.frame
        if self.kind == "disappear":
            return f < self.frame
        return True

    def colour_at(self, f: int) -> str:
        return self.colour_after if self.kind == "change" and f >= self.frame else self.colour

    def reversed(self, num_frames: int) -> Event:
        """The same event played backwards (frame ``f`` becomes ``num_frames - 1 - f``)."""
        if self.kind == "move":
            return replace(
                self, start=self.end, end=self.start, direction=_OPPOSITE[self.direction]
            )
        if self.kind == "bounce":  # the same edge, touched at the mirrored frame
            return replace(self, start=self.end, end=self.start, frame=num_frames - 1 - self.frame)
        if self.kind in _REVERSED_EVENT:
            return replace(self, kind=_REVERSED_EVENT[self.kind], frame=num_frames - self.frame)
        if self.kind == "change":
            return replace(
                self,
                colour=self.colour_after,
                colour_after=self.colour,
                frame=num_frames - self.frame,
            )
        return self


class VideoQA(NamedTuple):
    """A question about a clip, its answer, and whether the answer needs the frame order."""

    question: str
    answer: str
    needs_order: bool


@dataclass
class Clip:
    """One generated clip.

    Attributes:
        frames: ``(F, H, W, 3)`` uint8 RGB frames.
        captions: lower-case captions, words only.
        qa: the questions (see :class:`VideoQA`).
        events: what each shape does (as shown, after any reversal).
        reversed: whether the drawn clip was played backwards.
    """

    frames: np.ndarray
    captions: list[str]
    qa: list[VideoQA]
    events: list[Event]
    reversed: bool


# --------------------------------------------------------------------------- sampling


def _sample_event(
    rng: np.random.Generator, shape: str, band: tuple[float, float], config: ClipConfig
) -> Event:
    """One shape's event inside the vertical ``band`` ``(y0, y1)`` of the frame."""
    size = config.image_size
    F = config.num_frames
    y0, y1 = band
    side = float(rng.uniform(0.22, 0.3) * size)
    colours = config.colours
    colour = colours[int(rng.integers(len(colours)))]
    kind = config.events[int(rng.integers(len(config.events)))]

    def spot() -> tuple[float, float]:
        return (float(rng.uniform(0, size - side)), float(rng.uniform(y0, y1 - side)))

    if kind == "move":
        direction = DIRECTIONS[int(rng.integers(4))]
        lo, hi = (0.0, size - side) if direction in ("left", "right") else (y0, y1 - side)
        travel = float(rng.uniform(0.6, 1.0)) * (hi - lo)  # the speed varies from clip to clip
        a = float(rng.uniform(lo, hi - travel))
        first, last = (a + travel, a) if direction in ("left", "up") else (a, a + travel)
        x, y = spot()
        if direction in ("left", "right"):
            return Event(kind, shape, colour, side, (first, y), (last, y), direction=direction)
        return Event(kind, shape, colour, side, (x, first), (x, last), direction=direction)
    if kind == "bounce":
        direction = ("left", "right")[int(rng.integers(2))]
        lo, hi = 0.0, size - side
        edge = lo if direction == "left" else hi

        def away() -> float:  # at least 40% of the way across the frame from the edge
            depth = float(rng.uniform(0.4, 1.0)) * (hi - lo)
            return edge + depth if direction == "left" else edge - depth

        x0, x1 = away(), away()
        y = spot()[1]
        frame = int(rng.integers(1, F - 1))  # neither the first nor the last frame
        return Event(
            kind, shape, colour, side, (x0, y), (x1, y), frame=frame, direction=direction,
            turn=(edge, y),
        )  # fmt: skip
    pos = spot()
    if kind in ("appear", "disappear"):
        frame = int(rng.integers(1, F))  # visible on some frames and not on others
        return Event(kind, shape, colour, side, pos, pos, frame=frame)
    if kind == "change":
        others = [c for c in colours if c != colour]
        after = others[int(rng.integers(len(others)))]
        frame = int(rng.integers(1, F))
        return Event(kind, shape, colour, side, pos, pos, frame=frame, colour_after=after)
    return Event(kind, shape, colour, side, pos, pos)


def render_frames(events: list[Event], config: ClipConfig) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames of the events (no randomness: positions are in the events)."""
    size, F = config.image_size, config.num_frames
    frames = []
    for f in range(F):
        image = Image.new("RGB", (size, size), COLOUR_RGB[config.background])
        draw = ImageDraw.Draw(image)
        for ev in events:
            if not ev.visible(f):
                continue
            x, y = _position(ev, f, F)
            box = (x, y, x + ev.side - 1.0, y + ev.side - 1.0)
            _draw_shape(draw, ev.shape, box, COLOUR_RGB[ev.colour_at(f)])
        frames.append(np.asarray(image))
    return np.stack(frames)  # (F, H, W, 3)


def _position(ev: Event, f: int, num_frames: int) -> tuple[float, float]:
    """The top-left corner of ``ev``'s shape at frame ``f``: a straight line from ``start``
    to ``end`` (for ``bounce``, from ``start`` to ``turn`` at ``frame`` and on to ``end``).
    Integer weights, so a reversed event lands on bit-identical positions."""
    if ev.kind == "bounce":
        if f == ev.frame:
            return ev.turn
        a, b, t, n = (ev.start, ev.turn, f, ev.frame)
        if f > ev.frame:
            a, b, t, n = (ev.turn, ev.end, f - ev.frame, num_frames - 1 - ev.frame)
    else:
        a, b, t, n = (ev.start, ev.end, f, num_frames - 1)
    return ((a[0] * (n - t) + b[0] * t) / n, (a[1] * (n - t) + b[1] * t) / n)


# ------------------------------------------------------------------------------ text


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _sentence(ev: Event) -> str:
    if ev.kind == "move":
        where = f"to the {ev.direction}" if ev.direction in ("left", "right") else ev.direction
        return f"{_a(ev.name)} moves {where}"
    if ev.kind == "bounce":
        return f"{_a(ev.name)} bounces off the {ev.direction} side"
    if ev.kind in ("appear", "disappear"):
        return f"{_a(ev.name)} {ev.kind}s"
    if ev.kind == "change":
        return f"{_a(ev.name)} turns {ev.colour_after}"
    return f"{_a(ev.name)} stays still"


def _timed(ev: Event) -> bool:
    return ev.kind in ("appear", "disappear", "change")


def _captions(events: list[Event]) -> list[str]:
    sentences = [_sentence(ev) for ev in events]
    captions = [" and ".join(sentences)]
    if len(events) == 2:
        captions.append(" and ".join(reversed(sentences)))
        a, b = events
        if _timed(a) and _timed(b) and a.frame != b.frame:
            first, second = (a, b) if a.frame < b.frame else (b, a)
            captions.append(f"{_sentence(second)} after {_a(first.name)}")
            captions.append(f"{_sentence(first)} before {_a(second.name)}")
    captions += [s for s in sentences if s not in captions]
    return captions


def _questions(events: list[Event], num_frames: int) -> list[tuple[str, str]]:
    """Question-answer pairs in an order that depends only on the event kinds' reversal classes."""
    qa: list[tuple[str, str]] = []
    for ev in events:
        if ev.kind == "move":
            qa.append((f"which way does the {ev.shape} move", ev.direction))
            qa.append((f"what colour is the {ev.shape}", ev.colour))  # any frame tells
        elif ev.kind == "bounce":  # the same edge backwards: needs motion, not the order
            qa.append((f"which side does the {ev.shape} bounce off", ev.direction))
            qa.append((f"what colour is the {ev.shape}", ev.colour))
        elif ev.kind in ("appear", "disappear"):
            qa.append((f"does the {ev.shape} appear or disappear", ev.kind))
            qa.append((f"what colour is the {ev.shape}", ev.colour))
        elif ev.kind == "change":
            qa.append((f"what colour does the {ev.shape} turn", ev.colour_after))
            qa.append((f"what colour is the {ev.shape} at the start", ev.colour))
        else:
            qa.append((f"does the {ev.shape} move", "no"))
            qa.append((f"what colour is the {ev.shape}", ev.colour))
    for when, f in (("start", 0), ("end", num_frames - 1)):
        count = sum(ev.visible(f) for ev in events)
        qa.append((f"how many shapes are there at the {when}", NUMBER_WORDS[count]))
    if len(events) == 2 and all(_timed(ev) for ev in events) and events[0].frame != events[1].frame:
        first = min(events, key=lambda ev: ev.frame)
        qa.append(("which shape changes first", first.shape))
    return qa


def _qa_with_order(events: list[Event], num_frames: int) -> list[VideoQA]:
    here = _questions(events, num_frames)
    backwards = _questions([ev.reversed(num_frames) for ev in events], num_frames)
    assert [q for q, _ in here] == [q for q, _ in backwards], "reversal keeps the questions"
    return [VideoQA(q, a, a != b) for (q, a), (_, b) in zip(here, backwards)]


# ------------------------------------------------------------------------------ public


def generate_clip(index: int, seed: int, config: ClipConfig | None = None) -> Clip:
    """Clip ``index`` of the set drawn with ``seed`` (independent of how many clips are drawn)."""
    config = config or ClipConfig()
    rng = np.random.default_rng([seed, index])
    n = int(rng.integers(1, config.max_objects + 1))
    shapes = [config.shapes[int(i)] for i in rng.permutation(len(config.shapes))[:n]]
    size = float(config.image_size)
    bands = [(0.0, size)] if n == 1 else [(0.0, size / 2), (size / 2, size)]
    events = [_sample_event(rng, s, band, config) for s, band in zip(shapes, bands)]
    backwards = bool(rng.random() < 0.5)
    if backwards:
        events = [ev.reversed(config.num_frames) for ev in events]
    return Clip(
        render_frames(events, config),
        _captions(events),
        _qa_with_order(events, config.num_frames),
        events,
        backwards,
    )


def generate_clips(n: int, seed: int, config: ClipConfig | None = None) -> list[Clip]:
    """Clips ``0 .. n-1`` of the set drawn with ``seed``."""
    if n < 0:
        raise ValueError(f"number of clips must be >= 0, got {n}")
    return [generate_clip(i, seed, config) for i in range(n)]
