"""Character alphabet for CTC speech recognition: ids 1.. are characters, 0 is the blank.

Transcripts are lower case ``a-z``, space and apostrophe (see
:func:`multitower.data.text.normalize_text`); the alphabet holds the subset seen
in the transcripts it is built from, in sorted order, so the same transcripts
always give the same ids. It is saved as JSON beside the recogniser's weights.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Any

BLANK_ID = 0
ALLOWED_CHARS = frozenset(string.ascii_lowercase + " '")


class CharAlphabet:
    """Maps characters to ids ``1..len(chars)`` and back; id 0 is the CTC blank.

    Args:
        chars: the characters, in id order (``chars[0]`` gets id 1).

    Raises:
        ValueError: ``chars`` is empty, repeats a character, or holds one outside
            ``a-z``, space and apostrophe.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("CharAlphabet needs at least one character")
        bad = sorted({c for c in chars if c not in ALLOWED_CHARS}, key=str)
        if bad:
            raise ValueError(
                f"CharAlphabet characters must be a-z, space or apostrophe, got {bad!r}"
            )
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"CharAlphabet characters must be unique, repeated: {repeated!r}")
        self.chars: tuple[str, ...] = tuple(chars)
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_transcripts(cls, transcripts: Iterable[str]) -> CharAlphabet:
        """The sorted set of characters of ``transcripts``.

        Raises:
            ValueError: a transcript holds a character outside ``a-z``, space and
                apostrophe (the transcript is quoted), or no transcript has any character.
        """
        seen: set[str] = set()
        for i, text in enumerate(transcripts):
            bad = sorted(set(text) - ALLOWED_CHARS)
            if bad:
                raise ValueError(
                    f"transcript {i} ({text!r}) holds characters {bad!r}; only a-z, space "
                    "and apostrophe are allowed (normalise it first)"
                )
            seen.update(text)
        if not seen:
            raise ValueError("cannot build a CharAlphabet: the transcripts hold no character")
        return cls(sorted(seen))

    @property
    def num_classes(self) -> int:
        """Output classes of a CTC model over this alphabet: the characters plus the blank."""
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        """Character ids of ``text`` (each in ``[1, num_classes)``).

        Raises:
            ValueError: ``text`` holds characters outside the alphabet (they are named).
        """
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - set(self._ids))
            raise ValueError(
                f"{text!r} holds characters {unknown!r} that are not in the alphabet "
                f"{''.join(self.chars)!r}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The string of character ids ``ids``.

        Raises:
            ValueError: an id is the blank (0) or lies outside ``[1, num_classes)``.
        """
        out = []
        for i in ids:
            if not 1 <= i < self.num_classes:
                raise ValueError(
                    f"character id {i} is outside [1, {self.num_classes}) "
                    f"(0 is the CTC blank, which has no character)"
                )
            out.append(self.chars[i - 1])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"chars": [...], "blank_id": 0}``."""
        return {"chars": list(self.chars), "blank_id": BLANK_ID}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharAlphabet:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: ``d`` is not such a dict (missing ``chars``, a blank id other
                than 0, or characters that are not single-character strings).
        """
        if not isinstance(d, dict) or "chars" not in d:
            raise ValueError(f"a CharAlphabet dict needs a 'chars' list, got {d!r}")
        if d.get("blank_id", BLANK_ID) != BLANK_ID:
            raise ValueError(f"CharAlphabet blank_id must be {BLANK_ID}, got {d['blank_id']!r}")
        chars = d["chars"]
        if not isinstance(chars, list) or not all(
            isinstance(c, str) and len(c) == 1 for c in chars
        ):
            raise ValueError(
                f"CharAlphabet 'chars' must be a list of single characters, got {chars!r}"
            )
        return cls(chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharAlphabet) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def __repr__(self) -> str:
        return f"CharAlphabet({''.join(self.chars)!r})"
