"""Tests of the sentence generator, the text normaliser and the text readers."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from multitower.data import wordlists
from multitower.data.errors import BadRecordError
from multitower.data.inflection import gerund, number_to_words, past_tense, plural, third_person
from multitower.data.sentences import generate_sentences, generate_unique_sentences
from multitower.data.text import is_speakable, normalize_text, read_text_file, read_wordnet_examples


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return generate_sentences(3000, seed=11)


def test_same_seed_same_sentences_and_prefix_stable() -> None:
    a = generate_sentences(200, seed=5)
    assert a == generate_sentences(200, seed=5)
    assert generate_sentences(50, seed=5) == a[:50]
    assert a != generate_sentences(200, seed=6)


def test_sentences_are_speakable_and_3_to_20_words(corpus: list[str]) -> None:
    bad = [s for s in corpus if not is_speakable(s)]
    assert not bad, bad[:5]
    lengths = [len(s.split()) for s in corpus]
    assert min(lengths) >= 3 and max(lengths) <= 20
    # Both ends of the range are actually used, not a narrow band.
    assert min(lengths) <= 4 and max(lengths) >= 17
    # The normaliser leaves generated text unchanged.
    assert all(normalize_text(s) == s for s in corpus[:300])


def test_vocabulary_has_at_least_1000_words(corpus: list[str]) -> None:
    vocab = Counter(w for s in corpus for w in s.split())
    assert len(vocab) >= 1000, len(vocab)
    assert len(set(corpus)) > 0.95 * len(corpus)


def test_syntax_is_varied(corpus: list[str]) -> None:
    def share(pattern: str) -> float:
        return sum(bool(re.search(pattern, s)) for s in corpus) / len(corpus)

    assert (
        share(r"^(do|does|did|is|are|was|were|can|will|could|should|might|may|would|must) ") > 0.03
    )  # yes/no questions
    assert share(r"^(where|why|when|how|what|who) ") > 0.03  # wh-questions
    assert share(r" who | that ") > 0.05  # relative / complement clauses
    assert share(r" (and|but|so|because|while|although|or) ") > 0.1  # coordination
    assert share(r"'") > 0.05  # contractions and possessives
    assert (
        share(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand)\b")
        > 0.02
    )
    assert (
        share(
            r"\b(in|on|at|to|into|near|behind|under|beside|toward|across|through|around) (the|a|an|my|our|their|this)\b"
        )
        > 0.2
    )  # prepositional phrases


def test_word_lists_are_lowercase_letters() -> None:
    pattern = re.compile(r"[a-z]+( [a-z]+)*")
    for name in dir(wordlists):
        value = getattr(wordlists, name)
        if name.isupper() and isinstance(value, (tuple, frozenset)):
            bad = [w for w in value if not pattern.fullmatch(w)]
            assert not bad, (name, bad)


@pytest.mark.parametrize(
    ("fn", "word", "expected"),
    [
        (plural, "box", "boxes"),
        (plural, "city", "cities"),
        (plural, "toy", "toys"),
        (plural, "man", "men"),
        (plural, "knife", "knives"),
        (plural, "church", "churches"),
        (past_tense, "walk", "walked"),
        (past_tense, "bake", "baked"),
        (past_tense, "carry", "carried"),
        (past_tense, "stop", "stopped"),
        (past_tense, "play", "played"),
        (past_tense, "see", "saw"),
        (gerund, "run", "running"),
        (gerund, "make", "making"),
        (gerund, "tie", "tying"),
        (gerund, "see", "seeing"),
        (third_person, "go", "goes"),
        (third_person, "watch", "watches"),
        (third_person, "fly", "flies"),
        (third_person, "play", "plays"),
    ],
)
def test_inflection(fn: Callable[[str], str], word: str, expected: str) -> None:
    assert fn(word) == expected


def test_number_to_words() -> None:
    cases = {
        0: "zero",
        7: "seven",
        13: "thirteen",
        40: "forty",
        99: "ninety nine",
        105: "one hundred five",
        1000: "one thousand",
        2024: "two thousand twenty four",
        999999: "nine hundred ninety nine thousand nine hundred ninety nine",
    }
    for n, words in cases.items():
        assert number_to_words(n) == words
    with pytest.raises(ValueError, match="999999"):
        number_to_words(1_000_000)


def test_unique_sentences_are_distinct_and_respect_exclude() -> None:
    first = generate_unique_sentences(300, seed=2)
    assert len(set(first)) == 300
    assert first == generate_unique_sentences(300, seed=2)
    excluded = set(first[:100])
    again = generate_unique_sentences(300, seed=2, exclude=excluded)
    assert not excluded & set(again)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  Don't   STOP\tnow.  ", "don't stop now"),
        ("\u2018quoted\u2019 and it\u2019s fine", "quoted and it's fine"),
        ("well-known café; naïve", "well known cafe naive"),
        ("at 7 o'clock -- 'twas", "at 7 o'clock twas"),
        ("the dogs' bowls", "the dogs bowls"),
        ("...", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_read_text_file(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("First line, here!\n\n   \nSECOND line\u2019s end.\n--\n", encoding="utf-8")
    assert read_text_file(path) == ["first line here", "second line's end"]
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_text_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\xfa garbage\n")
    with pytest.raises(BadRecordError, match=r"bad\.txt"):
        read_text_file(bad)


def test_read_wordnet_examples_parses_quoted_gloss_examples(tmp_path: Path) -> None:
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    lines = [
        '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived; "the entity was large"; "it is here"  \n',
        '00002137 03 n 02 abstraction 0 abstract_entity 0 | a general concept; "he ran the race"; "Dogs\' barking at 9 pm" \n',
        '00002452 03 n 01 thing 0 | a separate object; "the entity was large"  \n',
        "00002684 03 n 01 object 0 | no examples here\n",
    ]
    (tmp_path / "data.noun").write_text(header + "".join(lines), encoding="utf-8")
    (tmp_path / "data.verb").write_text(
        '00000001 29 v 01 run 0 | move fast; "she runs every morning"\n', encoding="utf-8"
    )
    got = read_wordnet_examples(tmp_path)
    # Deduplicated, normalised, short ("it is here" has 3 words, kept) and digit-bearing ones filtered.
    assert got == [
        "the entity was large",
        "it is here",
        "he ran the race",
        "she runs every morning",
    ]
    assert "dogs barking at 9 pm" in read_wordnet_examples(tmp_path, speakable_only=False)


def test_read_wordnet_examples_missing_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        read_wordnet_examples(tmp_path / "nowhere")


def test_read_wordnet_examples_real_install_when_present() -> None:
    try:
        examples = read_wordnet_examples()
    except FileNotFoundError:
        pytest.skip("Debian wordnet-base is not installed")
    assert len(examples) > 1000
    assert all(is_speakable(s) for s in examples[:1000])


def test_words_per_list_keeps_only_the_first_words_of_each_open_class() -> None:
    from multitower.data.sentences import CONTENT_LISTS

    k = 5
    kept = {w for name in CONTENT_LISTS for w in getattr(wordlists, name)[:k]}
    # words that only the cut part of the lists holds (a word can sit in two lists)
    cut = {w for name in CONTENT_LISTS for w in getattr(wordlists, name)[k:]} - kept
    # ... and neither a closed class (time phrases, prepositions) nor the templates
    import multitower.data.sentences as sentences_module

    fixed = set(re.findall(r"[a-z]+", Path(sentences_module.__file__).read_text()))
    fixed |= {f(w) for w in kept for f in (past_tense, plural, third_person, gerund)}
    for name in dir(wordlists):
        value = getattr(wordlists, name)
        if name.isupper() and name not in CONTENT_LISTS and isinstance(value, tuple):
            fixed |= {w for phrase in value for w in phrase.split()}
    cut -= fixed
    small = generate_sentences(2000, seed=3, words_per_list=k)
    words = Counter(w for s in small for w in s.split())
    assert not set(words) & cut, sorted(set(words) & cut)[:10]
    full = Counter(w for s in generate_sentences(2000, seed=3) for w in s.split())
    assert len(set(full) & cut) > 300  # the full grammar does use them
    assert len(words) < len(full) / 2
    # every kept noun still occurs: the grammar's structure is unchanged
    assert all(words[w] > 0 for w in wordlists.PEOPLE[:k])
    assert all(is_speakable(s) for s in small)


def test_max_words_bounds_every_sentence() -> None:
    short = generate_unique_sentences(500, seed=4, max_words=6)
    lengths = [len(s.split()) for s in short]
    assert max(lengths) == 6 and min(lengths) >= 3
    # None / 20 are the defaults: the same stream as without the arguments
    assert generate_sentences(100, seed=4, words_per_list=None, max_words=20) == generate_sentences(
        100, seed=4
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"words_per_list": 1}, "words_per_list"),
        ({"words_per_list": True}, "words_per_list"),
        ({"words_per_list": "10"}, "words_per_list"),
        ({"max_words": 2}, "max_words"),
        ({"max_words": 12.0}, "max_words"),
    ],
)
def test_grammar_arguments_are_checked(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        generate_sentences(3, seed=0, **kwargs)
