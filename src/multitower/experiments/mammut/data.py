"""MaMMUT training data: image-text records, the text tokenizer, the dataset and its collate.

One training example is an image with two texts: a caption for the contrastive
pass, and for the generative pass either a caption or, with probability
``vqa_fraction`` when the image has questions, a VQA example
``[bos] question ? answer [eos]`` scored on the answer only.

Data comes from generated shape scenes, a COCO-captions JSON with its image
folder, or WebDataset tar shards. The text tokenizer (BPE, or characters) is
trained on the training texts when the recipe is built; it is deterministic, so
a run's tokenizer can be rebuilt from its config.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch

from multitower.config import ConfigError
from multitower.data.caption_text import VQA_SEPARATOR, caption_ids, clean_text, vqa_ids, vqa_prompt
from multitower.data.errors import BadRecordError
from multitower.data.image_datasets import SceneConfig, generate_scenes
from multitower.data.image_readers import (
    ImageTextRecord,
    read_coco_captions,
    read_webdataset_shards,
)
from multitower.data.images import ImageTransform
from multitower.data.padding import pad_right
from multitower.data.tokenizer import TextTokenizer

DATA_SOURCES = ("scenes", "coco", "webdataset")
TOKENIZERS = ("bpe", "char")


# -- config ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaMMUTDataConfig:
    """Where the image-text pairs come from and how texts are tokenised.

    Args:
        source: ``"scenes"`` (generated), ``"coco"`` or ``"webdataset"``.
        num_scenes, eval_scenes: generated training / evaluation scenes.
        seed: seed of the training scenes (evaluation scenes use ``seed + 1``).
        scene: how scenes are drawn (:class:`SceneConfig`).
        coco_annotations, coco_images: training COCO JSON and image folder.
        eval_coco_annotations, eval_coco_images: evaluation COCO JSON and folder.
        shards, eval_shards: WebDataset shard patterns (training / evaluation).
        max_eval_images: keep at most this many evaluation images (0: all).
        tokenizer: ``"bpe"`` (trained to ``model.vocab_size``) or ``"char"``.
        max_text_len: longest token sequence, bos and eos included (longer ones are cut).
        vqa_fraction: chance that the generative pass of an example with questions
            trains on a question-answer pair instead of a caption.
        crop_scale: area range of the train-time random resized crop (None: no crop).
        preload_images: decode and transform every training image once, up front
            (only without random crops).
    """

    source: str = "scenes"
    num_scenes: int = 2000
    eval_scenes: int = 200
    seed: int = 0
    scene: SceneConfig = field(default_factory=SceneConfig)
    coco_annotations: str | None = None
    coco_images: str | None = None
    eval_coco_annotations: str | None = None
    eval_coco_images: str | None = None
    shards: str | None = None
    eval_shards: str | None = None
    max_eval_images: int = 0
    tokenizer: str = "bpe"
    max_text_len: int = 32
    vqa_fraction: float = 0.3
    crop_scale: tuple[float, float] | None = None
    preload_images: bool = True

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"source must be one of {DATA_SOURCES}, got {self.source!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.num_scenes <= 0 or self.eval_scenes < 0 or self.max_eval_images < 0:
            raise ValueError("num_scenes must be positive; eval_scenes and max_eval_images >= 0")
        if self.max_text_len < 3:
            raise ValueError(
                f"max_text_len must be >= 3 (bos, a token, eos), got {self.max_text_len}"
            )
        if not 0.0 <= self.vqa_fraction <= 1.0:
            raise ValueError(f"vqa_fraction must lie in [0, 1], got {self.vqa_fraction}")
        if self.source == "coco" and not (self.coco_annotations and self.coco_images):
            raise ValueError("source='coco' needs coco_annotations and coco_images")
        if self.source == "webdataset" and not self.shards:
            raise ValueError("source='webdataset' needs shards")


# -- records and tokenizer ---------------------------------------------------------------------
def scene_records(n: int, seed: int, config: SceneConfig) -> list[ImageTextRecord]:
    """Generated scenes as image-text records (images kept decoded in memory)."""
    return [
        ImageTextRecord(
            key=f"scene-{seed}-{i}",
            image=s.image,
            captions=s.captions,
            qa=s.qa,
            boxes=s.boxes,
            labels=s.labels,
            source="scenes",
        )
        for i, s in enumerate(generate_scenes(n, seed, config))
    ]


def load_records(cfg: MaMMUTDataConfig, split: str) -> list[ImageTextRecord]:
    """Training (``split="train"``) or evaluation (``"eval"``) records; [] when none is set.

    Raises:
        FileNotFoundError: a configured file or shard does not exist.
        ValueError: an unknown split or a malformed annotation file.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    train = split == "train"
    if cfg.source == "scenes":
        n = cfg.num_scenes if train else cfg.eval_scenes
        return scene_records(n, cfg.seed if train else cfg.seed + 1, cfg.scene) if n else []
    if cfg.source == "coco":
        ann = cfg.coco_annotations if train else cfg.eval_coco_annotations
        folder = cfg.coco_images if train else cfg.eval_coco_images
        return read_coco_captions(ann, folder) if ann and folder else []
    pattern = cfg.shards if train else cfg.eval_shards
    return list(read_webdataset_shards(pattern)) if pattern else []


