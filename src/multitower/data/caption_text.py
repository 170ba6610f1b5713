"""The text conventions of image-text models (MaMMUT), shared by training and evaluation.

Captions are ``[bos] caption [eos]`` and VQA examples ``[bos] question ? answer
[eos]`` (loss on the answer and ``[eos]`` only); all text is cleaned by
:func:`~multitower.data.text.normalize_text`.
"""

from __future__ import annotations

from multitower.data.text import normalize_text
from multitower.data.tokenizer import TextTokenizer

VQA_SEPARATOR = "?"


def clean_text(text: str) -> str:
    """The normalised form every caption, question and answer is trained and scored in."""
    return normalize_text(text)


def vqa_prompt(question: str) -> str:
    """The text prefix of a VQA example: ``"<question> ?"``."""
    return f"{clean_text(question)} {VQA_SEPARATOR}"


def encode_text(
    tokenizer: TextTokenizer, text: str, *, strict: bool = True, clean: bool = True
) -> list[int]:
    """Token ids of ``text``, cleaned by :func:`clean_text` first unless ``clean=False``.

    Args:
        strict: raise on characters outside the tokenizer's alphabet; otherwise
            drop them (for evaluation sets from another source).
        clean: apply :func:`clean_text` (off for text already in final form, such
            as a VQA prompt, whose separator cleaning would remove).

    Raises:
        ValueError: (strict) a character the tokenizer cannot encode, named.
    """
    if clean:
        text = clean_text(text)
    if not strict:
        text = " ".join("".join(c for c in text if c in tokenizer.alphabet).split())
    return tokenizer.encode(text)


def caption_ids(tokenizer: TextTokenizer, caption: str, *, strict: bool = True) -> list[int]:
    """``[bos] caption [eos]``."""
    return [tokenizer.bos_id, *encode_text(tokenizer, caption, strict=strict), tokenizer.eos_id]


def prompt_ids(tokenizer: TextTokenizer, question: str, *, strict: bool = True) -> list[int]:
    """``[bos] question ?``: the prefix answers are generated after."""
    prompt = encode_text(tokenizer, vqa_prompt(question), strict=strict, clean=False)
    return [tokenizer.bos_id, *prompt]


def vqa_ids(
    tokenizer: TextTokenizer, question: str, answer: str, *, strict: bool = True
) -> tuple[list[int], list[float]]:
    """``[bos] question ? answer [eos]`` and per-token loss weights (1 on answer and eos only)."""
    prefix = prompt_ids(tokenizer, question, strict=strict)
    answer_part = [*encode_text(tokenizer, answer, strict=strict), tokenizer.eos_id]
    return prefix + answer_part, [0.0] * len(prefix) + [1.0] * len(answer_part)
