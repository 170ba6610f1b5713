"""How many speech units a run's corpus spends per character of text: the TTS length cap.

A model that never emits ``eos`` would otherwise fill its whole budget (a 1.4 s
sentence became 16 s of audio). :func:`units_per_character` measures the rate on
the run's aligned pairs (the units written by the encode-units stage over the
normalised transcripts), and :func:`speech_length_cap` turns a text into the
most units worth generating for it: the rate times the characters times a margin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from multitower.config import load_config
from multitower.data.speech.librispeech import read_librispeech
from multitower.data.text import normalize_text

# Generated speech may run this many times longer than the corpus's mean rate
# predicts (slow speakers, pauses) before it is cut.
LENGTH_MARGIN = 2.0
MIN_CAP = 8  # a one-letter text still gets a few units


def units_per_character(run_dir: str | Path) -> float:
    """Speech units per transcript character over the run's aligned pairs.

    Args:
        run_dir: a speech-text run with ``units/encoded.json`` and its corpus.

    Raises:
        ValueError: the encoded units, the corpus or its transcripts are missing or
            do not line up (the message says which).
    """
    run_dir = Path(run_dir)
    encoded_path = run_dir / "units" / "encoded.json"
    if not encoded_path.is_file():
        raise ValueError(f"{encoded_path} is missing (the encode-units stage did not finish)")
    units = json.loads(encoded_path.read_text(encoding="utf-8"))["aligned"]
    corpus_dir = load_config(run_dir / "config.yaml").get("corpus", {}).get("dir")
    root = Path(corpus_dir) if corpus_dir else run_dir / "corpus"
    # The encode-units stage encoded the aligned split in this order.
    texts = [normalize_text(u.transcript) for u in read_librispeech(root / "aligned")]
    if len(texts) != len(units) or not texts:
        raise ValueError(
            f"{root / 'aligned'} has {len(texts)} transcripts for {len(units)} encoded utterances"
        )
    chars = sum(len(t) for t in texts)
    if chars == 0:
        raise ValueError(f"{root / 'aligned'}: every transcript is empty")
    return sum(len(u) for u in units) / chars


def speech_length_cap(text: str, rate: float, margin: float = LENGTH_MARGIN) -> int:
    """Most speech units to generate for ``text``: ``ceil(margin * rate * len(text))``.

    Args:
        text: the normalised text.
        rate: units per character (:func:`units_per_character`).
        margin: how much longer than the mean rate the speech may be.
    """
    return max(MIN_CAP, math.ceil(margin * rate * len(text)))
