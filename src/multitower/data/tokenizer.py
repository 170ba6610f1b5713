"""Text tokenizer for the text tower: byte-pair encoding or characters.

A thin wrapper around a HuggingFace ``tokenizers`` BPE model with a
SentencePiece-style ``Metaspace`` pre-tokenizer: a space becomes ``"▁"`` at the
start of the next word, so ``decode(encode(s)) == s`` for any single-spaced
text over the training alphabet. The character-level tokenizer is the same BPE
model with no merges.

Ids 0, 1 and 2 are always ``<pad>``, ``<bos>`` and ``<eos>``. There is no
unknown token: :meth:`TextTokenizer.encode` raises on characters outside the
alphabet instead of silently dropping them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from multitower.io import write_text_atomic

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
_SPACE_MARK = "\u2581"  # "▁", the Metaspace replacement for a space
_FORMAT = "multitower-text-tokenizer"
_FORMAT_VERSION = 1


def _tokenizer_sha256(tokenizer: object) -> str:
    """SHA-256 of the tokenizers JSON in a canonical form (sorted keys), so that it
    survives the file's own formatting."""
    canonical = json.dumps(tokenizer, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _alphabet_of(sentences: Iterable[str]) -> set[str]:
    chars: set[str] = set()
    for s in sentences:
        chars.update(s)
    chars.discard(" ")
    return chars


def _check_alphabet(chars: set[str]) -> None:
    bad = sorted(c for c in chars if c == _SPACE_MARK or c.isspace())
    if bad:
        raise ValueError(
            f"alphabet may not contain whitespace other than ' ' or {_SPACE_MARK!r}; got {bad!r}"
        )
    if not chars:
        raise ValueError("alphabet is empty: give at least one non-space character")


def _new_tokenizer(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_SPACE_MARK, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=_SPACE_MARK, prepend_scheme="always", split=True)
    return tok


class TextTokenizer:
    """Subword (BPE) or character tokenizer with fixed special-token ids.

    Build with :meth:`train_bpe` or :meth:`characters`, or :meth:`load` a saved
    one. ``kind`` is ``"bpe"`` or ``"char"``.
    """

    def __init__(self, tokenizer: Tokenizer, kind: str) -> None:
        if kind not in ("bpe", "char"):
            raise ValueError(f"kind must be 'bpe' or 'char', got {kind!r}")
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            got = tokenizer.token_to_id(token)
            if got != expected_id:
                raise ValueError(f"special token {token!r} must have id {expected_id}, got {got}")
        self._tok = tokenizer
        self.kind = kind
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        # Characters that can be encoded: every single-character token, plus the space.
        self._alphabet = frozenset(t for t in vocab if len(t) == 1 and t != _SPACE_MARK) | {" "}
        if _SPACE_MARK not in vocab:
            raise ValueError(f"tokenizer vocabulary lacks the word-start mark {_SPACE_MARK!r}")

    # -- construction ----------------------------------------------------------
    @classmethod
    def train_bpe(
        cls, sentences: Iterable[str], vocab_size: int, *, min_frequency: int = 2
    ) -> TextTokenizer:
        """Train a BPE tokenizer on ``sentences``.

        Every character seen in training is in the vocabulary. Training is
        deterministic: the same sentences give the same merges.

        Args:
            sentences: training text (normalise it first with ``normalize_text``).
            vocab_size: total vocabulary size, special tokens included; at least
                the 3 special tokens + the alphabet + 1 (``"▁"``).
            min_frequency: a pair must occur this often to be merged.

        Raises:
            ValueError: if ``vocab_size`` is too small for the alphabet or there is no text.
        """
        sentences = list(sentences)
        alphabet = _alphabet_of(sentences)
        _check_alphabet(alphabet)
        minimum = len(SPECIAL_TOKENS) + len(alphabet) + 1
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the alphabet needs at least {minimum} ids (3 special + {len(alphabet)} characters + '▁')"
            )
        tok = _new_tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=sorted(alphabet | {_SPACE_MARK}),
            limit_alphabet=len(alphabet) + 1,
            show_progress=False,
        )
        tok.train_from_iterator(sentences, trainer=trainer)
        return cls(tok, "bpe")

    @classmethod
    def characters(cls, sentences_or_alphabet: str | Iterable[str]) -> TextTokenizer:
        """Character-level tokenizer.

        Args:
            sentences_or_alphabet: a string (its characters are the alphabet), or
                sentences whose characters together form it. The space is always
                encodable.
        """
        if isinstance(sentences_or_alphabet, str):
            alphabet = _alphabet_of([sentences_or_alphabet])
        else:
            alphabet = _alphabet_of(sentences_or_alphabet)
        _check_alphabet(alphabet)
        vocab = {
            token: i for i, token in enumerate((*SPECIAL_TOKENS, _SPACE_MARK, *sorted(alphabet)))
        }
        tok = _new_tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(tok, "char")

    # -- properties ------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def alphabet(self) -> frozenset[str]:
        """The characters :meth:`encode` accepts (space included)."""
        return self._alphabet

    # -- encode / decode -------------------------------------------------------
    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``.

        Args:
            text: text over :attr:`alphabet` (normalise it first).
            add_bos: prepend ``bos_id``.
            add_eos: append ``eos_id``.

        Raises:
            ValueError: naming every character of ``text`` outside the alphabet.
        """
        unknown = sorted(set(text) - self._alphabet)
        if unknown:
            raise ValueError(
                f"cannot encode characters {unknown!r} in {text[:60]!r}: not in the tokenizer alphabet"
            )
        ids = self._tok.encode(text, add_special_tokens=False).ids if text else []
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ``<pad>``, ``<bos>`` and ``<eos>`` are dropped.

        Raises:
            ValueError: if an id is outside ``[0, vocab_size)``.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside [0, {self.vocab_size})")
        return self._tok.decode(ids, skip_special_tokens=True)

    def id_to_token(self, i: int) -> str:
        """The token string of id ``i`` (``"▁"`` marks a word start)."""
        token = self._tok.id_to_token(i)
        if token is None:
            raise ValueError(f"token id {i} is outside [0, {self.vocab_size})")
        return token

    # -- persistence -----------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the tokenizer to a JSON file (atomically), with the SHA-256 of its
        vocabulary and merges, checked by :meth:`load`."""
        path = Path(path)
        tokenizer = json.loads(self._tok.to_str())
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "kind": self.kind,
            "sha256": _tokenizer_sha256(tokenizer),
            "tokenizer": tokenizer,
        }
        write_text_atomic(path, json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Read a tokenizer written by :meth:`save`.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a tokenizer saved by :meth:`save`, or its
                content differs from the recorded SHA-256.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a JSON tokenizer file ({err})") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a {_FORMAT} file (missing or wrong 'format' field)")
        if payload.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path}: unsupported tokenizer file version {payload.get('version')!r}, expected {_FORMAT_VERSION}"
            )
        recorded = payload.get("sha256")  # absent in files saved before hashes
        if recorded is not None and _tokenizer_sha256(payload.get("tokenizer")) != recorded:
            raise ValueError(
                f"{path}: the tokenizer's SHA-256 differs from the one recorded when it was "
                "saved (the file was changed or corrupted)"
            )
        try:
            tok = Tokenizer.from_str(json.dumps(payload["tokenizer"]))
        except Exception as err:
            raise ValueError(
                f"{path}: the 'tokenizer' field is not a valid tokenizers JSON ({err})"
            ) from err
        return cls(tok, payload.get("kind", ""))