class TextRecord(Protocol):
    """What the tokenizer reads of a record (image or video): its captions and QA pairs."""

    captions: list[str]
    qa: list[tuple[str, str]]


def training_texts(records: Sequence[TextRecord]) -> list[str]:
    """Every cleaned caption, VQA prompt and answer of ``records`` (the tokenizer's corpus)."""
    texts = [VQA_SEPARATOR]
    for record in records:
        texts.extend(clean_text(c) for c in record.captions)
        for q, a in record.qa:
            texts.extend((vqa_prompt(q), clean_text(a)))
    return [t for t in texts if t]


def build_tokenizer(records: Sequence[TextRecord], kind: str, vocab_size: int) -> TextTokenizer:
    """Train the text tokenizer on ``records`` (deterministic).

    Raises:
        ConfigError: the tokenizer needs more ids than ``vocab_size``.
    """
    texts = training_texts(records)
    try:
        tokenizer = (
            TextTokenizer.train_bpe(texts, vocab_size)
            if kind == "bpe"
            else TextTokenizer.characters(texts)
        )
    except ValueError as err:
        raise ConfigError(f"model.vocab_size: {err}") from err
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"model.vocab_size={vocab_size} is smaller than the {kind} tokenizer's "
            f"{tokenizer.vocab_size} ids; raise it"
        )
    return tokenizer


# -- dataset -----------------------------------------------------------------------------------
class MaMMUTBatch(NamedTuple):
    """A collated batch.

    Attributes:
        images: ``(B, 3, S, S)``.
        text_tokens: ``(B, T1)`` ``[bos] caption [eos]`` for the contrastive pass, padded.
        caption_tokens: ``(B, T2)`` generative-pass sequences, padded.
        caption_weights: ``(B, T2)`` per-token loss weight of ``caption_tokens`` (0 on
            a VQA question and on padding).
    """

    images: torch.Tensor
    text_tokens: torch.Tensor
    caption_tokens: torch.Tensor
    caption_weights: torch.Tensor


class MaMMUTDataset:
    """Images with pre-tokenised captions and VQA examples.

    ``dataset[i]`` returns ``(image, contrastive ids, generative ids, weights)``
    for a caption drawn at random (Python's ``random``, seeded by the trainer).
    A record whose image cannot be read raises BadRecordError, which the trainer
    counts and skips.
    """

    def __init__(
        self,
        records: list[ImageTextRecord],
        transform: ImageTransform,
        tokenizer: TextTokenizer,
        *,
        max_text_len: int,
        vqa_fraction: float,
        preload: bool,
    ) -> None:
        self.records = records
        self.transform = transform
        self.max_len = max_text_len
        self.vqa_fraction = vqa_fraction
        self.captions = [[caption_ids(tokenizer, c) for c in r.captions] for r in records]
        self.vqa = [[vqa_ids(tokenizer, q, a) for q, a in r.qa] for r in records]
        self.images: list[torch.Tensor | None] | None = None
        if preload and not transform.augments:
            self.images = []
            for record in records:
                try:
                    self.images.append(record.load(transform))
                except BadRecordError:
                    self.images.append(None)  # raised again, and skipped, when drawn

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> torch.Tensor:
        if self.images is not None and self.images[index] is not None:
            return self.images[index]
        record = self.records[index]
        generator = None
        if self.transform.augments:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        return record.load(self.transform, train=True, generator=generator)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], list[int], list[float]]:
        image = self._image(index)
        text, gen, weights = sample_texts(
            self.captions[index], self.vqa[index], self.max_len, self.vqa_fraction
        )
        return image, text, gen, weights


def sample_texts(
    captions: list[list[int]],
    pairs: list[tuple[list[int], list[float]]],
    max_len: int,
    vqa_fraction: float,
) -> tuple[list[int], list[int], list[float]]:
    """One training example's texts: a caption for the contrastive pass, and for the
    generative pass a QA pair (with probability ``vqa_fraction``) or a caption, with
    its per-token loss weights; all cut to ``max_len``."""
    text = random.choice(captions)[:max_len]
    if pairs and random.random() < vqa_fraction:
        gen, weights = random.choice(pairs)
        if len(gen) > max_len:  # a cut answer teaches nothing: use a caption
            gen = random.choice(captions)
            weights = [1.0] * len(gen)
    else:
        gen = random.choice(captions)
        weights = [1.0] * len(gen)
    return text, gen[:max_len], weights[:max_len]


def collate_mammut(items: list[tuple], pad_id: int = 0) -> MaMMUTBatch:
    """Stack images and right-pad the token sequences."""
    images = torch.stack([it[0] for it in items])
    return MaMMUTBatch(
        images,
        pad_right([it[1] for it in items], pad_id),
        pad_right([it[2] for it in items], pad_id),
        pad_right([it[3] for it in items], 0.0, dtype=torch.float32),
    )
