"""BLEU-4 and CIDEr-D against hand computations and coco-caption's numbers."""

from __future__ import annotations

import math

import pytest

from multitower.eval.captioning import caption_metrics, cider_d, corpus_bleu, tokenize


def test_tokenize_lowercases_and_strips_punctuation():
    assert tokenize("A Red,  circle. Isn't it?") == ["a", "red", "circle", "isnt", "it"]


def test_bleu_hand_computed_corpus():
    hyps = ["a red red circle left of a blue square", "two green stars"]
    refs = [
        ["a red circle left of a blue square"],
        ["there are two green stars", "two green stars right here"],
    ]
    # Item 1 (9 tokens) vs its one reference (8 tokens):
    #   1-grams: a x2 (ref has 2), red x2 (ref has 1 -> clipped to 1), circle, left, of, blue,
    #            square -> 2 + 1 + 5 = 8 of 9
    #   2-grams: all but "red red" -> 7 of 8
    #   3-grams: all but "a red red", "red red circle" -> 5 of 7
    #   4-grams: all but "a red red circle", "red red circle left" -> 4 of 6
    # Item 2 (3 tokens): every n-gram occurs in a reference: 3/3, 2/2, 1/1, 0/0.
    #   Reference lengths 5 and 5 -> closest 5.
    # Corpus: p1 = 11/12, p2 = 9/10, p3 = 6/8, p4 = 4/6; c = 12, r = 8 + 5 = 13.
    p = (11 / 12, 9 / 10, 6 / 8, 4 / 6)
    bp = math.exp(1 - 13 / 12)
    result = corpus_bleu(hyps, refs)
    assert result.precisions == pytest.approx(p)
    assert (result.hypothesis_length, result.reference_length) == (12, 13)
    assert result.brevity_penalty == pytest.approx(bp)
    assert result.score == pytest.approx(bp * math.prod(p) ** 0.25)
    # coco-caption (pycocoevalcap 1.2, Bleu(4)) gives 0.7373348840728671 here.
    assert result.score == pytest.approx(0.7373348840728671, abs=1e-9)


def test_bleu_closest_reference_length_ties_go_to_the_shorter():
    # hypothesis length 3, references of lengths 2 and 4: r = 2, so c > r and BP = 1
    # (choosing 4 would give exp(1 - 4/3)).
    result = corpus_bleu(["a b c"], [["a b", "a b c d"]], max_n=3)
    assert result.reference_length == 2 and result.brevity_penalty == 1.0
    assert result.score == pytest.approx(1.0)


def test_bleu_limits():
    refs = [["the cat sat on the mat", "a cat was on the mat"], ["dogs run in the park today"]]
    perfect = corpus_bleu(["The cat sat on the mat.", "dogs run in the park today"], refs)
    assert perfect.score == pytest.approx(1.0) and perfect.brevity_penalty == 1.0
    assert corpus_bleu(["zebra zebra zebra zebra", "xylophone quartz jump high"], refs).score == 0.0
    # overlapping unigrams but no 4-gram -> 0 (no smoothing)
    assert corpus_bleu(["the mat sat on cat the"], refs[:1]).score == 0.0
    # a short exact prefix: all precisions 1, only the brevity penalty remains
    short = corpus_bleu(["dogs run in the"], [refs[1]])
    assert short.score == pytest.approx(math.exp(1 - 6 / 4))
    assert corpus_bleu([""], [["a b c d"]]).score == 0.0


def test_bleu_and_cider_input_errors():
    for fn in (corpus_bleu, cider_d):
        with pytest.raises(ValueError, match="2 hypotheses but 1 reference"):
            fn(["a", "b"], [["a"]])
        with pytest.raises(ValueError, match=r"references\[0\] is empty"):
            fn(["a"], [[]])
        with pytest.raises(ValueError, match="empty corpus"):
            fn([], [])
        with pytest.raises(TypeError):
            fn("a b", [["a b"]])


def test_cider_hand_computed_with_clipping_and_length_penalty():
    hyps = ["red red circle", "blue circle"]
    refs = [["red circle"], ["blue circle"]]
    # N = 2 images, idf(g) = log 2 - log max(1, df(g)).
    # df: red 1, blue 1, circle 2 (-> idf 0), "red circle" 1, "blue circle" 1;
    # n-grams of the hypotheses only ("red red", "red red circle") have df 0 -> idf log 2.
    # Image 1, 1-grams: hyp {red: 2 ln2, circle: 0}, ref {red: ln2, circle: 0}.
    #   clipped dot = min(2 ln2, ln2) * ln2 = ln2^2; norms 2 ln2 and ln2 -> 1/2
    #   (without clipping it would be 1).
    # 2-grams: hyp {red red: ln2, red circle: ln2}, ref {red circle: ln2} -> ln2^2 / (sqrt2 ln2 ln2).
    # 3-grams: the reference has none (norm 0) -> 0; 4-grams: none -> 0.
    # Length penalty: exp(-(3 - 2)^2 / (2 * 36)).
    image1 = 10 * (1 / 2 + 1 / math.sqrt(2) + 0 + 0) / 4 * math.exp(-1 / 72)
    # Image 2: identical 2-word sentences: cosine 1 for n = 1, 2, nothing for n = 3, 4.
    image2 = 10 * (1 + 1 + 0 + 0) / 4
    result = cider_d(hyps, refs)
    assert result.per_item == pytest.approx((image1, image2))
    assert result.score == pytest.approx((image1 + image2) / 2)


def test_cider_averages_over_references_and_perfect_long_match_is_ten():
    refs = [["a b c d e", "x y z w v"], ["f g h i j"]]
    # image 1 hyp equals its first reference: cos 1 for n = 1..4 with it, 0 with the second
    # (no shared n-gram) -> (10 + 0) / 2 = 5; image 2 equals its only reference -> 10.
    result = cider_d(["a b c d e", "f g h i j"], refs)
    assert result.per_item == pytest.approx((5.0, 10.0))
    # n-grams found in the references of every image carry no weight
    common = cider_d(["the the", "the"], [["the"], ["the"]])
    assert common.per_item == (0.0, 0.0)


def test_cider_matches_coco_caption_on_a_small_corpus():
    hyps = [
        "a man riding a horse along the beach",
        "two dogs play in the snow",
        "a plate of food with broccoli",
        "a red double decker bus on the street",
        "people standing near a train station",
    ]
    refs = [
        ["a man rides a horse along the beach", "a person on a horse at the shore",
         "man riding horse on sandy beach"],
        ["two dogs playing in the snow", "a pair of dogs run through snow"],
        ["a plate with broccoli and rice", "food on a white plate", "a dish of vegetables and meat",
         "broccoli on a plate"],
        ["a red bus driving down the street", "a double decker bus in london"],
        ["people waiting at a train station", "a crowd near the train platform",
         "passengers standing by a train"],
    ]  # fmt: skip
    # Reference values from coco-caption (pycocoevalcap 1.2, Bleu(4) and Cider()).
    coco_cider_per_image = [3.0789717600809157, 2.5374133122714424, 1.571676906893662,
                            2.4782309067735797, 2.0024163799184755]  # fmt: skip
    result = cider_d(hyps, refs)
    assert result.per_item == pytest.approx(coco_cider_per_image, abs=1e-9)
    assert result.score == pytest.approx(2.3337418531876155, abs=1e-9)
    metrics = caption_metrics(hyps, refs)
    assert metrics["bleu4"] == pytest.approx(0.34712396433583337, abs=1e-9)
    assert metrics["cider"] == pytest.approx(result.score)
