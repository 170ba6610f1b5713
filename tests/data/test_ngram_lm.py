"""Kneser-Ney word n-gram LM: normalisation, a hand-computed bigram, counts, save/load."""

from __future__ import annotations

import json
import math

import pytest

from multitower.data.ngram_lm import EOS, UNK, NgramLM

SENTENCES = ["the cat sat", "the dog sat", "a cat ran", "the cat ran far", "dogs ran"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "context", [(), ("the",), ("the", "cat"), ("cat", "sat"), ("zebra", "qux"), ("<s>",)]
)
def test_probabilities_sum_to_one_over_vocabulary_and_end(order, context):
    lm = NgramLM(SENTENCES, order)
    assert EOS in lm.vocab and UNK in lm.vocab
    total = sum(lm.prob(context, w) for w in lm.vocab)
    assert total == pytest.approx(1.0, abs=1e-12)
    assert all(lm.prob(context, w) > 0 for w in lm.vocab)


def test_bigram_matches_the_interpolated_kneser_ney_formula_by_hand():
    lm = NgramLM(SENTENCES, 2)
    V = len(lm.vocab)  # 8 words + </s> + <unk>
    assert V == 10
    # unigram continuation counts N1+(. w): distinct left neighbours (<s> included)
    # the: {<s>}, cat: {the, a}, sat: {cat, dog}, ran: {cat, dogs}, </s>: {sat, ran, far}
    d1, d2 = lm.discounts[1], lm.discounts[2]
    cont = {"the": 1, "cat": 2, "dog": 1, "sat": 2, "a": 1, "ran": 2, "far": 1, "dogs": 1, EOS: 3}
    total_cont = sum(cont.values())

    def p1(w):
        return max(cont.get(w, 0) - d1, 0) / total_cont + d1 * len(cont) / total_cont / V

    # after "the": cat x2, dog x1
    expected = max(2 - d2, 0) / 3 + d2 * 2 / 3 * p1("cat")
    assert lm.prob(["the"], "cat") == pytest.approx(expected, rel=1e-12)
    assert lm.prob(["the"], "ran") == pytest.approx(d2 * 2 / 3 * p1("ran"), rel=1e-12)
    # an unseen context backs off to the unigram level; an unknown word is <unk>
    assert lm.prob(["zebra"], "cat") == pytest.approx(p1("cat"), rel=1e-12)
    assert lm.prob(["the"], "zebra") == lm.prob(["the"], UNK)


def test_discounts_follow_ney_and_lie_in_zero_one():
    lm = NgramLM(SENTENCES, 3)
    assert all(0 < d <= 1 for d in lm.discounts)


def test_sentence_log_prob_is_the_chain_rule_and_perplexity_its_mean():
    lm = NgramLM(SENTENCES, 3)
    s = "the cat sat"
    chain = (
        lm.log_prob([], "the")
        + lm.log_prob(["the"], "cat")
        + lm.log_prob(["the", "cat"], "sat")
        + lm.log_prob(["cat", "sat"], EOS)
    )
    assert lm.sentence_log_prob(s) == pytest.approx(chain)
    assert lm.perplexity([s]) == pytest.approx(math.exp(-chain / 4))
    # a seen sentence is likelier than the same words shuffled
    assert lm.sentence_log_prob("the cat sat") > lm.sentence_log_prob("sat the cat")


def test_round_trip_through_json_gives_the_same_model():
    lm = NgramLM(SENTENCES, 3)
    again = NgramLM.from_dict(json.loads(json.dumps(lm.to_dict())))
    assert again.vocab == lm.vocab and again.discounts == lm.discounts
    for ctx in [(), ("the",), ("the", "cat"), ("a", "cat")]:
        for w in lm.vocab:
            assert again.prob(ctx, w) == lm.prob(ctx, w)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="order"):
        NgramLM(SENTENCES, 0)
    with pytest.raises(ValueError, match="at least one word"):
        NgramLM(["", " "], 2)
    with pytest.raises(ValueError, match="reserved"):
        NgramLM(["the </s> cat"], 2)
    with pytest.raises(ValueError, match="n-gram row"):
        NgramLM.from_dict({"order": 2, "ngrams": [["a", 1]]})
