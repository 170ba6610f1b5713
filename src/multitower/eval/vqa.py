"""Open-ended VQA scoring: answer normalisation and accuracy.

Answers are compared after :func:`normalize_answer`, which follows the spirit of
the official VQAv2 evaluation (lower case, punctuation removed, articles
dropped, number words written as digits) without its long contraction table.

With one reference answer the score is exact match. With several (VQAv2 has ten
per question) it is the VQAv2 accuracy ``min(#references equal to the
prediction / 3, 1)``, by default averaged over the ten leave-one-out subsets of
references as the official script does (``leave_one_out=False`` gives the
plain formula over all references).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})

_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")  # "1,000" -> "1000"
_NON_DECIMAL_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")  # keeps "2.5"
_APOSTROPHES = str.maketrans("", "", "'`")
_OTHER_PUNCTUATION = str.maketrans({p: " " for p in string.punctuation if p not in ".'`"})


def normalize_answer(answer: str) -> str:
    """Normalise an answer for comparison.

    Lower case; commas inside numbers and apostrophes deleted; periods other
    than decimal points and all other ASCII punctuation turned into spaces;
    number words ``none``/``zero`` .. ``twenty`` written as digits; the articles
    ``a``/``an``/``the`` dropped; white space collapsed.

    Examples:
        ``"Two."`` -> ``"2"``; ``"a red circle"`` -> ``"red circle"``;
        ``"don't know"`` -> ``"dont know"``; ``"2.5"`` -> ``"2.5"``.
    """
    text = answer.lower().strip()
    text = _DIGIT_COMMA.sub("", text)
    text = _NON_DECIMAL_PERIOD.sub(" ", text)
    text = text.translate(_APOSTROPHES).translate(_OTHER_PUNCTUATION)
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def answer_accuracy(
    prediction: str, references: Sequence[str] | str, *, leave_one_out: bool = True
) -> float:
    """Score one predicted answer against its reference answer(s).

    Args:
        prediction: the generated answer.
        references: one reference answer, or the answers of several annotators.
        leave_one_out: with several references, average ``min(matches / 3, 1)``
            over the subsets leaving one reference out (official VQAv2), instead
            of applying it once to all references.

    Returns:
        A score in [0, 1]; exact match (0 or 1) with a single reference.

    Raises:
        ValueError: no reference answers.
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("answer_accuracy: references is empty")
    pred = normalize_answer(prediction)
    matches = [normalize_answer(r) == pred for r in refs]
    if len(refs) == 1:
        return float(matches[0])
    total = sum(matches)
    if not leave_one_out:
        return min(total / 3.0, 1.0)
    return sum(min((total - m) / 3.0, 1.0) for m in matches) / len(refs)


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[Sequence[str] | str],
    *,
    leave_one_out: bool = True,
) -> float:
    """Mean :func:`answer_accuracy` over a set of questions.

    Args:
        predictions: one generated answer per question.
        references: per question, one answer or a list of annotators' answers.

    Raises:
        ValueError: mismatched lengths, no questions, or a question without references.
    """
    if isinstance(predictions, str):
        raise TypeError("vqa_accuracy: predictions must be a sequence of strings, not one string")
    if len(predictions) != len(references):
        raise ValueError(
            f"vqa_accuracy: {len(predictions)} predictions but {len(references)} reference sets"
        )
    if not predictions:
        raise ValueError("vqa_accuracy: no questions")
    scores = [
        answer_accuracy(p, r, leave_one_out=leave_one_out) for p, r in zip(predictions, references)
    ]
    return sum(scores) / len(scores)
