"""CTC prefix beam search, optionally constrained to a lexicon and scored by a word LM.

Hannun et al. 2014, "First-Pass Large Vocabulary Continuous Speech Recognition
using Bi-Directional Recurrent DNNs", section 3 (prefix beam search with a
language model). Each hypothesis is a label prefix ``l`` carrying two
probabilities summed over every alignment of the frames so far: ``p_b(l)``
(the last frame is a blank) and ``p_nb(l)`` (the last frame emits ``l``'s last
label). At frame ``t`` with frame probabilities ``y``::

    l      <- p_b += (p_b(l) + p_nb(l)) * y[blank];  p_nb += p_nb(l) * y[last(l)]
    l + c  <- p_nb += (p_b(l) + p_nb(l)) * y[c]       (c != last(l))
    l + c  <- p_nb += p_b(l) * y[c]                    (c == last(l): a blank must separate)

and the ``beam_size`` prefixes with the best score are kept, where (in log space)::

    score(l) = log(p_b(l) + p_nb(l)) + lm_weight * log P_LM(words(l)) + word_bonus * |words(l)|

The word part comes from a :class:`LexiconScorer`: a word is scored when the
character that ends it (a space, or the end of the utterance) is emitted, and a
prefix whose partial word is no prefix of a lexicon word is dropped. Without a
scorer the search is over every label sequence, scored by the CTC probability
alone. With an unlimited beam it returns the exact best label sequence, which is
not always the collapsed best path (:func:`~multitower.generation.ctc.greedy_decode`):
that takes the most probable single alignment, this the most probable sum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from multitower.data.charset import BLANK_ID
from multitower.generation.ctc import check_ctc_batch

NEG_INF = float("-inf")


class WordLM(Protocol):
    """What the beam search needs of a word language model (e.g. :class:`~multitower.data.ngram_lm.NgramLM`)."""

    order: int

    def log_prob(self, context: Sequence[str], word: str) -> float:
        """``log P(word | context)``; ``word == "</s>"`` is the end of the sentence."""
        ...

    def unigram_prob(self, word: str) -> float:
        """A context-free ``P(word)`` (for the look-ahead inside a word)."""
        ...


@dataclass(frozen=True)
class _TrieNode:
    children: dict[int, _TrieNode]
    is_word: bool
    lookahead: float  # log of the summed unigram probability of the words below


def _build_trie(words: Iterable[Sequence[int]], weights: Sequence[float]) -> _TrieNode:
    root: dict = {}
    for word, weight in zip(words, weights):
        node = root
        for i in word:
            node = node.setdefault(i, {})
        node[-1] = weight  # end-of-word marker (no label id is negative)

    def freeze(d: dict) -> tuple[_TrieNode, float]:
        children, mass = {}, d.get(-1, 0.0)
        for k, v in d.items():
            if k != -1:
                children[k], m = freeze(v)
                mass += m
        return _TrieNode(children, -1 in d, math.log(mass) if mass > 0 else NEG_INF), mass

    return freeze(root)[0]


@dataclass(frozen=True)
class _WordState:
    words: tuple[str, ...]  # the last order - 1 complete words (LM context)
    node: _TrieNode  # where the partial word sits in the lexicon trie
    partial: str  # the partial word's characters
    num_words: int  # complete words so far


class LexiconScorer:
    """Lexicon constraint and word-LM score of a character prefix.

    Words are the runs of characters between ``space`` characters. A prefix is
    allowed while its partial word is a prefix of a lexicon word and every
    complete word is in the lexicon, and it neither starts with a space nor holds
    two spaces in a row; an utterance ends on a complete word (or is empty), as a
    normalised transcript does. Each complete
    word adds ``lm_weight * log P(word | previous words) + word_bonus``, and the
    end adds ``lm_weight * log P(</s> | previous words)``.

    Args:
        chars: the character of each class id (``chars[i]`` for id ``i``; the
            blank's entry is unused).
        lexicon: the allowed words; words with a character outside ``chars`` are
            skipped. ``None``: any word is allowed.
        lm: scores the words (``None``: ``lm_weight`` is ignored, only the bonus counts).
        lm_weight: weight of the LM log-probability.
        word_bonus: added per word (compensates the LM's per-word cost).
        space: the word separator character.
        lookahead: with an LM and a lexicon, score a partial word in advance by
            ``lm_weight * log`` of the summed unigram probability of the lexicon
            words it begins, replaced by the word's real LM score once it is
            complete. The increments telescope, so a finished hypothesis's score
            is unchanged; only the ranking of unfinished ones improves (without
            it, a prefix that has just completed a word pays its LM cost while one
            in the middle of a word pays nothing yet, and good prefixes fall out
            of the beam).

    Raises:
        ValueError: ``space`` is not one of ``chars``, or no lexicon word can be spelled.
    """

    def __init__(
        self,
        chars: Sequence[str],
        *,
        lexicon: Iterable[str] | None = None,
        lm: WordLM | None = None,
        lm_weight: float = 0.0,
        word_bonus: float = 0.0,
        space: str = " ",
        lookahead: bool = True,
    ) -> None:
        if space not in chars:
            raise ValueError(f"the separator {space!r} is not one of the characters")
        self.chars = list(chars)
        self.space_id = self.chars.index(space)
        ids = {c: i for i, c in enumerate(self.chars)}
        self.lm = lm
        self.lm_weight = lm_weight if lm is not None else 0.0
        self.word_bonus = word_bonus
        self._context = max(lm.order - 1, 0) if lm is not None else 0
        self.trie: _TrieNode | None = None
        if lexicon is not None:
            spelled = [[ids[c] for c in w] for w in set(lexicon) if w and all(c in ids for c in w)]
            spelled = [w for w in spelled if self.space_id not in w]
            if not spelled:
                raise ValueError("no lexicon word can be spelled with the characters")
            self.lookahead = lookahead and lm is not None and bool(self.lm_weight)
            weights = [
                lm.unigram_prob("".join(self.chars[i] for i in w)) if self.lookahead else 1.0
                for w in spelled
            ]
            self.trie = _build_trie(spelled, weights)
        else:
            self.lookahead = False
        self._empty = _TrieNode({}, False, 0.0)
        self._lm_cache: dict[tuple[tuple[str, ...], str], float] = {}

    def initial(self) -> _WordState:
        return _WordState((), self.trie if self.trie is not None else self._empty, "", 0)

    def _word_score(self, context: tuple[str, ...], word: str) -> float:
        if self.lm is None or not self.lm_weight:
            return 0.0
        key = (context, word)
        s = self._lm_cache.get(key)
        if s is None:
            s = self.lm_weight * self.lm.log_prob(context, word)
            self._lm_cache[key] = s
        return s

    def _complete(self, state: _WordState) -> tuple[tuple[str, ...], float] | None:
        """New context and score of completing the partial word, None if not a word."""
        if self.trie is not None and not state.node.is_word:
            return None
        score = self._word_score(state.words, state.partial) + self.word_bonus
        if self.lookahead:  # the word's real score replaces its look-ahead
            assert self.trie is not None
            score -= self.lm_weight * (state.node.lookahead - self.trie.lookahead)
        words = (*state.words, state.partial)
        return (words[len(words) - self._context :] if self._context else ()), score

    def extend(self, state: _WordState, label: int) -> tuple[_WordState, float] | None:
        """State and score increment after emitting ``label``, None if not allowed."""
        if label == self.space_id:
            if not state.partial:
                return None
            done = self._complete(state)
            if done is None:
                return None
            context, score = done
            root = self.trie if self.trie is not None else self._empty
            return _WordState(context, root, "", state.num_words + 1), score
        if self.trie is None:
            partial = state.partial + self.chars[label]
            return _WordState(state.words, state.node, partial, state.num_words), 0.0
        child = state.node.children.get(label)
        if child is None:
            return None
        partial = state.partial + self.chars[label]
        delta = self.lm_weight * (child.lookahead - state.node.lookahead) if self.lookahead else 0.0
        return _WordState(state.words, child, partial, state.num_words), delta

    def finish(self, state: _WordState) -> float | None:
        """Score increment of ending the utterance here, None if not allowed."""
        score = 0.0
        context = state.words
        if not state.partial and state.num_words:  # a trailing space
            return None
        if state.partial:
            done = self._complete(state)
            if done is None:
                return None
            context, score = done
        return score + self._word_score(context, "</s>")


@dataclass
class _Beam:
    log_b: float
    log_nb: float
    state: _WordState | None
    word_score: float


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def prefix_beam_search(
    log_probs: torch.Tensor,
    *,
    beam_size: int = 16,
    scorer: LexiconScorer | None = None,
    blank_id: int = BLANK_ID,
    prune_log_prob: float = -8.0,
) -> list[int]:
    """The best label sequence of one utterance under CTC (+ the scorer's words).

    Args:
        log_probs: ``(T, C)`` per-frame log-probabilities (normalised over ``C``).
        beam_size: prefixes kept after every frame.
        scorer: lexicon constraint and word LM (``None``: CTC probability only).
        blank_id: the blank class.
        prune_log_prob: labels whose frame log-probability is below this are not
            tried as extensions at that frame (speed; ``-inf`` tries them all).

    Returns:
        The label ids of the best prefix (no blanks). If the scorer allows no
        complete hypothesis, the best prefix by CTC probability alone is returned.

    Raises:
        ValueError: ``log_probs`` is not 2-D or ``beam_size < 1``.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {tuple(log_probs.shape)}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    frames = log_probs.detach().double().cpu().tolist()
    num_classes = log_probs.shape[1]
    labels = [c for c in range(num_classes) if c != blank_id]
    init_state = scorer.initial() if scorer is not None else None
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(0.0, NEG_INF, init_state, 0.0)}
    for y in frames:
        y_blank = y[blank_id]
        tried = [c for c in labels if y[c] >= prune_log_prob]
        nxt: dict[tuple[int, ...], _Beam] = {}
        for prefix, beam in beams.items():
            total = _lse(beam.log_b, beam.log_nb)
            same = nxt.get(prefix)
            if same is None:
                same = nxt[prefix] = _Beam(NEG_INF, NEG_INF, beam.state, beam.word_score)
            same.log_b = _lse(same.log_b, total + y_blank)
            last = prefix[-1] if prefix else None
            if last is not None:
                same.log_nb = _lse(same.log_nb, beam.log_nb + y[last])
            for c in tried:
                new = (*prefix, c)
                target = nxt.get(new)
                if target is None:
                    if scorer is not None:
                        step = scorer.extend(beam.state, c)  # type: ignore[arg-type]
                        if step is None:
                            continue
                        state, delta = step
                    else:
                        state, delta = None, 0.0
                    target = nxt[new] = _Beam(NEG_INF, NEG_INF, state, beam.word_score + delta)
                source = beam.log_b if c == last else total
                target.log_nb = _lse(target.log_nb, source + y[c])
        ranked = sorted(
            nxt.items(),
            key=lambda kv: _lse(kv[1].log_b, kv[1].log_nb) + kv[1].word_score,
            reverse=True,
        )
        beams = dict(ranked[:beam_size])
    best: tuple[int, ...] | None = None
    best_score = NEG_INF
    for prefix, beam in beams.items():
        end = 0.0
        if scorer is not None:
            finish = scorer.finish(beam.state)  # type: ignore[arg-type]
            if finish is None:
                continue
            end = finish
        score = _lse(beam.log_b, beam.log_nb) + beam.word_score + end
        if score > best_score:
            best, best_score = prefix, score
    if best is None:  # nothing ends on a lexicon word: fall back to the acoustics
        best = max(beams, key=lambda p: _lse(beams[p].log_b, beams[p].log_nb))
    return list(best)


def beam_decode(
    log_probs: torch.Tensor,
    out_lengths: torch.Tensor,
    *,
    beam_size: int = 16,
    scorer: LexiconScorer | None = None,
    blank_id: int = BLANK_ID,
    prune_log_prob: float = -8.0,
) -> list[list[int]]:
    """:func:`prefix_beam_search` of every row of a batch.

    Args:
        log_probs: ``(B, T, C)`` per-frame log-probabilities.
        out_lengths: ``(B,)`` valid frames per row (``<= T``).
        beam_size, scorer, blank_id, prune_log_prob: see :func:`prefix_beam_search`.

    Returns:
        For each row, its best label ids (no blanks).

    Raises:
        ValueError: shapes disagree or a length lies outside ``[0, T]``.
    """
    lengths = check_ctc_batch(log_probs, out_lengths)
    return [
        prefix_beam_search(
            log_probs[b, :n],
            beam_size=beam_size,
            scorer=scorer,
            blank_id=blank_id,
            prune_log_prob=prune_log_prob,
        )
        for b, n in enumerate(lengths)
    ]
