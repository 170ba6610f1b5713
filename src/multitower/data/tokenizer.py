"""Text tokenizer for the text tower: byte-pair encoding or characters.

A thin wrapper around a HuggingFace ``tokenizers`` BPE model with a
SentencePiece-style ``Metaspace`` pre-tokenizer: a space becomes ``"▁"`` at the
start of the next word, so ``decode(encode(s)) == s`` for any single-spaced
text over the training alphabet. The character-level tokenizer is the same BPE
model with no merges.

Ids 0, 1 and 2 are always ``<pad>``, ``<bos>`` and ``<eos>``. There is no
unknown token: :meth:`TextTokenizer.encode` raises on characters outside the
alphabet instead of silently dropping them.

A third kind, ``"hf"`` (:meth:`TextTokenizer.from_hf`), wraps the ``tokenizer.json``
of a Hugging Face model folder, so that a pre-trained text tower keeps its own
vocabulary: its special ids are the model's, its alphabet is given (the
characters the caller's normalised text is made of), and every text it encodes
must decode back to itself (a text it cannot give back, e.g. through an
unknown token, is an error, as for the other kinds).
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
KINDS = ("bpe", "char", "hf")


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
    """Subword (BPE) or character tokenizer with fixed special-token ids, or a Hugging
    Face model's own tokenizer.

    Build with :meth:`train_bpe`, :meth:`characters` or :meth:`from_hf`, or
    :meth:`load` a saved one. ``kind`` is ``"bpe"``, ``"char"`` or ``"hf"``.

    Args:
        tokenizer: the ``tokenizers`` tokenizer.
        kind: one of :data:`KINDS`.
        special_ids: ``(pad, bos, eos)``; only for ``"hf"`` (the others use 0, 1, 2).
        alphabet: the characters :meth:`encode` accepts besides the space; only for
            ``"hf"`` (the others accept every single-character token).
        vocab_size: the ids a model built on this tokenizer has, at least the
            tokenizer's own (a model's embedding may be padded); only for ``"hf"``.

    Raises:
        ValueError: a bad ``kind``; special tokens not at 0, 1, 2 (``"bpe"``,
            ``"char"``); for ``"hf"``: special ids that are not three different ids
            of the tokenizer, or an alphabet it does not give back unchanged.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        kind: str,
        *,
        special_ids: tuple[int, int, int] | None = None,
        alphabet: str | None = None,
        vocab_size: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self._tok = tokenizer
        self.kind = kind
        own_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if kind == "hf":
            if special_ids is None or alphabet is None:
                raise ValueError("an 'hf' tokenizer needs special_ids and an alphabet")
            self._size = own_size if vocab_size is None else vocab_size
            if self._size < own_size:
                raise ValueError(
                    f"vocab_size={self._size} is smaller than the tokenizer's {own_size} ids"
                )
            self._special = tuple(int(i) for i in special_ids)
            self._check_special_ids()
            self._alphabet = frozenset(alphabet) | {" "}
            self._check_round_trip()
            return
        if special_ids is not None or alphabet is not None or vocab_size is not None:
            raise ValueError(
                f"special_ids, alphabet and vocab_size are only for 'hf', not {kind!r}"
            )
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            got = tokenizer.token_to_id(token)
            if got != expected_id:
                raise ValueError(f"special token {token!r} must have id {expected_id}, got {got}")
        self._size = own_size
        self._special = (0, 1, 2)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        # Characters that can be encoded: every single-character token, plus the space.
        self._alphabet = frozenset(t for t in vocab if len(t) == 1 and t != _SPACE_MARK) | {" "}
        if _SPACE_MARK not in vocab:
            raise ValueError(f"tokenizer vocabulary lacks the word-start mark {_SPACE_MARK!r}")

    def _check_special_ids(self) -> None:
        names = dict(zip(("pad_id", "bos_id", "eos_id"), self._special))
        if len(set(self._special)) < 3:
            raise ValueError(
                f"pad_id, bos_id and eos_id must be three different ids, got {names}: every "
                "segment opens with bos and closes with eos, and pad is never one of them"
            )
        for name, i in names.items():
            if self._tok.id_to_token(i) is None:
                raise ValueError(f"{name}={i} is not an id of the tokenizer")

    def _check_round_trip(self) -> None:
        """Every character alone, all of them as one word and as separate words must
        encode and decode back unchanged: the texts :meth:`encode` accepts are then
        (nearly always) given back; :meth:`encode` checks each text it encodes anyway."""
        chars = sorted(self._alphabet - {" "})
        if not chars:
            raise ValueError("alphabet is empty: give at least one non-space character")
        for probe in [*chars, "".join(chars), " ".join(chars)]:
            ids = self._tok.encode(probe, add_special_tokens=False).ids
            back = self._tok.decode(ids, skip_special_tokens=True)
            if back != probe:
                raise ValueError(
                    f"the tokenizer does not give {probe!r} back: it decodes its ids "
                    f"{ids[:12]} to {back!r}"
                )

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

    @classmethod
    def from_hf(
        cls,
        path: str | Path,
        *,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        alphabet: str,
        vocab_size: int | None = None,
    ) -> TextTokenizer:
        """A Hugging Face model's ``tokenizer.json`` as a tokenizer of kind ``"hf"``.

        Args:
            path: the ``tokenizer.json`` file.
            pad_id, bos_id, eos_id: the model's special ids (three different ids).
            alphabet: the characters of the texts to encode (the space is implied).
            vocab_size: the model's vocabulary size when it exceeds the tokenizer's.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a ``tokenizers`` JSON file, or see :class:`TextTokenizer`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises its own Exception type
            raise ValueError(f"{path}: not a tokenizers JSON file ({err})") from err
        return cls(
            tok,
            "hf",
            special_ids=(pad_id, bos_id, eos_id),
            alphabet=alphabet,
            vocab_size=vocab_size,
        )

    # -- properties ------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (``"hf"``: the model's, which may
        exceed the tokenizer's own)."""
        return self._size

    @property
    def pad_id(self) -> int:
        return self._special[0]

    @property
    def bos_id(self) -> int:
        return self._special[1]

    @property
    def eos_id(self) -> int:
        return self._special[2]

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
        if self.kind == "hf" and self._tok.decode(ids, skip_special_tokens=True) != text:
            raise ValueError(
                f"cannot encode {text[:60]!r}: the tokenizer does not decode its ids back "
                "to the same text"
            )
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; pad, bos, eos and the other special tokens are dropped, as are
        the ids past the tokenizer's own (``"hf"``: padding rows of the model's embedding).

        Raises:
            ValueError: if an id is outside ``[0, vocab_size)``.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside [0, {self.vocab_size})")
        own = self._tok.get_vocab_size(with_added_tokens=True)
        kept = [i for i in ids if i < own and i not in self._special]
        return self._tok.decode(kept, skip_special_tokens=True)

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
        hashed: object = tokenizer
        extra: dict[str, object] = {}
        if self.kind == "hf":
            extra = {
                "special_ids": list(self._special),
                "alphabet": "".join(sorted(self._alphabet - {" "})),
                "vocab_size": self._size,
            }
            hashed = {"tokenizer": tokenizer, **extra}
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "kind": self.kind,
            "sha256": _tokenizer_sha256(hashed),
            "tokenizer": tokenizer,
            **extra,
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
        kind = payload.get("kind", "")
        extra = {k: payload.get(k) for k in ("special_ids", "alphabet", "vocab_size")}
        # an "hf" tokenizer's hash also covers its special ids, alphabet and size
        hashed = {"tokenizer": payload.get("tokenizer"), **extra} if kind == "hf" else None
        if (
            recorded is not None
            and _tokenizer_sha256(hashed or payload.get("tokenizer")) != recorded
        ):
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
        if kind != "hf":
            return cls(tok, kind)
        special = extra["special_ids"]
        if not isinstance(special, list) or len(special) != 3:
            raise ValueError(f"{path}: 'special_ids' must list pad, bos and eos")
        try:
            return cls(
                tok,
                "hf",
                special_ids=(int(special[0]), int(special[1]), int(special[2])),
                alphabet=str(extra["alphabet"]),
                vocab_size=int(extra["vocab_size"]),  # type: ignore[arg-type]
            )
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
