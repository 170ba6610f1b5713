"""CTC prefix beam search: exact against brute force, greedy on confident frames, lexicon, LM."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from multitower.data.ngram_lm import NgramLM
from multitower.generation.ctc import collapse_ctc_path, greedy_decode
from multitower.generation.ctc_beam import LexiconScorer, beam_decode, prefix_beam_search

CHARS = ["", "a", "b", " "]  # class id -> character; 0 is the blank


def ctc_log_prob(log_probs: torch.Tensor, labels: list[int]) -> float:
    """log P(labels | frames) summed over every alignment (torch's CTC loss)."""
    if not labels:
        return float(log_probs[:, 0].sum())
    nll = F.ctc_loss(
        log_probs[:, None, :],
        torch.tensor([labels]),
        torch.tensor([log_probs.shape[0]]),
        torch.tensor([len(labels)]),
        reduction="sum",
    )
    return -float(nll)


def brute_force(log_probs: torch.Tensor, scorer: LexiconScorer | None) -> list[int]:
    """The best label sequence by enumerating every one that T frames can emit."""
    T, C = log_probs.shape
    best, best_score = None, -math.inf
    for n in range(T + 1):
        for labels in itertools.product(range(1, C), repeat=n):
            score = ctc_log_prob(log_probs, list(labels))
            if score == -math.inf:
                continue
            if scorer is not None:
                state, allowed = scorer.initial(), True
                for c in labels:
                    step = scorer.extend(state, c)
                    if step is None:
                        allowed = False
                        break
                    state, delta = step
                    score += delta
                end = scorer.finish(state) if allowed else None
                if end is None:
                    continue
                score += end
            if score > best_score:
                best, best_score = list(labels), score
    assert best is not None
    return best


LM = NgramLM(["a b", "b a a", "ab b", "a", "b b ab"], order=2)


@pytest.mark.parametrize(
    "make_scorer",
    [
        lambda: None,
        lambda: LexiconScorer(CHARS, lexicon=["a", "b", "ab"]),
        lambda: LexiconScorer(
            CHARS, lexicon=["a", "b", "ab"], lm=LM, lm_weight=0.7, word_bonus=0.3
        ),
        lambda: LexiconScorer(CHARS, lm=LM, lm_weight=1.0, word_bonus=-0.5),
        lambda: LexiconScorer(
            CHARS, lexicon=["a", "b", "ab"], lm=LM, lm_weight=0.7, word_bonus=0.3, lookahead=False
        ),
    ],
    ids=["ctc", "lexicon", "lexicon+lm", "lm-open-vocabulary", "lexicon+lm-no-lookahead"],
)
def test_unlimited_beam_finds_the_brute_force_best_sequence(make_scorer):
    generator = torch.Generator().manual_seed(0)
    scorer = make_scorer()
    for _ in range(15):
        log_probs = torch.log_softmax(torch.randn(5, 4, generator=generator) * 2, dim=-1).double()
        got = prefix_beam_search(
            log_probs, beam_size=100_000, scorer=scorer, prune_log_prob=-math.inf
        )
        assert got == brute_force(log_probs, scorer)


def test_the_best_sum_is_not_always_the_best_path():
    # two frames of (blank 0.4, a 0.32, b 0.28): the best path is blank-blank (0.16),
    # but "a" sums three alignments: 2 * 0.32 * 0.4 + 0.32**2 = 0.358
    probs = torch.tensor([[0.4, 0.32, 0.28, 0.0], [0.4, 0.32, 0.28, 0.0]]) + 1e-12
    log_probs = probs.log()
    assert greedy_decode(log_probs[None], torch.tensor([2]))[0] == []
    assert prefix_beam_search(log_probs, beam_size=10) == [1] == brute_force(log_probs, None)


def test_beam_of_one_without_lm_equals_greedy_on_confident_frames():
    # Each frame puts 0.9 on one class of a random path: the best path's alignment
    # dominates every sum, so the best prefix and the best path agree.
    generator = torch.Generator().manual_seed(1)
    for _ in range(50):
        T, C = 40, 6
        path = torch.randint(0, C, (T,), generator=generator)
        probs = torch.full((T, C), 0.1 / (C - 1))
        probs[torch.arange(T), path] = 0.9
        log_probs = probs.log()
        greedy = greedy_decode(log_probs[None], torch.tensor([T]))[0]
        assert greedy == collapse_ctc_path(path.tolist())
        assert prefix_beam_search(log_probs, beam_size=1) == greedy


def test_lexicon_keeps_only_spellable_words_and_complete_endings():
    scorer = LexiconScorer(CHARS, lexicon=["ab", "b"])
    s = scorer.initial()
    assert scorer.extend(s, 3) is None  # no leading space
    a, _ = scorer.extend(s, 1)
    assert scorer.finish(a) is None  # "a" is only a prefix of "ab"
    assert scorer.extend(a, 3) is None
    assert scorer.extend(a, 1) is None  # "aa" prefixes no word
    ab, _ = scorer.extend(a, 2)
    assert scorer.finish(ab) == 0.0
    ab_space, _ = scorer.extend(ab, 3)
    assert scorer.finish(ab_space) is None  # no trailing space
    assert scorer.extend(ab_space, 3) is None  # no double space


def test_lm_score_is_weighted_log_prob_plus_bonus_per_word():
    scorer = LexiconScorer(CHARS, lexicon=["a", "b", "ab"], lm=LM, lm_weight=0.5, word_bonus=2.0)
    total, state = 0.0, scorer.initial()
    for c in [1, 3, 2]:  # "a b"
        state, delta = scorer.extend(state, c)
        total += delta
    total += scorer.finish(state)
    expected = 0.5 * LM.sentence_log_prob("a b") + 2 * 2.0
    assert total == pytest.approx(expected)


@pytest.mark.parametrize("text", ["a b", "ab", "b ab a", ""])
def test_lookahead_changes_no_finished_score(text):
    ids = {c: i for i, c in enumerate(CHARS)}
    totals = []
    for lookahead in (False, True):
        scorer = LexiconScorer(
            CHARS,
            lexicon=["a", "b", "ab"],
            lm=LM,
            lm_weight=0.8,
            word_bonus=0.5,
            lookahead=lookahead,
        )
        state, total = scorer.initial(), 0.0
        for c in text:
            state, delta = scorer.extend(state, ids[c])
            total += delta
        totals.append(total + scorer.finish(state))
    assert totals[0] == pytest.approx(totals[1])


def test_lm_steers_the_beam_between_acoustically_equal_words():
    # two frames, "a" and "b" equally likely in the first: the LM (trained on "b" after
    # nothing far more than "a") decides
    lm = NgramLM(["b"] * 20 + ["a"], order=1)
    probs = torch.tensor([[0.1, 0.45, 0.45, 0.0], [0.9, 0.05, 0.05, 0.0]]) + 1e-9
    log_probs = probs.log()
    plain = LexiconScorer(CHARS, lexicon=["a", "b"])
    with_lm = LexiconScorer(CHARS, lexicon=["a", "b"], lm=lm, lm_weight=1.0)
    assert prefix_beam_search(log_probs, beam_size=4, scorer=with_lm) == [2]
    assert prefix_beam_search(log_probs, beam_size=4, scorer=plain) in ([1], [2])


def test_beam_decode_batches_rows_by_their_lengths():
    generator = torch.Generator().manual_seed(2)
    log_probs = torch.log_softmax(torch.randn(3, 8, 4, generator=generator), dim=-1)
    lengths = torch.tensor([8, 5, 0])
    out = beam_decode(log_probs, lengths, beam_size=8)
    assert out[0] == prefix_beam_search(log_probs[0], beam_size=8)
    assert out[1] == prefix_beam_search(log_probs[1, :5], beam_size=8)
    assert out[2] == []
    with pytest.raises(ValueError, match="out_lengths"):
        beam_decode(log_probs, torch.tensor([9, 1, 1]))
    with pytest.raises(ValueError, match="beam_size"):
        prefix_beam_search(log_probs[0], beam_size=0)
    with pytest.raises(ValueError, match="separator"):
        LexiconScorer(["", "a"])
