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


def _byte_level(tmp_path: Path, sentences: list[str]) -> Path:
    """A GPT-2-style byte-level BPE tokenizer.json with its specials after the merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    tok.add_special_tokens(["<|pad|>", "<|bos|>", "<|eos|>"])  # ids 300, 301, 302
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_an_hf_tokenizer_keeps_its_ids_round_trips_and_saves(tmp_path, sentences) -> None:
    path = _byte_level(tmp_path, sentences[:200])
    ids = {"pad_id": 300, "bos_id": 301, "eos_id": 302}
    tok = TextTokenizer.from_hf(path, **ids, alphabet="abcdefghijklmnopqrstuvwxyz'", vocab_size=320)
    assert (tok.kind, tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (
        "hf",
        300,
        301,
        302,
        320,
    )
    for s in sentences[:200]:
        encoded = tok.encode(s, add_bos=True, add_eos=True)
        assert encoded[0] == 301 and encoded[-1] == 302 and max(encoded[1:-1]) < 300
        # specials and the model's padding rows (303-319, no token) decode to nothing
        assert tok.decode([300, *encoded, 310]) == s
    with pytest.raises(ValueError, match=r"cannot encode characters \['7'\]"):
        tok.encode("room 7")
    with pytest.raises(ValueError, match=r"outside \[0, 320\)"):
        tok.decode([320])
    tok.save(tmp_path / "saved.json")
    again = TextTokenizer.load(tmp_path / "saved.json")
    assert (again.kind, again.bos_id, again.vocab_size) == ("hf", 301, 320)
    assert again.encode(sentences[0]) == tok.encode(sentences[0])
    # the special ids are covered by the recorded hash
    payload = json.loads((tmp_path / "saved.json").read_text())
    payload["special_ids"] = [300, 302, 301]
    (tmp_path / "saved.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="SHA-256 differs"):
        TextTokenizer.load(tmp_path / "saved.json")


def test_an_hf_tokenizer_is_checked_against_its_ids_size_and_alphabet(tmp_path, sentences) -> None:
    path = _byte_level(tmp_path, sentences[:200])
    alphabet = "abcdefghijklmnopqrstuvwxyz'"
    with pytest.raises(ValueError, match="three different ids"):
        TextTokenizer.from_hf(path, pad_id=300, bos_id=301, eos_id=301, alphabet=alphabet)
    with pytest.raises(ValueError, match="eos_id=400 is not an id of the tokenizer"):
        TextTokenizer.from_hf(path, pad_id=300, bos_id=301, eos_id=400, alphabet=alphabet)
    with pytest.raises(ValueError, match="vocab_size=100 is smaller than the tokenizer's 303"):
        TextTokenizer.from_hf(
            path, pad_id=300, bos_id=301, eos_id=302, alphabet=alphabet, vocab_size=100
        )
    # a character tokenizer of the experiment's own kind lacks "q": it cannot give it back
    chars = TextTokenizer.characters("abc")
    chars._tok.save(str(tmp_path / "chars.json"))
    with pytest.raises(ValueError, match="does not give 'q' back"):
        TextTokenizer.from_hf(
            tmp_path / "chars.json", pad_id=0, bos_id=1, eos_id=2, alphabet="abcq"
        )
