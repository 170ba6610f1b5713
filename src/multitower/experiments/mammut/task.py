"""MaMMUT training: the two-pass joint loss and the ``mammut`` recipe.

Each example (see :mod:`multitower.experiments.mammut.data`) is an image with a
caption for the contrastive pass and a caption or VQA example for the generative
pass. The loss is::

    loss = caption_weight * caption CE  +  contrastive_weight * contrastive loss

with the contrastive loss (symmetric InfoNCE, or the sigmoid focal variant) over
the global batch: in distributed training the features of every rank are
all-gathered with gradients flowing back to the local slice, and each rank
scores its local rows against all of them. The order of the two passes can be
shuffled per step (spec, "Two passes through the same decoder").
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from multitower.config import ConfigError
from multitower.data.image_readers import ImageTextRecord
from multitower.data.images import ImageTransform
from multitower.data.tokenizer import TextTokenizer
from multitower.eval.mammut_eval import (
    EvalSet,
    evaluate_captioning,
    evaluate_retrieval,
    evaluate_vqa,
)
from multitower.experiments.mammut.data import (
    MaMMUTBatch,
    MaMMUTDataConfig,
    MaMMUTDataset,
    build_tokenizer,
    collate_mammut,
    load_records,
)
from multitower.experiments.recipes import Recipe, register_recipe
from multitower.losses import caption_loss, contrastive_loss, focal_contrastive_loss
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.train.distributed import all_gather_with_grad
from multitower.train.task import LossOutput

CONTRASTIVE_LOSSES = ("infonce", "focal")


# -- configs -----------------------------------------------------------------------------------
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
        # the losses are means over images; tokens/s counts the caption and text tokens
        # both passes read (a 0-dim tensor: no device sync before a log step)
        tokens = (batch.caption_tokens[:, 1:] != self.pad_id).sum() + (
            batch.text_tokens != self.pad_id
        ).sum()
        return LossOutput(
            loss=loss,
            metrics=metrics,
            num_tokens=int(batch.images.shape[0]),
            throughput_tokens=tokens,
        )


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
        ConfigError: inconsistent sections (text or caption length, special ids,
            vocabulary) or no training data.
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
    if 1 + eval_cfg.max_caption_tokens > model_cfg.max_seq_len:
        raise ConfigError(
            f"eval.max_caption_tokens={eval_cfg.max_caption_tokens}: a generated caption "
            f"(bos + that many tokens) exceeds model.max_seq_len={model_cfg.max_seq_len}"
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
