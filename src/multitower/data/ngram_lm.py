"""A word n-gram language model with interpolated Kneser-Ney smoothing, in pure Python.

Chen and Goodman 1998, "An Empirical Study of Smoothing Techniques for Language
Modeling", section 3 (interpolated Kneser-Ney, one discount per order). It is the
language model of the TTS scorer's beam search
(:mod:`multitower.generation.ctc_beam`), trained on the text tower's corpus, so
it is small and simple: counts in dicts, probabilities computed on demand and
cached.

For an order-``n`` model, with ``h`` a context of ``k - 1`` words and ``h'`` the
same context without its first word::

    P_k(w | h) = max(a_k(h w) - D_k, 0) / a_k(h .)
                 + D_k * N1+(h .) / a_k(h .) * P_{k-1}(w | h')     (a_k(h .) > 0)
    P_k(w | h) = P_{k-1}(w | h')                                     (unseen context)
    P_0(w)     = 1 / |V|

where ``a_n`` are raw counts, ``a_k`` for ``k < n`` are continuation counts
(how many distinct words precede ``h w``) except for n-grams that start with
``<s>`` (no word can precede those: raw counts, as in KenLM), ``N1+(h .)`` is
the number of distinct words seen after ``h``, and ``D_k = n1 / (n1 + 2 n2)``
from the count-of-counts of order ``k``. ``V`` is the training words plus
``</s>`` and ``<unk>``; any other word is scored as ``<unk>``, which gets only
the uniform share of the unigram level. For every context the probabilities
over ``V`` sum to one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
_SPECIAL = (BOS, EOS, UNK)


class NgramLM:
    """Interpolated Kneser-Ney word n-gram model (see the module docstring).

    Args:
        sentences: training text, one sentence per item, words separated by spaces.
        order: ``n`` (1: unigram, 2: bigram, 3: trigram, ...).

    Raises:
        ValueError: ``order < 1``, no word in ``sentences``, or a sentence holding
            ``<s>``, ``</s>`` or ``<unk>``.
    """

    def __init__(self, sentences: Iterable[str], order: int = 3) -> None:
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"NgramLM order must be an int >= 1, got {order!r}")
        raw: Counter[tuple[str, ...]] = Counter()  # order-n n-grams, <s>-padded
        for i, sentence in enumerate(sentences):
            tokens = sentence.split()
            if bad := set(tokens) & set(_SPECIAL):
                raise ValueError(f"sentence {i} holds reserved tokens {sorted(bad)}")
            padded = [BOS] * (order - 1) + tokens + [EOS]
            for j in range(order - 1, len(padded)):
                raw[tuple(padded[j - order + 1 : j + 1])] += 1
        self._setup(order, raw)

    def _setup(self, order: int, raw: Counter[tuple[str, ...]]) -> None:
        """Adjusted counts, totals and discounts of every order from the order-n counts."""
        words = {w for gram in raw for w in gram if w not in _SPECIAL}
        if not words:
            raise ValueError("NgramLM needs at least one word of training text")
        self.order = order
        self.vocab: tuple[str, ...] = (*sorted(words), EOS, UNK)
        self._in_vocab = frozenset(self.vocab)
        # counts[k][context][word]: adjusted counts of order k (context of k - 1 words)
        self._counts: list[dict[tuple[str, ...], dict[str, int]]] = [{} for _ in range(order + 1)]
        level = raw
        for k in range(order, 0, -1):
            table: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
            for gram, count in level.items():
                table[gram[:-1]][gram[-1]] = count
            self._counts[k] = dict(table)
            lower: Counter[tuple[str, ...]] = Counter()
            for gram, count in level.items():
                # continuation count: each distinct predecessor counts once; an
                # <s>-initial n-gram has no predecessor but <s>: its raw count
                lower[gram[1:]] += count if len(gram) > 1 and gram[1] == BOS else 1
            level = lower
        self.discounts: tuple[float, ...] = tuple(
            _discount(self._counts[k]) for k in range(order + 1)
        )
        self._totals = [
            {h: (sum(ws.values()), len(ws)) for h, ws in self._counts[k].items()}
            for k in range(order + 1)
        ]
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}

    def _prob(self, k: int, context: tuple[str, ...], word: str) -> float:
        if k == 0:
            return 1.0 / len(self.vocab)
        h = context[len(context) - (k - 1) :] if k > 1 else ()
        lower = self._prob(k - 1, context, word)
        total = self._totals[k].get(h)
        if total is None:
            return lower
        count_sum, distinct = total
        d = self.discounts[k]
        count = self._counts[k][h].get(word, 0)
        return max(count - d, 0.0) / count_sum + d * distinct / count_sum * lower

    def prob(self, context: Sequence[str], word: str) -> float:
        """``P(word | context)``; only the last ``order - 1`` context words count.

        A context shorter than ``order - 1`` words is padded with ``<s>`` on the
        left (the start of a sentence); ``word`` outside the vocabulary is ``<unk>``.
        """
        ctx = tuple(w if w in self._in_vocab or w == BOS else UNK for w in context)
        ctx = ((BOS,) * (self.order - 1) + ctx)[len(ctx) :] if self.order > 1 else ()
        w = word if word in self._in_vocab else UNK
        key = (ctx, w)
        p = self._cache.get(key)
        if p is None:
            p = self._prob(self.order, ctx, w)
            self._cache[key] = p
        return p

    def log_prob(self, context: Sequence[str], word: str) -> float:
        """Natural log of :meth:`prob`."""
        return math.log(self.prob(context, word))

    def unigram_prob(self, word: str) -> float:
        """The smoothed unigram level ``P_1(word)`` (no context, not even ``<s>``).

        It sums to one over the vocabulary; beam search uses it to look ahead
        inside a word before the word and its context are known.
        """
        return self._prob(1, (), word if word in self._in_vocab else UNK)

    def sentence_log_prob(self, sentence: str) -> float:
        """``log P(w_1 .. w_m </s>)`` of a space-separated sentence."""
        words = sentence.split()
        total = 0.0
        for i, w in enumerate([*words, EOS]):
            total += self.log_prob(words[max(0, i - self.order + 1) : i], w)
        return total

    def perplexity(self, sentences: Iterable[str]) -> float:
        """Per-token perplexity (``</s>`` counted as a token) on ``sentences``."""
        log_sum, tokens = 0.0, 0
        for s in sentences:
            log_sum += self.sentence_log_prob(s)
            tokens += len(s.split()) + 1
        if not tokens:
            raise ValueError("perplexity needs at least one sentence")
        return math.exp(-log_sum / tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"order": n, "ngrams": [[w1, ..., wn, count], ...]}``.

        The order-``n`` counts determine the whole model; :meth:`from_dict`
        rebuilds it exactly.
        """
        grams = sorted(
            [*h, w, c] for h, ws in self._counts[self.order].items() for w, c in ws.items()
        )
        return {"order": self.order, "ngrams": grams}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NgramLM:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: ``d`` is not such a dict.
        """
        if not isinstance(d, dict) or not isinstance(d.get("order"), int) or "ngrams" not in d:
            raise ValueError("an NgramLM dict needs an int 'order' and an 'ngrams' list")
        order = d["order"]
        if order < 1:
            raise ValueError(f"NgramLM order must be >= 1, got {order}")
        raw: Counter[tuple[str, ...]] = Counter()
        for row in d["ngrams"]:
            if (
                not isinstance(row, list)
                or len(row) != order + 1
                or not all(isinstance(w, str) for w in row[:-1])
                or not isinstance(row[-1], int)
                or row[-1] < 1
            ):
                raise ValueError(f"bad n-gram row {row!r} for order {order}")
            raw[tuple(row[:-1])] += row[-1]
        lm = cls.__new__(cls)
        lm._setup(order, raw)
        return lm


def _discount(table: dict[tuple[str, ...], dict[str, int]]) -> float:
    """Ney's ``D = n1 / (n1 + 2 n2)`` from a table's count-of-counts, 0.5 if undefined."""
    n1 = sum(1 for ws in table.values() for c in ws.values() if c == 1)
    n2 = sum(1 for ws in table.values() for c in ws.values() if c == 2)
    if n1 == 0 or n1 + 2 * n2 == 0:
        return 0.5
    return n1 / (n1 + 2 * n2)
