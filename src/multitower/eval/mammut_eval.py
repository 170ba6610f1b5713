"""MaMMUT evaluation over an image-text set: retrieval, captioning and VQA (paper section 4).

* Zero-shot retrieval: every image and every caption is embedded (contrastive
  pass), and recall@1/5/10 is computed in both directions with the
  several-captions-per-image protocol of :mod:`multitower.eval.retrieval`.
* Captioning: greedy or beam-search decoding (KV-cached) from ``[bos]``, scored
  against all reference captions with BLEU-4 and CIDEr-D.
* VQA: open-ended generation with the question as the prefix
  (``[bos] question ?``), scored by exact match after answer normalisation.

The text conventions shared with training are in :mod:`multitower.data.caption_text`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from multitower.data.caption_text import caption_ids, clean_text, prompt_ids
from multitower.data.errors import BadRecordError
from multitower.data.image_readers import ImageTextRecord
from multitower.data.images import ImageTransform
from multitower.data.padding import pad_right
from multitower.data.tokenizer import TextTokenizer
from multitower.eval.captioning import caption_metrics
from multitower.eval.retrieval import retrieval_recall
from multitower.eval.vqa import normalize_answer, vqa_accuracy
from multitower.generation.captioning import generate_beam, generate_greedy
from multitower.models.mammut import MaMMUT

DECODING_METHODS = ("greedy", "beam")

# The vision side as a function: pixels (images ``(b, 3, S, S)`` or clips
# ``(b, F, 3, S, S)``) -> tokens ``(b, N, Dv)`` for the decoder. Every evaluation
# below takes one as ``encode`` (default: the image ViT, ``model.image_tokens``), so a
# video model is evaluated by the same code with ``encode=video_model.video_tokens``.
Encoder = Callable[[torch.Tensor], torch.Tensor]


# -- evaluation set ----------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Decoded evaluation images with their captions and questions.

    Attributes:
        images: ``(N, 3, S, S)`` transformed images (or ``(N, F, 3, S, S)`` clips,
            evaluated with a video ``encode``).
        captions: per image, its reference captions (cleaned).
        qa: per image, its ``(question, answer)`` pairs (cleaned).
        keys: per image, its record key.
    """

    images: torch.Tensor
    captions: list[list[str]]
    qa: list[list[tuple[str, str]]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if not self.qa:
            self.qa = [[] for _ in range(n)]
        if not self.keys:
            self.keys = [str(i) for i in range(n)]
        if not len(self.captions) == len(self.qa) == len(self.keys) == n:
            raise ValueError(
                f"EvalSet: {n} images but {len(self.captions)} caption lists, {len(self.qa)} qa "
                f"lists and {len(self.keys)} keys"
            )
        if n == 0:
            raise ValueError("EvalSet: no images")
        if any(not c for c in self.captions):
            raise ValueError("EvalSet: every image needs at least one caption")

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def from_records(
        cls, records: Iterable[ImageTextRecord], transform: ImageTransform, *, max_images: int = 0
    ) -> EvalSet:
        """Decode the records' images; unreadable ones are skipped with one warning.

        Args:
            max_images: keep at most this many good images (0 keeps all).
        """
        images, captions, qa, keys, skipped = [], [], [], [], []
        for record in records:
            if max_images and len(images) >= max_images:
                break
            try:
                image = record.load(transform)
            except BadRecordError as err:
                skipped.append(str(err))
                continue
            images.append(image)
            captions.append([clean_text(c) for c in record.captions])
            qa.append([(clean_text(q), clean_text(a)) for q, a in record.qa])
            keys.append(record.key)
        if skipped:
            warnings.warn(
                f"evaluation set: skipped {len(skipped)} unreadable image(s); first: {skipped[0]}",
                stacklevel=2,
            )
        if not images:
            raise ValueError("evaluation set: no readable image")
        return cls(torch.stack(images), captions, qa, keys)


def _device(model: MaMMUT) -> torch.device:
    return model.embed.weight.device


def _image_batches(
    model: MaMMUT, images: torch.Tensor, batch_size: int, encode: Encoder | None = None
):
    device = _device(model)
    encode = encode or model.image_tokens
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(device)
        yield start, encode(chunk)  # (b, N, Dv)


# -- retrieval ---------------------------------------------------------------------------------
@torch.no_grad()
def embed_texts(
    model: MaMMUT, tokenizer: TextTokenizer, texts: Sequence[str], *, batch_size: int = 256
) -> torch.Tensor:
    """``(len(texts), E)`` contrastive-pass embeddings (unknown characters dropped)."""
    cfg = model.config
    out = []
    for start in range(0, len(texts), batch_size):
        rows = [caption_ids(tokenizer, t, strict=False) for t in texts[start : start + batch_size]]
        tokens = pad_right(rows, cfg.pad_id, max_len=cfg.max_seq_len).to(_device(model))
        out.append(model.encode_text(tokens).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def embed_images(
    model: MaMMUT,
    images: torch.Tensor,
    *,
    batch_size: int = 128,
    encode: Encoder | None = None,
) -> torch.Tensor:
    """``(N, E)`` image embeddings."""
    return torch.cat(
        [
            model.pool_image(tok).float().cpu()
            for _, tok in _image_batches(model, images, batch_size, encode)
        ]
    )


@torch.no_grad()
def evaluate_retrieval(
    model: MaMMUT,
    data: EvalSet,
    tokenizer: TextTokenizer,
    *,
    batch_size: int = 128,
    encode: Encoder | None = None,
) -> dict[str, float]:
    """Zero-shot recall@1/5/10 in both directions (``i2t_r1`` ... ``t2i_r10``, fractions)."""
    texts = [c for caps in data.captions for c in caps]
    owner = torch.tensor([i for i, caps in enumerate(data.captions) for _ in caps])
    similarity = (
        embed_images(model, data.images, batch_size=batch_size, encode=encode)
        @ embed_texts(model, tokenizer, texts, batch_size=batch_size).T
    )  # (N_images, N_texts)
    return retrieval_recall(similarity, owner)


# -- captioning --------------------------------------------------------------------------------
@torch.no_grad()
def generate_captions(
    model: MaMMUT,
    images: torch.Tensor,
    tokenizer: TextTokenizer,
    *,
    method: str = "greedy",
    beam_size: int = 3,
    length_penalty: float = 0.6,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    use_cache: bool = True,
    encode: Encoder | None = None,
) -> list[str]:
    """Caption each image of ``images`` ``(N, 3, S, S)`` from ``[bos]``.

    Raises:
        ValueError: an unknown ``method`` (``"greedy"`` or ``"beam"``).
    """
    if method not in DECODING_METHODS:
        raise ValueError(f"method must be one of {DECODING_METHODS}, got {method!r}")
    captions: list[str] = []
    for _, tokens in _image_batches(model, images, batch_size, encode):
        prefixes = [[tokenizer.bos_id]] * tokens.shape[0]
        if method == "greedy":
            ids = generate_greedy(
                model, tokens, prefixes, max_new_tokens=max_new_tokens, use_cache=use_cache
            )
        else:
            ids = generate_beam(
                model,
                tokens,
                prefixes,
                beam_size=beam_size,
                length_penalty=length_penalty,
                max_new_tokens=max_new_tokens,
                use_cache=use_cache,
            )
        captions.extend(tokenizer.decode(row) for row in ids)
    return captions


@torch.no_grad()
def evaluate_captioning(
    model: MaMMUT,
    data: EvalSet,
    tokenizer: TextTokenizer,
    *,
    method: str = "greedy",
    beam_size: int = 3,
    length_penalty: float = 0.6,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    encode: Encoder | None = None,
) -> tuple[dict[str, float], list[str]]:
    """BLEU-4 and CIDEr-D of generated captions against all references.

    Returns:
        ``({"bleu4", "cider"}, generated captions)``.
    """
    captions = generate_captions(
        model,
        data.images,
        tokenizer,
        method=method,
        beam_size=beam_size,
        length_penalty=length_penalty,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        encode=encode,
    )
    return caption_metrics(captions, data.captions), captions


# -- VQA ---------------------------------------------------------------------------------------
@torch.no_grad()
def answer_questions(
    model: MaMMUT,
    images: torch.Tensor,
    questions: Sequence[Sequence[str]],
    tokenizer: TextTokenizer,
    *,
    max_new_tokens: int = 6,
    batch_size: int = 64,
    encode: Encoder | None = None,
) -> list[list[str]]:
    """Greedy answers to each image's questions (the question is the prefix).

    The image keys/values are computed once per image and shared by its questions.

    Args:
        images: ``(N, 3, S, S)``.
        questions: per image, its questions.

    Returns:
        Per image, one answer per question.
    """
    if len(questions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(questions)} question lists")
    answers: list[list[str]] = []
    for start, tokens in _image_batches(model, images, batch_size, encode):
        kv = model.image_kv(tokens)
        batch_questions = questions[start : start + tokens.shape[0]]
        rows = [i for i, qs in enumerate(batch_questions) for _ in qs]
        if not rows:
            answers.extend([] for _ in batch_questions)
            continue
        prefixes = [prompt_ids(tokenizer, q, strict=False) for qs in batch_questions for q in qs]
        index = torch.tensor(rows, device=tokens.device)
        ids = generate_greedy(
            model, kv.index_select(index), prefixes, max_new_tokens=max_new_tokens
        )
        flat = iter(tokenizer.decode(row) for row in ids)
        answers.extend([next(flat) for _ in qs] for qs in batch_questions)
    return answers


@torch.no_grad()
def evaluate_vqa(
    model: MaMMUT,
    data: EvalSet,
    tokenizer: TextTokenizer,
    *,
    max_new_tokens: int = 6,
    batch_size: int = 64,
    encode: Encoder | None = None,
) -> tuple[dict[str, float], list[tuple[str, str, str]]]:
    """Open-ended VQA accuracy (exact match after :func:`normalize_answer`).

    Returns:
        ``({"vqa_accuracy", "vqa_questions"}, [(question, reference, prediction), ...])``.

    Raises:
        ValueError: the set has no questions.
    """
    questions = [[q for q, _ in pairs] for pairs in data.qa]
    predictions = answer_questions(
        model,
        data.images,
        questions,
        tokenizer,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        encode=encode,
    )
    triples = [
        (q, a, p) for pairs, preds in zip(data.qa, predictions) for (q, a), p in zip(pairs, preds)
    ]
    if not triples:
        raise ValueError("evaluate_vqa: the evaluation set has no questions")
    accuracy = vqa_accuracy([p for _, _, p in triples], [a for _, a, _ in triples])
    return {"vqa_accuracy": accuracy, "vqa_questions": float(len(triples))}, triples


def question_prior_accuracy(
    train_qa: Iterable[tuple[str, str]], eval_qa: Iterable[tuple[str, str]]
) -> float:
    """Accuracy of a blind baseline: the most frequent training answer to the same question.

    Questions never seen in training get the most frequent answer overall. This
    is what a model that ignores the image can reach, the bar VQA has to clear.
    """
    per_question: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for q, a in train_qa:
        answer = normalize_answer(a)
        per_question.setdefault(clean_text(q), Counter())[answer] += 1
        overall[answer] += 1
    if not overall:
        raise ValueError("question_prior_accuracy: no training questions")
    fallback = overall.most_common(1)[0][0]
    preds, refs = [], []
    for q, a in eval_qa:
        counts = per_question.get(clean_text(q))
        preds.append(counts.most_common(1)[0][0] if counts else fallback)
        refs.append(a)
    return vqa_accuracy(preds, refs)
