"""A seeded English sentence generator: the default text corpus, made offline.

The Zipper speech-text experiment needs an English text corpus that can be
produced offline and spoken by a speech synthesiser. :func:`generate_sentences`
draws sentences from a small hand-written grammar (word lists in
:mod:`multitower.data.wordlists`): declaratives in several tenses, negation and
contractions, adjectives, prepositional phrases, relative clauses, coordinated
and subordinate clauses, yes/no and wh-questions, imperatives and spelled-out
numbers. Every sentence is lower case, 3-20 words, letters ``a-z``, space and
apostrophe only, so it can be spoken and scored by word error rate as is.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from multitower.data import wordlists as W
from multitower.data.inflection import (
    gerund,
    indefinite_article,
    number_to_words,
    past_tense,
    plural,
    third_person,
)

# Bumped whenever the grammar or the word lists change what a seed produces, so
# that caches keyed on generated text (the speech corpus) are rebuilt.
GENERATOR_VERSION = 1

T = TypeVar("T")

MIN_WORDS = 3
MAX_WORDS = 20


# ----------------------------------------------------------------------------
# Grammar
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _NounPhrase:
    text: str
    plural: bool
    person: int = 3  # 1, 2 or 3: picks the verb form


_SUBJECT_PRONOUNS = (
    _NounPhrase("i", False, 1),
    _NounPhrase("you", True, 2),
    _NounPhrase("he", False),
    _NounPhrase("she", False),
    _NounPhrase("we", True, 1),
    _NounPhrase("they", True),
)
_OBJECT_PRONOUN = {"i": "me", "you": "you", "he": "him", "she": "her", "we": "us", "they": "them"}
_BE_CONTRACTION = {
    "i": "i'm",
    "you": "you're",
    "he": "he's",
    "she": "she's",
    "we": "we're",
    "they": "they're",
}
_POSSESSIVES = ("my", "your", "his", "her", "our", "their")
_SINGULAR_DETERMINERS = ("the", "the", "the", "a", "a", "this", "that", "every", "one")
_PLURAL_DETERMINERS = ("the", "the", "these", "those", "some", "many", "few", "several", "all the")
_TENSES = (
    "present",
    "present",
    "past",
    "past",
    "past",
    "future",
    "progressive",
    "past_progressive",
    "modal",
)
_MODALS = ("can", "could", "should", "must", "might", "may", "would")
_NEGATED_MODAL = {"can": "can't", "could": "couldn't", "should": "shouldn't", "would": "wouldn't"}
_CLAUSE_CONJUNCTIONS = ("and", "and", "but", "but", "so", "because", "while", "although", "or")
_SUBORDINATORS = (
    "when",
    "after",
    "before",
    "if",
    "because",
    "although",
    "while",
    "as soon as",
    "until",
    "since",
)


# The open word classes, the lists ``words_per_list`` shortens; prepositions and
# time phrases are closed classes and stay whole.
CONTENT_LISTS = (
    "PEOPLE",
    "ANIMALS",
    "THINGS",
    "MASS_NOUNS",
    "ABSTRACT",
    "PLACES",
    "ADJECTIVES",
    "ADVERBS",
    "NAMES",
    "TRANSITIVE_VERBS",
    "INTRANSITIVE_VERBS",
    "MOTION_VERBS",
    "DITRANSITIVE_VERBS",
    "CLAUSE_VERBS",
)
_CLOSED_LISTS = (
    "NEUTRAL_TIME_PHRASES",
    "PAST_TIME_PHRASES",
    "FUTURE_TIME_PHRASES",
    "LOCATION_PREPOSITIONS",
    "THING_PREPOSITIONS",
    "DIRECTION_PREPOSITIONS",
)


class _Lexicon:
    """The grammar's word lists, each open class cut to its first ``words_per_list``."""

    def __init__(self, words_per_list: int | None) -> None:
        for name in CONTENT_LISTS:
            words = getattr(W, name)
            setattr(self, name, words if words_per_list is None else words[:words_per_list])
        for name in _CLOSED_LISTS:
            setattr(self, name, getattr(W, name))


def check_grammar_args(words_per_list: int | None, max_words: int) -> None:
    """Raise ``ValueError`` naming the argument if the grammar cannot take it."""
    if words_per_list is not None and (
        isinstance(words_per_list, bool)
        or not isinstance(words_per_list, int)
        or words_per_list < 2
    ):
        raise ValueError(f"words_per_list must be None or an integer >= 2, got {words_per_list!r}")
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < MIN_WORDS:
        raise ValueError(f"max_words must be an integer >= {MIN_WORDS}, got {max_words!r}")


