"""How the TTS scorer turns the recogniser's frames into text, and how it is tuned.

:class:`TextDecoder` is greedy best-path decoding or CTC prefix beam search with a
lexicon and a word n-gram LM; :func:`tune_decoder` picks the LM weight and word
bonus on held-out pairs; ``decoder.json`` beside a recogniser saves the choice.
Split from :mod:`.recognizer`, which trains and runs the acoustic model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import torch

from multitower.data.charset import CharAlphabet
from multitower.data.ngram_lm import NgramLM
from multitower.generation.ctc import greedy_decode
from multitower.generation.ctc_beam import LexiconScorer, prefix_beam_search
from multitower.io import write_text_atomic

DECODER_NAME = "decoder.json"


class TextDecoder:
    """Frame log-probabilities -> text: greedy, or beam search with a lexicon and a word LM.

    ``beam_size=None`` is greedy best-path decoding
    (:func:`~multitower.generation.ctc.greedy_decode`); an int is CTC prefix beam
    search (:func:`~multitower.generation.ctc_beam.prefix_beam_search`), constrained
    to ``lexicon`` when one is given and scored by ``lm`` with ``lm_weight`` and
    ``word_bonus`` per word (see :class:`~multitower.generation.ctc_beam.LexiconScorer`).

    Raises:
        ValueError: ``beam_size < 1``, or a lexicon or LM without a beam.
    """

    def __init__(
        self,
        alphabet: CharAlphabet,
        *,
        beam_size: int | None = None,
        lexicon: Sequence[str] | None = None,
        lm: NgramLM | None = None,
        lm_weight: float = 0.0,
        word_bonus: float = 0.0,
        prune_log_prob: float = -8.0,
    ) -> None:
        if beam_size is not None and beam_size < 1:
            raise ValueError(f"beam_size must be >= 1 or None (greedy), got {beam_size}")
        if beam_size is None and (lexicon is not None or lm is not None):
            raise ValueError("a lexicon or an LM needs beam search (beam_size >= 1)")
        self.alphabet = alphabet
        self.beam_size = beam_size
        self.lexicon = sorted(set(lexicon)) if lexicon is not None else None
        self.lm = lm
        self.lm_weight = lm_weight
        self.word_bonus = word_bonus
        self.prune_log_prob = prune_log_prob
        self.scorer: LexiconScorer | None = None
        if beam_size is not None and (lexicon is not None or lm is not None or word_bonus):
            chars = ["", *alphabet.chars]  # class id -> character (0: the blank)
            if " " not in chars:
                raise ValueError("word-level decoding needs the space in the alphabet")
            self.scorer = LexiconScorer(
                chars, lexicon=self.lexicon, lm=lm, lm_weight=lm_weight, word_bonus=word_bonus
            )

    def with_weights(self, lm_weight: float, word_bonus: float) -> TextDecoder:
        """The same decoder with another LM weight and word bonus."""
        return TextDecoder(
            self.alphabet,
            beam_size=self.beam_size,
            lexicon=self.lexicon,
            lm=self.lm,
            lm_weight=lm_weight,
            word_bonus=word_bonus,
            prune_log_prob=self.prune_log_prob,
        )

    def decode(self, log_probs: torch.Tensor) -> str:
        """The text of one utterance's ``(T, C)`` log-probabilities."""
        if self.beam_size is None:
            ids = greedy_decode(log_probs[None], torch.tensor([log_probs.shape[0]]))[0]
        else:
            ids = prefix_beam_search(
                log_probs,
                beam_size=self.beam_size,
                scorer=self.scorer,
                prune_log_prob=self.prune_log_prob,
            )
        return self.alphabet.decode(ids)

    def describe(self) -> str:
        """A short name: ``greedy``, ``beam 16``, ``beam 16 + lexicon + 3-gram LM (w, b)``."""
        if self.beam_size is None:
            return "greedy"
        parts = [f"beam {self.beam_size}"]
        if self.lexicon is not None:
            parts.append("lexicon")
        if self.lm is not None:
            parts.append(f"{self.lm.order}-gram LM ({self.lm_weight:g}, {self.word_bonus:g})")
        return " + ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the LM as :meth:`NgramLM.to_dict`); :meth:`from_dict` reads it."""
        return {
            "beam_size": self.beam_size,
            "lm_weight": self.lm_weight,
            "word_bonus": self.word_bonus,
            "prune_log_prob": self.prune_log_prob,
            "lexicon": self.lexicon,
            "lm": self.lm.to_dict() if self.lm is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], alphabet: CharAlphabet) -> TextDecoder:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing keys.
        """
        keys = {"beam_size", "lm_weight", "word_bonus", "prune_log_prob", "lexicon", "lm"}
        if not isinstance(d, dict) or set(d) != keys:
            raise ValueError(f"a TextDecoder dict needs exactly the keys {sorted(keys)}")
        return cls(
            alphabet,
            beam_size=d["beam_size"],
            lexicon=d["lexicon"],
            lm=NgramLM.from_dict(d["lm"]) if d["lm"] is not None else None,
            lm_weight=float(d["lm_weight"]),
            word_bonus=float(d["word_bonus"]),
            prune_log_prob=float(d["prune_log_prob"]),
        )


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER: character edits over reference characters (``jiwer.cer``)."""
    return float(jiwer.cer(list(references), list(hypotheses)))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: word edits over reference words (``jiwer.wer``)."""
    return float(jiwer.wer(list(references), list(hypotheses)))


def tune_decoder(
    decoder: TextDecoder,
    log_probs: Sequence[torch.Tensor],
    references: Sequence[str],
    *,
    lm_weights: Sequence[float],
    word_bonuses: Sequence[float],
) -> tuple[TextDecoder, list[dict[str, float]]]:
    """The LM weight and word bonus with the lowest WER (then CER) on held-out pairs.

    Every combination of ``lm_weights`` x ``word_bonuses`` decodes ``log_probs``
    (from :func:`frame_log_probs`); ties keep the first in grid order. Use
    validation pairs, never the test set whose WER is reported.

    Returns:
        ``(decoder with the best weights, [{"lm_weight", "word_bonus", "wer", "cer"}, ...])``.

    Raises:
        ValueError: an empty grid or no references.
    """
    if not lm_weights or not word_bonuses or not references:
        raise ValueError("tune_decoder needs a non-empty grid and at least one reference")
    grid = []
    best: tuple[tuple[float, float], TextDecoder] | None = None
    for weight in lm_weights:
        for bonus in word_bonuses:
            candidate = decoder.with_weights(weight, bonus)
            hyps = [candidate.decode(lp) if lp.shape[0] else "" for lp in log_probs]
            row = {
                "lm_weight": weight,
                "word_bonus": bonus,
                "wer": word_error_rate(references, hyps),
                "cer": character_error_rate(references, hyps),
            }
            grid.append(row)
            if best is None or (row["wer"], row["cer"]) < best[0]:
                best = ((row["wer"], row["cer"]), candidate)
    assert best is not None
    return best[1], grid


def save_decoder(decoder: TextDecoder, directory: str | os.PathLike[str]) -> None:
    """Write ``decoder.json`` (see :meth:`TextDecoder.to_dict`) into ``directory``."""
    write_text_atomic(Path(directory) / DECODER_NAME, json.dumps(decoder.to_dict()) + "\n")


def load_decoder(directory: str | os.PathLike[str], alphabet: CharAlphabet) -> TextDecoder:
    """The ``decoder.json`` of ``directory``, or greedy decoding if there is none.

    Raises:
        ValueError: ``decoder.json`` is not valid JSON or not a decoder.
    """
    path = Path(directory) / DECODER_NAME
    if not path.is_file():
        return TextDecoder(alphabet)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    try:
        return TextDecoder.from_dict(data, alphabet)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
