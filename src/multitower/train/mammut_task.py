"""MaMMUT training: data, the two-pass joint loss, and the ``mammut`` recipe.

One training example is an image with two texts: a caption for the contrastive
pass, and for the generative pass either a caption or, with probability
``vqa_fraction`` when the image has questions, a VQA example
``[bos] question ? answer [eos]`` scored on the answer only. The loss is::

    loss = caption_weight * caption CE  +  contrastive_weight * contrastive loss

with the contrastive loss (symmetric InfoNCE, or the sigmoid focal variant) over
the global batch: in distributed training the features of every rank are
all-gathered with gradients flowing back to the local slice, and each rank
scores its local rows against all of them. The order of the two passes can be
shuffled per step (spec, "Two passes through the same decoder").

Data comes from generated shape scenes, a COCO-captions JSON with its image
folder, or WebDataset tar shards. The text tokenizer (BPE, or characters) is
trained on the training texts when the recipe is built; it is deterministic, so
a run's tokenizer can be rebuilt from its config.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from multitower.cli.config import ConfigError
from multitower.data.errors import BadRecordError
from multitower.data.image_datasets import SceneConfig, generate_scenes
from multitower.data.image_readers import (
    ImageTextRecord,
    read_coco_captions,
    read_webdataset_shards,
)
from multitower.data.images import ImageTransform
from multitower.data.tokenizer import TextTokenizer
from multitower.eval.mammut_eval import (
    VQA_SEPARATOR,
    EvalSet,
    caption_ids,
    clean_text,
    evaluate_captioning,
    evaluate_retrieval,
    evaluate_vqa,
    vqa_ids,
    vqa_prompt,
)
from multitower.losses import caption_loss, contrastive_loss, focal_contrastive_loss
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.train.distributed import all_gather_with_grad
from multitower.train.recipes import Recipe, register_recipe
from multitower.train.task import LossOutput

DATA_SOURCES = ("scenes", "coco", "webdataset")
TOKENIZERS = ("bpe", "char")
CONTRASTIVE_LOSSES = ("infonce", "focal")


# -- configs -----------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class MaMMUTLossConfig:
    """Weights and kind of the two losses.

    Args:
        caption_weight, contrastive_weight: loss weights (open reproductions: 2 and 1).
        contrastive: ``"infonce"`` (symmetric, learnable clamped temperature) or ``"focal"``.
        focal_gamma: focusing exponent of the focal variant.
        shuffle_passes: run the two passes in a random order at each step.
    """

    caption_weight: float = 2.0
    contrastive_weight: float = 1.0
    contrastive: str = "infonce"
    focal_gamma: float = 2.0
    shuffle_passes: bool = True

    def __post_init__(self) -> None:
        if self.caption_weight < 0 or self.contrastive_weight < 0:
            raise ValueError("caption_weight and contrastive_weight must be >= 0")
        if self.caption_weight == 0 and self.contrastive_weight == 0:
            raise ValueError("caption_weight and contrastive_weight cannot both be 0")
        if self.contrastive not in CONTRASTIVE_LOSSES:
            raise ValueError(
                f"contrastive must be one of {CONTRASTIVE_LOSSES}, got {self.contrastive!r}"
            )
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")


@dataclass(frozen=True)
class MaMMUTEvalConfig:
    """How the evaluation set is decoded and scored.

    Args:
        batch_size: images per forward.
        beam_size: beams of beam-search captioning.
        length_penalty: beam-search length normalisation exponent.
        max_caption_tokens, max_answer_tokens: generation limits.
        during_training: score retrieval, greedy captions and VQA at the trainer's
            eval steps (the full evaluation of ``multitower mammut`` runs after training).
    """

    batch_size: int = 100
    beam_size: int = 3
    length_penalty: float = 0.6
    max_caption_tokens: int = 24
    max_answer_tokens: int = 6
    during_training: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "beam_size", "max_caption_tokens", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty}")


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


def training_texts(records: list[ImageTextRecord]) -> list[str]:
    """Every cleaned caption, VQA prompt and answer of ``records`` (the tokenizer's corpus)."""
    texts = [VQA_SEPARATOR]
    for record in records:
        texts.extend(clean_text(c) for c in record.captions)
        for q, a in record.qa:
            texts.extend((vqa_prompt(q), clean_text(a)))
    return [t for t in texts if t]


def build_tokenizer(records: list[ImageTextRecord], kind: str, vocab_size: int) -> TextTokenizer:
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
        captions = self.captions[index]
        text = random.choice(captions)[: self.max_len]
        pairs = self.vqa[index]
        if pairs and random.random() < self.vqa_fraction:
            gen, weights = random.choice(pairs)
            if len(gen) > self.max_len:  # a cut answer teaches nothing: use a caption
                gen = random.choice(captions)
                weights = [1.0] * len(gen)
        else:
            gen = random.choice(captions)
            weights = [1.0] * len(gen)
        return image, text, gen[: self.max_len], weights[: self.max_len]


def collate_mammut(items: list[tuple], pad_id: int = 0) -> MaMMUTBatch:
    """Stack images and right-pad the token sequences."""

    def pad(rows: list[list], value: float, dtype: torch.dtype) -> torch.Tensor:
        out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=dtype)
        return out

    images = torch.stack([it[0] for it in items])
    return MaMMUTBatch(
        images,
        pad([it[1] for it in items], pad_id, torch.long),
        pad([it[2] for it in items], pad_id, torch.long),
        pad([it[3] for it in items], 0.0, torch.float32),
    )