class _SentenceGrammar:
    """Draws sentences from the grammar with one ``random.Random``."""

    def __init__(
        self, rng: random.Random, *, words_per_list: int | None = None, max_words: int = MAX_WORDS
    ) -> None:
        check_grammar_args(words_per_list, max_words)
        self.rng = rng
        self.max_words = max_words
        self.w = _Lexicon(words_per_list)
        self.agents = self.w.PEOPLE + self.w.ANIMALS
        self.objects = self.w.THINGS + self.w.ANIMALS + self.w.PEOPLE
        self.countables = self.w.THINGS + self.w.ANIMALS + self.w.PEOPLE

    # -- small helpers -------------------------------------------------------
    def pick(self, seq: Sequence[T]) -> T:
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def adjectives(self) -> list[str]:
        n = self.rng.choices((0, 1, 2), weights=(55, 35, 10))[0]
        out: list[str] = []
        while len(out) < n:
            adj = self.pick(self.w.ADJECTIVES)
            if adj not in out:
                out.append(adj)
        return out

    def small_number(self) -> str:
        n = self.rng.choices(
            (self.rng.randint(2, 12), self.rng.randint(13, 99), self.rng.randint(100, 999)),
            weights=(6, 3, 1),
        )[0]
        return number_to_words(n)

    # -- noun phrases --------------------------------------------------------
    def common_noun_phrase(
        self, nouns: tuple[str, ...], *, allow_plural: bool = True, allow_possessor: bool = True
    ) -> _NounPhrase:
        noun = self.pick(nouns)
        is_plural = allow_plural and self.chance(0.3) and noun not in self.w.MASS_NOUNS
        head = plural(noun) if is_plural else noun
        words = [*self.adjectives(), head]
        if allow_possessor and self.chance(0.12):
            owner = (
                self.pick(self.w.NAMES) if self.chance(0.5) else "the " + self.pick(self.w.PEOPLE)
            )
            return _NounPhrase(owner + "'s " + " ".join(words), is_plural)
        if self.chance(0.15):
            det = self.pick(_POSSESSIVES)
        elif is_plural:
            det = self.pick(_PLURAL_DETERMINERS)
            if det in ("some", "many", "few", "several") and self.chance(0.4):
                det = self.small_number()
        else:
            det = self.pick(_SINGULAR_DETERMINERS)
            if det == "a":
                det = indefinite_article(words[0])
        return _NounPhrase(det + " " + " ".join(words), is_plural)

    def subject(self, *, allow_relative: bool = True) -> _NounPhrase:
        r = self.rng.random()
        if r < 0.25:
            return self.pick(_SUBJECT_PRONOUNS)
        if r < 0.4:
            return _NounPhrase(self.pick(self.w.NAMES), False)
        np_ = self.common_noun_phrase(self.agents)
        if allow_relative and self.chance(0.12):
            np_ = _NounPhrase(np_.text + " who " + self.verb_phrase(np_, depth=1), np_.plural)
        return np_

    def object_phrase(self, *, allow_relative: bool = True) -> str:
        r = self.rng.random()
        if r < 0.1:
            return _OBJECT_PRONOUN[self.pick(_SUBJECT_PRONOUNS).text]
        if r < 0.18:
            return self.pick(self.w.NAMES)
        if r < 0.26:
            return self.pick(("some", "the", "more", "no")) + " " + self.pick(self.w.MASS_NOUNS)
        if r < 0.34:
            return self.common_noun_phrase(self.w.ABSTRACT, allow_possessor=False).text
        np_ = self.common_noun_phrase(self.objects)
        if allow_relative and self.chance(0.1):
            # Object relative clause with a gap: "the letter that my sister wrote".
            inner = self.subject(allow_relative=False)
            return (
                np_.text
                + " that "
                + inner.text
                + " "
                + past_tense(self.pick(self.w.TRANSITIVE_VERBS))
            )
        if self.chance(0.12):
            return (
                np_.text
                + " "
                + self.pick(self.w.THING_PREPOSITIONS)
                + " the "
                + self.pick(self.w.THINGS + self.w.PLACES)
            )
        return np_.text

    def place_phrase(self, prepositions: tuple[str, ...]) -> str:
        place = self.pick(self.w.PLACES)
        det = self.pick(("the", "the", "the", "a", "my", "our", "their", "this"))
        if det == "a":
            det = indefinite_article(place)
        adj = self.pick(self.w.ADJECTIVES) + " " if self.chance(0.2) else ""
        return f"{self.pick(prepositions)} {det} {adj}{place}"

    # -- verbs ---------------------------------------------------------------
    def conjugate(self, verb: str, subject: _NounPhrase, tense: str, *, negative: bool) -> str:
        """Inflect ``verb`` for ``subject`` in ``tense``; may add an auxiliary."""
        third_singular = subject.person == 3 and not subject.plural
        contract = self.chance(0.6)
        if tense == "present":
            if not negative:
                return third_person(verb) if third_singular else verb
            aux = "does" if third_singular else "do"
            return (aux + "n't " if contract else aux + " not ") + verb
        if tense == "past":
            if not negative:
                return past_tense(verb)
            return ("didn't " if contract else "did not ") + verb
        if tense == "future":
            return ("won't " if contract else "will not ") + verb if negative else "will " + verb
        if tense in ("progressive", "past_progressive"):
            be = self.be_form(subject, past=tense == "past_progressive")
            if negative:
                be = be + "n't" if contract and be != "am" else be + " not"
            return be + " " + gerund(verb)
        modal = self.pick(_MODALS)
        if negative:
            return (
                (_NEGATED_MODAL[modal] if contract and modal in _NEGATED_MODAL else modal + " not")
                + " "
                + verb
            )
        return modal + " " + verb

    @staticmethod
    def be_form(subject: _NounPhrase, *, past: bool) -> str:
        if past:
            return "were" if subject.plural or subject.person == 2 else "was"
        if subject.person == 1 and not subject.plural:
            return "am"
        return "are" if subject.plural or subject.person == 2 else "is"

    def verb_phrase(self, subject: _NounPhrase, *, depth: int = 0, tense: str | None = None) -> str:
        tense = tense or self.pick(_TENSES)
        negative = self.chance(0.15)
        kind = self.rng.choices(
            ("transitive", "intransitive", "motion", "ditransitive", "copular"),
            weights=(40, 15, 18, 10, 12),
        )[0]
        if kind == "copular":
            be = self.be_form(subject, past=tense.startswith("past"))
            if negative:
                be += " not"
            complement = self.pick(self.w.ADJECTIVES)
            if self.chance(0.3):
                complement = "very " + complement
            elif self.chance(0.25):
                complement += " and " + self.pick(self.w.ADJECTIVES)
            elif self.chance(0.25):
                complement += " " + self.place_phrase(self.w.LOCATION_PREPOSITIONS)
            return be + " " + complement
        if kind == "transitive":
            verb = self.pick(self.w.TRANSITIVE_VERBS)
            out = (
                self.conjugate(verb, subject, tense, negative=negative)
                + " "
                + self.object_phrase(allow_relative=depth == 0)
            )
            if self.chance(0.25):
                out += " " + self.place_phrase(self.w.LOCATION_PREPOSITIONS)
            return out
        if kind == "intransitive":
            verb = self.pick(self.w.INTRANSITIVE_VERBS)
            out = self.conjugate(verb, subject, tense, negative=negative)
            if self.chance(0.5):
                out += " " + self.pick(self.w.ADVERBS)
            elif self.chance(0.4):
                out += " " + self.place_phrase(self.w.LOCATION_PREPOSITIONS)
            return out
        if kind == "motion":
            verb = self.pick(self.w.MOTION_VERBS)
            out = (
                self.conjugate(verb, subject, tense, negative=negative)
                + " "
                + self.place_phrase(self.w.DIRECTION_PREPOSITIONS)
            )
            if self.chance(0.25):
                out += " " + self.pick(self.w.ADVERBS)
            return out
        verb = self.pick(self.w.DITRANSITIVE_VERBS)
        recipient = (
            self.object_phrase(allow_relative=False)
            if self.chance(0.3)
            else self.common_noun_phrase(self.w.PEOPLE, allow_plural=False).text
        )
        thing = self.common_noun_phrase(self.w.THINGS, allow_possessor=False).text
        head = self.conjugate(verb, subject, tense, negative=negative)
        if self.chance(0.5):
            return f"{head} {recipient} {thing}"
        return f"{head} {thing} to {recipient}"

    def clause(self, *, depth: int = 0, tense: str | None = None) -> str:
        subject = self.subject(allow_relative=depth == 0)
        vp = self.verb_phrase(subject, depth=depth, tense=tense)
        # "he is" -> "he's" now and then.
        first = vp.split(" ", 1)[0]
        if subject.text in _BE_CONTRACTION and first in ("am", "is", "are") and self.chance(0.35):
            return _BE_CONTRACTION[subject.text] + vp[len(first) :]
        return subject.text + " " + vp

    # -- sentence templates ----------------------------------------------------
    def time_phrase(self, tense: str) -> str:
        if tense.startswith("past"):
            return self.pick(self.w.PAST_TIME_PHRASES)
        if tense == "future":
            return self.pick(self.w.FUTURE_TIME_PHRASES)
        return self.pick(self.w.NEUTRAL_TIME_PHRASES)

    def declarative(self) -> str:
        tense = self.pick(_TENSES)
        s = self.clause(tense=tense)
        if self.chance(0.25):
            time = self.time_phrase(tense)
            s = f"{time} {s}" if self.chance(0.5) else f"{s} {time}"
        return s

    def coordinated(self) -> str:
        return f"{self.clause(depth=1)} {self.pick(_CLAUSE_CONJUNCTIONS)} {self.clause(depth=1)}"

    def subordinate(self) -> str:
        sub = self.pick(_SUBORDINATORS)
        if self.chance(0.5):
            return f"{sub} {self.clause(depth=1)} {self.clause(depth=1)}"
        return f"{self.clause(depth=1)} {sub} {self.clause(depth=1)}"

    def reported(self) -> str:
        subject = self.subject(allow_relative=False)
        verb = self.pick(self.w.CLAUSE_VERBS)
        tense = self.pick(("present", "past"))
        return f"{subject.text} {self.conjugate(verb, subject, tense, negative=False)} that {self.clause(depth=1)}"

    def yes_no_question(self) -> str:
        subject = self.subject(allow_relative=False)
        third_singular = subject.person == 3 and not subject.plural
        r = self.rng.random()
        if r < 0.4:
            aux = self.pick(("did", "does" if third_singular else "do"))
            return (
                f"{aux} {subject.text} {self.pick(self.w.TRANSITIVE_VERBS)} {self.object_phrase()}"
            )
        if r < 0.7:
            be = self.be_form(subject, past=self.chance(0.4))
            return f"{be} {subject.text} {self.pick(self.w.ADJECTIVES)}"
        return f"{self.pick((*_MODALS, 'will'))} {subject.text} {self.pick(self.w.MOTION_VERBS)} {self.place_phrase(self.w.DIRECTION_PREPOSITIONS)}"

    def wh_question(self) -> str:
        subject = self.subject(allow_relative=False)
        third_singular = subject.person == 3 and not subject.plural
        do = self.pick(("did", "does" if third_singular else "do"))
        r = self.rng.random()
        if r < 0.25:
            return f"{self.pick(('where', 'why', 'when', 'how'))} {do} {subject.text} {self.pick(self.w.TRANSITIVE_VERBS)} {self.object_phrase(allow_relative=False)}"
        if r < 0.4:
            return f"what {do} {subject.text} {self.pick(('want', 'need', 'see', 'find', 'say', 'like', 'remember'))}"
        if r < 0.55:
            return f"who {past_tense(self.pick(self.w.TRANSITIVE_VERBS))} {self.object_phrase()}"
        if r < 0.7:
            be = self.be_form(subject, past=self.chance(0.4))
            return f"why {be} {subject.text} so {self.pick(self.w.ADJECTIVES)}"
        if r < 0.85:
            noun = plural(self.pick(self.countables))
            return f"how many {noun} {do} {subject.text} {self.pick(self.w.TRANSITIVE_VERBS)}"
        return f"{self.pick(('where', 'when', 'why'))} {self.pick(('will', 'can', 'should'))} {subject.text} {self.pick(self.w.MOTION_VERBS)}"

    def imperative(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            out = f"{self.pick(self.w.TRANSITIVE_VERBS)} {self.object_phrase()}"
            if self.chance(0.3):
                out += " " + self.place_phrase(self.w.LOCATION_PREPOSITIONS)
            return ("please " + out) if self.chance(0.4) else out
        if r < 0.65:
            return f"don't {self.pick(self.w.TRANSITIVE_VERBS)} {self.object_phrase(allow_relative=False)}"
        if r < 0.85:
            tail = " " + self.time_phrase("future") if self.chance(0.5) else ""
            return f"let's {self.pick(self.w.MOTION_VERBS)} {self.place_phrase(self.w.DIRECTION_PREPOSITIONS)}{tail}"
        return f"{self.pick(('please', 'never', 'always'))} {self.pick(self.w.INTRANSITIVE_VERBS)} {self.pick(self.w.ADVERBS)}"

    def numbers(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            noun = self.pick(self.countables)
            n = self.rng.randint(2, 999)
            verb = "were" if self.chance(0.4) else "are"
            prep = self.pick(self.w.THING_PREPOSITIONS + self.w.LOCATION_PREPOSITIONS)
            return f"there {verb} {number_to_words(n)} {plural(noun)} {prep} the {self.pick(self.w.THINGS + self.w.PLACES)}"
        if r < 0.45:
            return (
                f"{self.pick(self.w.NAMES)} is {number_to_words(self.rng.randint(2, 99))} years old"
            )
        if r < 0.6:
            vehicle = self.pick(("train", "bus", "boat", "plane", "ship"))
            return f"the {vehicle} {self.pick(('leaves', 'arrives', 'left', 'arrived'))} at {number_to_words(self.rng.randint(1, 12))} o'clock"
        if r < 0.75:
            return f"the {self.pick(self.w.THINGS)} {self.pick(('costs', 'cost'))} {number_to_words(self.rng.randint(2, 9999))} dollars"
        if r < 0.88:
            subject = self.subject(allow_relative=False)
            verb = self.pick(("walked", "drove", "ran", "swam", "traveled", "rode"))
            unit = self.pick(("miles", "kilometers", "meters", "hours", "days"))
            return f"{subject.text} {verb} {number_to_words(self.rng.randint(2, 500))} {unit}"
        year = self.rng.randint(1900, 2030)
        return f"it happened in the year {number_to_words(year)}"

    def there_is(self) -> str:
        np_ = self.common_noun_phrase(self.w.THINGS + self.w.ANIMALS, allow_possessor=False)
        be = "are" if np_.plural else "is"
        if self.chance(0.3):
            be = "were" if np_.plural else "was"
        return f"there {be} {np_.text} {self.place_phrase(self.w.LOCATION_PREPOSITIONS)}"

    def sentence(self) -> str:
        templates = (
            (self.declarative, 40),
            (self.coordinated, 12),
            (self.subordinate, 10),
            (self.reported, 5),
            (self.yes_no_question, 8),
            (self.wh_question, 9),
            (self.imperative, 6),
            (self.numbers, 6),
            (self.there_is, 4),
        )
        funcs, weights = zip(*templates)
        while True:
            s = " ".join(self.rng.choices(funcs, weights=weights)[0]().split())
            if MIN_WORDS <= len(s.split()) <= self.max_words:
                return s


def generate_sentences(
    n: int, seed: int, *, words_per_list: int | None = None, max_words: int = MAX_WORDS
) -> list[str]:
    """Generate ``n`` English sentences from the built-in grammar.

    The output depends only on the arguments and :data:`GENERATOR_VERSION`; the
    first ``k`` sentences of ``generate_sentences(n, seed)`` equal
    ``generate_sentences(k, seed)``. Sentences may repeat (short ones do).

    Args:
        n: number of sentences (>= 0).
        seed: seed of the ``random.Random`` that drives the grammar.
        words_per_list: keep only the first this many words of every open word
            class (:data:`CONTENT_LISTS`: nouns, names, adjectives, adverbs and
            verbs; 10 gives about 520 word types against 2,500 for the whole
            grammar); ``None`` keeps them all.
        max_words: longest sentence in words (>= 3; longer draws are redrawn).

    Returns:
        Lower-case sentences of 3-``max_words`` words over ``a-z``, space and apostrophe.

    Raises:
        ValueError: if ``n`` is negative, or ``words_per_list`` / ``max_words`` out of range.
    """
    if n < 0:
        raise ValueError(f"generate_sentences: n must be >= 0, got {n}")
    grammar = _SentenceGrammar(
        random.Random(seed), words_per_list=words_per_list, max_words=max_words
    )
    return [grammar.sentence() for _ in range(n)]


def generate_unique_sentences(
    n: int,
    seed: int,
    *,
    exclude: frozenset[str] | set[str] = frozenset(),
    words_per_list: int | None = None,
    max_words: int = MAX_WORDS,
) -> list[str]:
    """Generate ``n`` distinct sentences, none of them in ``exclude``.

    Draws from the same stream as :func:`generate_sentences` and skips repeats,
    so the result is deterministic in its arguments; ``words_per_list`` and
    ``max_words`` as in :func:`generate_sentences`.

    Raises:
        ValueError: if ``n`` is negative.
        RuntimeError: if the grammar stops producing new sentences (never for
            the sizes this project uses, a guard against an endless loop).
    """
    if n < 0:
        raise ValueError(f"generate_unique_sentences: n must be >= 0, got {n}")
    grammar = _SentenceGrammar(
        random.Random(seed), words_per_list=words_per_list, max_words=max_words
    )
    seen = set(exclude)
    out: list[str] = []
    misses = 0
    while len(out) < n:
        s = grammar.sentence()
        if s in seen:
            misses += 1
            if misses > 100 * n + 1000:
                raise RuntimeError(
                    f"generate_unique_sentences: could not find {n} distinct sentences"
                )
            continue
        seen.add(s)
        out.append(s)
    return out
