"""Captioning metrics: corpus BLEU-4 and CIDEr-D, as the coco-caption scorers compute them.

BLEU (Papineni et al., 2002) as in coco-caption's ``bleu_scorer.py``: per
hypothesis, n-gram counts clipped by their largest count in any one reference,
summed over the corpus into modified precisions ``p_n``; the brevity penalty
compares the total hypothesis length ``c`` with the total of the reference
lengths closest to each hypothesis (ties to the shorter) ``r``:
``BLEU-N = BP * exp(mean_n log p_n)``, ``BP = 1 if c > r else exp(1 - r / c)``.
Unlike coco-caption we add no 1e-15 smoothing, so a corpus with no matching
n-gram of some order scores exactly 0.

CIDEr-D (Vedantam et al., 2015) as in coco-caption's ``cider_scorer.py``: each
sentence becomes TF-IDF vectors of its 1- to 4-grams, with document frequencies
counted over the reference sets of the evaluated corpus (an n-gram counts once
per image) and IDF ``log(N_images) - log(max(1, df))``. Per n, the similarity of
hypothesis and reference is the clipped dot product ``sum min(h, r) * r``
divided by both norms, times the length penalty ``exp(-(len_h - len_r)^2 /
(2 * 6^2))``; the score averages over n and over references and is multiplied
by 10. (coco-caption measures length in bigrams, ``len - 1``; the difference
of two lengths is the same, and a sentence with no tokens scores 0 either way.)

Text is tokenised by lower-casing, deleting ASCII punctuation and splitting on
white space (coco-caption runs the PTB tokenizer, which splits a few
contractions differently).
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    """Lower-case, delete ASCII punctuation, split on white space."""
    return text.lower().translate(_PUNCTUATION).split()


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of the n-grams of one order ``n``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _check_corpus(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], metric: str
) -> list[list[str]]:
    if isinstance(hypotheses, str):
        raise TypeError(f"{metric}: hypotheses must be a sequence of strings, not one string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{metric}: {len(hypotheses)} hypotheses but {len(references)} reference sets"
        )
    if not hypotheses:
        raise ValueError(f"{metric}: empty corpus")
    refs = []
    for i, ref_set in enumerate(references):
        ref_list = [ref_set] if isinstance(ref_set, str) else list(ref_set)
        if not ref_list:
            raise ValueError(f"{metric}: references[{i}] is empty; every item needs a reference")
        refs.append(ref_list)
    return refs


@dataclass(frozen=True)
class BleuResult:
    """Corpus BLEU and its parts.

    Attributes:
        score: BLEU-``max_n``.
        precisions: modified n-gram precisions ``p_1 .. p_max_n``.
        brevity_penalty: ``BP``.
        hypothesis_length: ``c``, total hypothesis tokens.
        reference_length: ``r``, total closest-reference tokens.
    """

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str] | str],
    *,
    max_n: int = 4,
) -> BleuResult:
    """Corpus-level BLEU with several references per hypothesis.

    Args:
        hypotheses: one generated caption per item.
        references: per item, its reference captions (a single string is one reference).
        max_n: highest n-gram order (4 for BLEU-4).

    Returns:
        A :class:`BleuResult`; ``score`` lies in [0, 1].

    Raises:
        ValueError: mismatched lengths, an empty corpus, or an item without references.
    """
    if max_n < 1:
        raise ValueError(f"corpus_bleu: max_n must be >= 1, got {max_n}")
    refs = _check_corpus(hypotheses, references, "corpus_bleu")
    matched = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for hypothesis, ref_texts in zip(hypotheses, refs):
        hyp = tokenize(hypothesis)
        ref_tokens = [tokenize(r) for r in ref_texts]
        hyp_len += len(hyp)
        # Closest reference length; on a tie the shorter one (as coco-caption).
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in ref_tokens)[1]
        for n in range(1, max_n + 1):
            counts = ngram_counts(hyp, n)
            max_ref: Counter[tuple[str, ...]] = Counter()
            for r in ref_tokens:
                max_ref |= ngram_counts(r, n)  # element-wise max over references
            matched[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = tuple(m / t if t else 0.0 for m, t in zip(matched, total))
    if hyp_len == 0:
        bp = 0.0
    elif hyp_len > ref_len:
        bp = 1.0
    else:
        bp = math.exp(1.0 - ref_len / hyp_len)
    if min(precisions) == 0.0:
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return BleuResult(score, precisions, bp, hyp_len, ref_len)


@dataclass(frozen=True)
class CiderResult:
    """Corpus CIDEr-D: ``score`` is the mean of ``per_item``."""

    score: float
    per_item: tuple[float, ...]


def _tfidf(
    tokens: list[str], df: Counter[tuple[str, ...]], log_n: float, max_n: int
) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
    """Per order n: the TF-IDF vector of a sentence and its norm."""
    vectors, norms = [], []
    for n in range(1, max_n + 1):
        vec = {
            g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in ngram_counts(tokens, n).items()
        }
        vectors.append(vec)
        norms.append(math.sqrt(sum(v * v for v in vec.values())))
    return vectors, norms


def cider_d(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str] | str],
    *,
    max_n: int = 4,
    sigma: float = 6.0,
) -> CiderResult:
    """Corpus CIDEr-D as in coco-caption (IDF over this corpus's references).

    Args:
        hypotheses: one generated caption per item.
        references: per item, its reference captions (a single string is one reference).
        max_n: highest n-gram order.
        sigma: width of the Gaussian length penalty.

    Returns:
        A :class:`CiderResult`. Scores are >= 0; 10 is a perfect match whose
        sentences have at least ``max_n`` tokens.

    Raises:
        ValueError: mismatched lengths, an empty corpus, or an item without references.
    """
    refs = _check_corpus(hypotheses, references, "cider_d")
    ref_tokens = [[tokenize(r) for r in ref_texts] for ref_texts in refs]
    df: Counter[tuple[str, ...]] = Counter()
    for ref_set in ref_tokens:
        df.update({g for r in ref_set for n in range(1, max_n + 1) for g in ngram_counts(r, n)})
    log_n = math.log(len(refs))
    scores = []
    for hypothesis, ref_set in zip(hypotheses, ref_tokens):
        hyp = tokenize(hypothesis)
        hyp_vecs, hyp_norms = _tfidf(hyp, df, log_n, max_n)
        total = 0.0
        for ref in ref_set:
            ref_vecs, ref_norms = _tfidf(ref, df, log_n, max_n)
            penalty = math.exp(-((len(hyp) - len(ref)) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                dot = sum(
                    min(h, ref_vecs[n].get(g, 0.0)) * ref_vecs[n].get(g, 0.0)
                    for g, h in hyp_vecs[n].items()
                )
                if hyp_norms[n] > 0 and ref_norms[n] > 0:
                    total += dot / (hyp_norms[n] * ref_norms[n]) * penalty
        scores.append(10.0 * total / max_n / len(ref_set))
    return CiderResult(sum(scores) / len(scores), tuple(scores))


def caption_metrics(
    hypotheses: Sequence[str], references: Sequence[Sequence[str] | str]
) -> dict[str, float]:
    """``{"bleu4": ..., "cider": ...}`` for a corpus of generated captions."""
    return {
        "bleu4": corpus_bleu(hypotheses, references).score,
        "cider": cider_d(hypotheses, references).score,
    }
