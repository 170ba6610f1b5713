"""English inflection for the sentence generator: plurals, verb forms, articles, numbers.

Regular forms are derived by spelling rules; irregular ones come from
:mod:`multitower.data.wordlists`.
"""

from __future__ import annotations

from multitower.data import wordlists as W

_VOWELS = "aeiou"


def plural(noun: str) -> str:
    """English plural of a noun from the word lists ("box" -> "boxes", "man" -> "men")."""
    if noun in W.IRREGULAR_PLURAL:
        return W.IRREGULAR_PLURAL[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    """Present tense third person singular ("go" -> "goes", "carry" -> "carries")."""
    if verb == "have":
        return "has"
    if verb.endswith(("s", "x", "z", "ch", "sh", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ies"
    return verb + "s"


def past_tense(verb: str) -> str:
    """Simple past ("walk" -> "walked", "stop" -> "stopped", "see" -> "saw")."""
    if verb in W.IRREGULAR_PAST:
        return W.IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ied"
    if verb in W.DOUBLING_VERBS:
        return verb + verb[-1] + "ed"
    return verb + "ed"


def gerund(verb: str) -> str:
    """Present participle ("run" -> "running", "make" -> "making", "tie" -> "tying")."""
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    if verb in W.DOUBLING_VERBS:
        return verb + verb[-1] + "ing"
    return verb + "ing"


def indefinite_article(word: str) -> str:
    """``"a"`` or ``"an"`` for the word that follows the article."""
    if word in W.A_BEFORE_VOWEL_LETTER:
        return "a"
    if word in W.AN_BEFORE_CONSONANT_LETTER or word[0] in _VOWELS:
        return "an"
    return "a"


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell out ``0 <= n < 1_000_000`` ("327" -> "three hundred twenty seven").

    Raises:
        ValueError: if ``n`` is outside ``[0, 999999]``.
    """
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_to_words: n must be in [0, 999999], got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    thousands, rest = divmod(n, 1000)
    return (
        number_to_words(thousands)
        + " thousand"
        + ("" if rest == 0 else " " + number_to_words(rest))
    )
