"""Tests of the BPE / character text tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multitower.data.sentences import generate_sentences
from multitower.data.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return generate_sentences(2000, seed=3)


@pytest.fixture(scope="module")
def bpe(sentences: list[str]) -> TextTokenizer:
    return TextTokenizer.train_bpe(sentences, vocab_size=500)


def test_bpe_round_trip_and_special_ids(bpe: TextTokenizer, sentences: list[str]) -> None:
    assert (bpe.pad_id, bpe.bos_id, bpe.eos_id) == (0, 1, 2)
    assert [bpe.id_to_token(i) for i in range(3)] == ["<pad>", "<bos>", "<eos>"]
    assert bpe.vocab_size == 500
    for s in sentences[:500]:
        ids = bpe.encode(s)
        assert all(3 <= i < bpe.vocab_size for i in ids)  # specials never appear from text
        assert bpe.decode(ids) == s
    # BPE actually merges: far fewer tokens than characters.
    n_chars = sum(len(s) for s in sentences[:500])
    n_tokens = sum(len(bpe.encode(s)) for s in sentences[:500])
    assert n_tokens < 0.5 * n_chars


def test_bos_eos_and_decode_drops_specials(bpe: TextTokenizer) -> None:
    ids = bpe.encode("the dog", add_bos=True, add_eos=True)
    assert ids[0] == bpe.bos_id and ids[-1] == bpe.eos_id
    assert bpe.decode([*ids, bpe.pad_id, bpe.pad_id]) == "the dog"
    assert bpe.encode("") == []


def test_unencodable_characters_raise_naming_them(bpe: TextTokenizer) -> None:
    with pytest.raises(ValueError, match=r"\['!', 'T'\]"):
        bpe.encode("The dog!")
    with pytest.raises(ValueError, match="outside"):
        bpe.decode([0, bpe.vocab_size])


def test_training_is_deterministic(
    sentences: list[str], bpe: TextTokenizer, tmp_path: Path
) -> None:
    again = TextTokenizer.train_bpe(sentences, vocab_size=500)
    bpe.save(tmp_path / "a.json")
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_vocab_too_small_is_an_error(sentences: list[str]) -> None:
    with pytest.raises(ValueError, match="too small"):
        TextTokenizer.train_bpe(sentences, vocab_size=20)


def test_character_tokenizer(sentences: list[str]) -> None:
    char = TextTokenizer.characters(sentences)
    assert char.kind == "char"
    assert char.alphabet == set("abcdefghijklmnopqrstuvwxyz' ")
    assert char.vocab_size == 3 + 1 + 27  # specials, word-start mark, 26 letters + apostrophe
    s = "it's a dog"
    ids = char.encode(s)
    # One token per character plus one word-start mark per word: "▁i t ' s ▁a ▁d o g".
    assert len(ids) == len(s.replace(" ", "")) + len(s.split())
    assert char.decode(ids) == s
    assert all(char.decode(char.encode(x)) == x for x in sentences[:200])
    from_alphabet = TextTokenizer.characters("abc")
    assert [from_alphabet.id_to_token(i) for i in from_alphabet.encode("ab ca")] == [
        "\u2581",
        "a",
        "b",
        "\u2581",
        "c",
        "a",
    ]
    with pytest.raises(ValueError, match="'d'"):
        from_alphabet.encode("bad")


def test_save_load_round_trip(bpe: TextTokenizer, sentences: list[str], tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tok.json"
    bpe.save(path)
    loaded = TextTokenizer.load(path)
    assert loaded.kind == "bpe" and loaded.vocab_size == bpe.vocab_size
    assert all(loaded.encode(s) == bpe.encode(s) for s in sentences[:200])
    char = TextTokenizer.characters("abc' ")
    char.save(tmp_path / "char.json")
    assert TextTokenizer.load(tmp_path / "char.json").encode("a cab") == char.encode("a cab")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["tok.json"]  # no temp file left


def test_changed_vocabulary_is_detected(bpe: TextTokenizer, tmp_path: Path) -> None:
    bpe.save(tmp_path / "tok.json")
    payload = json.loads((tmp_path / "tok.json").read_text())
    vocab = payload["tokenizer"]["model"]["vocab"]
    a, b = list(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two ids swapped: still a valid tokenizer
    (tmp_path / "tok.json").write_text(json.dumps(payload, indent=2))  # other formatting is fine
    with pytest.raises(ValueError, match="SHA-256 differs"):
        TextTokenizer.load(tmp_path / "tok.json")
    del payload["sha256"]  # a file saved before hashes loads unchecked
    (tmp_path / "tok.json").write_text(json.dumps(payload))
    assert TextTokenizer.load(tmp_path / "tok.json").vocab_size == bpe.vocab_size


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TextTokenizer.load(tmp_path / "none.json")
    (tmp_path / "garbage.json").write_bytes(b"\x00\x01 not json")
    with pytest.raises(ValueError, match="not a JSON"):
        TextTokenizer.load(tmp_path / "garbage.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        TextTokenizer.load(tmp_path / "other.json")
