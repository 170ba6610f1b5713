"""Text data: the normaliser and readers for plain-text files and WordNet examples.

:func:`normalize_text` is the one normaliser used wherever text is scored or
compared; :func:`read_text_file` and :func:`read_wordnet_examples` read sentence
sources through it. Generated sentences come from :mod:`multitower.data.sentences`.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from multitower.data.errors import BadRecordError

_SPEAKABLE = re.compile(r"[a-z']+( [a-z']+)*")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})


def normalize_text(s: str) -> str:
    """Normalise text for training and scoring.

    Steps: Unicode NFKD with combining accents removed ("café" -> "cafe"), lower
    case, typographic apostrophes mapped to ``'``, every other punctuation or
    symbol character replaced by a space (so "well-known" -> "well known"),
    apostrophes kept only inside a word ("don't", "o'clock"; quotes such as
    ``'hello'`` and a trailing ``dogs'`` lose theirs), whitespace collapsed to
    single spaces and stripped. Letters and digits are kept.

    Args:
        s: any text.

    Returns:
        The normalised text; ``""`` when nothing is left.
    """
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.lower().translate(_APOSTROPHES)
    s = re.sub(r"[^\w\s']|_", " ", s)
    s = re.sub(r"(?<!\w)'|'(?!\w)", " ", s)
    return " ".join(s.split())


def is_speakable(s: str) -> bool:
    """True when ``s`` is non-empty, single-spaced and only ``a-z``, space and ``'``."""
    return _SPEAKABLE.fullmatch(s) is not None


# ----------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------
def read_text_file(path: str | Path) -> list[str]:
    """Read one sentence per line, normalised with :func:`normalize_text`.

    Lines that are empty after normalisation are skipped.

    Args:
        path: a UTF-8 text file.

    Returns:
        The normalised sentences in file order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        BadRecordError: if the file is not valid UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BadRecordError(f"{path}: not valid UTF-8 text ({err})") from err
    return [s for s in (normalize_text(line) for line in text.splitlines()) if s]


_WORDNET_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_QUOTED = re.compile(r'"([^"]+)"')


def read_wordnet_examples(
    root: str | Path = "/usr/share/wordnet", *, speakable_only: bool = True, min_words: int = 3
) -> list[str]:
    """Read the example sentences of WordNet 3 glosses (Debian package ``wordnet-base``).

    Every synset line of ``data.noun``, ``data.verb``, ``data.adj`` and
    ``data.adv`` ends with ``| gloss``; the examples are the double-quoted parts
    of the gloss (``"he ran the race"``). Licence header lines (starting with two
    spaces) are skipped.

    Args:
        root: folder holding the ``data.*`` files.
        speakable_only: keep only examples that are ``a-z``, space and apostrophe
            after normalisation (drops those with digits or other scripts).
        min_words: drop examples shorter than this.

    Returns:
        Normalised examples, duplicates removed, in file order.

    Raises:
        FileNotFoundError: if none of the data files exist under ``root``.
    """
    root = Path(root)
    files = [root / name for name in _WORDNET_DATA_FILES if (root / name).is_file()]
    if not files:
        raise FileNotFoundError(
            f"no WordNet data files ({', '.join(_WORDNET_DATA_FILES)}) under {root}; "
            "install Debian's wordnet-base package (apt-get install wordnet-base) or pass root="
        )
    seen: dict[str, None] = {}
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                gloss = line.split("|", 1)[1]
                for quoted in _QUOTED.findall(gloss):
                    s = normalize_text(quoted)
                    if len(s.split()) < min_words or (speakable_only and not is_speakable(s)):
                        continue
                    seen.setdefault(s, None)
    return list(seen)