# -- task --------------------------------------------------------------------------------------
def gathered_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    kind: str = "infonce",
    gamma: float = 2.0,
) -> torch.Tensor:
    """Contrastive loss of the local rows against the features of every rank.

    Without a process group (or on one rank) this is the plain loss on the batch.
    With one, the mean of the per-rank values equals the single-process loss on
    the global batch, and gradients reach each rank's local features.

    Raises:
        ValueError: the ranks hold batches of different sizes.
    """
    offset = 0
    all_images, all_texts = image_features, text_features
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world, rank = dist.get_world_size(), dist.get_rank()
        size = torch.tensor([image_features.shape[0]], device=image_features.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(
                f"contrastive loss: ranks hold different batch sizes {[int(s) for s in sizes]} "
                "(a skipped bad record?); the gathered loss needs equal local batches"
            )
        all_images = all_gather_with_grad(image_features)  # (W*B, E)
        all_texts = all_gather_with_grad(text_features)  # (W*B, E)
        offset = rank * image_features.shape[0]
    if kind == "focal":
        return focal_contrastive_loss(
            image_features,
            text_features,
            logit_scale,
            gamma=gamma,
            all_text_features=all_texts,
            offset=offset,
        )
    return contrastive_loss(
        image_features,
        text_features,
        logit_scale,
        all_image_features=all_images,
        all_text_features=all_texts,
        offset=offset,
    )


class MaMMUTTask:
    """Joint captioning + contrastive loss of one batch (see the module docstring)."""

    def __init__(self, loss: MaMMUTLossConfig, pad_id: int) -> None:
        self.cfg = loss
        self.pad_id = pad_id

    def compute_loss(self, model: nn.Module, batch: MaMMUTBatch) -> LossOutput:
        first = random.random() < 0.5 if self.cfg.shuffle_passes else True
        out = model(
            batch.images,
            batch.text_tokens,
            batch.caption_tokens[:, :-1],
            contrastive_first=first,
        )
        cap = caption_loss(
            out.caption_logits,
            batch.caption_tokens[:, 1:],
            pad_id=self.pad_id,
            weights=batch.caption_weights[:, 1:],
        )
        con = gathered_contrastive_loss(
            out.image_features,
            out.text_features,
            out.logit_scale,
            kind=self.cfg.contrastive,
            gamma=self.cfg.focal_gamma,
        )
        loss = self.cfg.caption_weight * cap + self.cfg.contrastive_weight * con
        metrics = {
            "caption_loss": cap.detach(),
            "contrastive_loss": con.detach(),
            "logit_scale": out.logit_scale.detach(),
        }
        return LossOutput(loss=loss, metrics=metrics, num_tokens=int(batch.images.shape[0]))


# -- recipe ------------------------------------------------------------------------------------
class MaMMUTComponents(NamedTuple):
    """Everything the ``mammut`` recipe builds, for commands that need more than a Recipe."""

    recipe: Recipe
    tokenizer: TextTokenizer
    transform: ImageTransform
    eval_set: EvalSet | None
    train_records: list[ImageTextRecord]


SECTIONS = {
    "model": MaMMUTConfig,
    "data": MaMMUTDataConfig,
    "loss": MaMMUTLossConfig,
    "eval": MaMMUTEvalConfig,
}


def make_eval_fn(eval_set: EvalSet, tokenizer: TextTokenizer, cfg: MaMMUTEvalConfig):
    """Trainer eval hook: retrieval, greedy captioning and VQA on ``eval_set``."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        assert isinstance(model, MaMMUT)
        results = dict(evaluate_retrieval(model, eval_set, tokenizer, batch_size=cfg.batch_size))
        caption, _ = evaluate_captioning(
            model,
            eval_set,
            tokenizer,
            max_new_tokens=cfg.max_caption_tokens,
            batch_size=cfg.batch_size,
        )
        results.update(caption)
        if any(eval_set.qa):
            vqa, _ = evaluate_vqa(
                model,
                eval_set,
                tokenizer,
                max_new_tokens=cfg.max_answer_tokens,
                batch_size=cfg.batch_size,
            )
            results["vqa_accuracy"] = vqa["vqa_accuracy"]
        return results

    return evaluate


def build_components(sections: dict[str, Any]) -> MaMMUTComponents:
    """Build tokenizer, model, task, datasets and evaluation set from the config sections.

    Raises:
        ConfigError: inconsistent sections (text length, vocabulary) or no training data.
    """
    model_cfg: MaMMUTConfig = sections["model"]
    data_cfg: MaMMUTDataConfig = sections["data"]
    loss_cfg: MaMMUTLossConfig = sections["loss"]
    eval_cfg: MaMMUTEvalConfig = sections["eval"]
    if data_cfg.max_text_len > model_cfg.max_seq_len:
        raise ConfigError(
            f"data.max_text_len={data_cfg.max_text_len} exceeds model.max_seq_len="
            f"{model_cfg.max_seq_len}"
        )
    ids = (model_cfg.pad_id, model_cfg.bos_id, model_cfg.eos_id)
    if ids != (0, 1, 2):
        raise ConfigError(f"model: pad/bos/eos ids must be 0/1/2 (the tokenizer's), got {ids}")
    records = load_records(data_cfg, "train")
    if not records:
        raise ConfigError(f"data: no training records from source {data_cfg.source!r}")
    tokenizer = build_tokenizer(records, data_cfg.tokenizer, model_cfg.vocab_size)
    transform = ImageTransform(
        image_size=model_cfg.vision.image_size, crop_scale=data_cfg.crop_scale
    )
    dataset = MaMMUTDataset(
        records,
        transform,
        tokenizer,
        max_text_len=data_cfg.max_text_len,
        vqa_fraction=data_cfg.vqa_fraction,
        preload=data_cfg.preload_images,
    )
    eval_set = None
    eval_records = load_records(data_cfg, "eval")
    if eval_records:
        eval_set = EvalSet.from_records(
            eval_records,
            ImageTransform(image_size=model_cfg.vision.image_size),
            max_images=data_cfg.max_eval_images,
        )
    elif data_cfg.source != "scenes":
        warnings.warn("data: no evaluation set configured; nothing will be evaluated", stacklevel=2)
    eval_fn = None
    if eval_set is not None and eval_cfg.during_training:
        eval_fn = make_eval_fn(eval_set, tokenizer, eval_cfg)
    model = MaMMUT(model_cfg)
    task = MaMMUTTask(loss_cfg, model_cfg.pad_id)
    recipe = Recipe(model, task, dataset, collate_mammut, eval_fn)
    return MaMMUTComponents(recipe, tokenizer, transform, eval_set, records)


@register_recipe("mammut", sections=SECTIONS)
def build_mammut_recipe(sections: dict[str, Any]) -> Recipe:
    """The MaMMUT joint-training recipe (``recipe: mammut``)."""
    return build_components(sections).recipe
