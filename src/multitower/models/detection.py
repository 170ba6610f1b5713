"""Open-vocabulary detection on the MaMMUT ViT: an OWL-ViT style per-token head.

MaMMUT (arXiv 2303.16839, section 4.4) detects objects of classes it has never
seen boxes of by scoring region embeddings against the *text embeddings of class
names* from the contrastive pass. The paper puts a ViTDet feature pyramid and
Mask R-CNN heads on the ViT; here the head is OWL-ViT's (Minderer et al., 2022),
which needs no anchors, proposals or pyramid and fits a ViT whose image is a few
dozen tokens::

    images (B, 3, S, S) -> MaMMUT ViT -> patch tokens (B, N, Dv)
       per token:  box MLP (Dv -> 4) + box bias(token's cell)  -> sigmoid -> cxcywh in [0, 1]
                   objectness Linear (Dv -> 1)                               (B, N)
                   region_proj Linear (Dv -> E), L2-normalised   -> r        (B, N, E)
    class names -> tokenizer -> MaMMUT.encode_text (contrastive pass) -> t   (C, E)
    class logits = exp(class_scale) * r @ t.T + class_bias                   (B, N, C)

* The box bias puts every token's initial box on its own patch (centre of the
  patch, side one patch), and the MLP's last layer starts at zero, so training
  starts from a grid of patch-sized boxes (OWL-ViT's box bias).
* ``region_proj`` starts as a copy of MaMMUT's ``image_proj``: the image
  embedding is the projected *mean* of the patch tokens, so one projected token
  already lies in the image-text space and the class logits start meaningful.
* A closed-vocabulary head (``class_table=K``) replaces the text embeddings by a
  learned ``(K, E)`` table; it can name only its ``K`` classes (the comparison
  that shows what the text space buys).

The model returns boxes and logits; the set loss (Hungarian matching, focal
classification, L1 + GIoU) is :func:`multitower.losses.set_detection_loss`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multitower.models.detection_config import DetectionHeadConfig
from multitower.models.mammut import MaMMUT, MaMMUTConfig

__all__ = ["DetectionHeadConfig", "DetectionOutput", "MaMMUTDetector", "MaMMUTDetectorConfig"]


@dataclass(frozen=True)
class MaMMUTDetectorConfig:
    """A MaMMUT model with a detection head on its ViT.

    Args:
        mammut: the image-text model (its ViT and text decoder).
        head: the detection head (:class:`DetectionHeadConfig`).
    """

    mammut: MaMMUTConfig
    head: DetectionHeadConfig = field(default_factory=DetectionHeadConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.mammut, MaMMUTConfig):
            raise ValueError(
                f"MaMMUTDetectorConfig.mammut must be a MaMMUTConfig, got {self.mammut!r}"
            )
        if not isinstance(self.head, DetectionHeadConfig):
            raise ValueError(
                f"MaMMUTDetectorConfig.head must be a DetectionHeadConfig, got {self.head!r}"
            )


class DetectionOutput(NamedTuple):
    """One prediction per ViT patch token.

    Attributes:
        boxes: ``(B, N, 4)`` cxcywh, normalised by the image side, in ``(0, 1)``.
        objectness_logits: ``(B, N)`` class-agnostic "an object is here" logits.
        region_embeddings: ``(B, N, E)`` L2-normalised, in the image-text space.
        class_logits: ``(B, N, C)`` one logit per class embedding (or table row).
    """

    boxes: torch.Tensor
    objectness_logits: torch.Tensor
    region_embeddings: torch.Tensor
    class_logits: torch.Tensor


def _inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-4, 1 - 1e-4)
    return torch.log(x / (1 - x))


def grid_box_bias(grid: int) -> torch.Tensor:
    """``(grid * grid, 4)``: the inverse sigmoid of each patch's own cxcywh box (row-major)."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid  # (G,)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # (G, G) each
    size = torch.full_like(cx, 1.0 / grid)
    boxes = torch.stack((cx, cy, size, size), dim=-1).reshape(-1, 4)  # (N, 4)
    return _inverse_sigmoid(boxes)


class MaMMUTDetector(nn.Module):
    """MaMMUT + a per-token detection head (see the module docstring).

    Args:
        config: the whole detector.
        mammut: an existing (e.g. trained) MaMMUT to build on; its config must
            equal ``config.mammut``. Default: a freshly initialised one.
    """

    def __init__(self, config: MaMMUTDetectorConfig, *, mammut: MaMMUT | None = None) -> None:
        super().__init__()
        if mammut is not None and mammut.config != config.mammut:
            raise ValueError("MaMMUTDetector: mammut.config differs from config.mammut")
        self.config = config
        self.mammut = mammut if mammut is not None else MaMMUT(config.mammut)
        head, vision = config.head, config.mammut.vision
        dv, e = vision.d_model, config.mammut.embed_dim
        hidden = head.box_hidden or dv
        widths = [dv] + [hidden] * (head.box_layers - 1) + [4]
        self.box_mlp = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.objectness = nn.Linear(dv, 1)
        self.region_proj = nn.Linear(dv, e, bias=False)
        self.class_scale = nn.Parameter(torch.tensor(math.log(head.init_class_scale)))
        self.class_bias = nn.Parameter(torch.tensor(head.prior_bias))
        self.class_table = (
            nn.Parameter(torch.zeros(head.class_table, e)) if head.class_table else None
        )
        # Derived from the config, so not saved with the weights.
        self.register_buffer("box_bias", grid_box_bias(vision.grid_size), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise the head (the MaMMUT keeps its weights).

        * box MLP: hidden layers normal(0, 0.02), biases zero; the last layer all
          zero, so the first boxes are the patch boxes of ``box_bias``;
        * ``objectness``: weight normal(0, 0.02), bias the prior logit;
        * ``region_proj``: a copy of ``mammut.image_proj``;
        * ``class_scale``: ``log(init_class_scale)``; ``class_bias``: the prior logit;
        * ``class_table`` (closed vocabulary): normal(0, 1) rows (normalised at use).
        """
        head = self.config.head
        for layer in self.box_mlp[:-1]:
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.box_mlp[-1].weight)
        nn.init.zeros_(self.box_mlp[-1].bias)
        nn.init.normal_(self.objectness.weight, std=0.02)
        with torch.no_grad():
            self.objectness.bias.fill_(head.prior_bias)
            self.region_proj.weight.copy_(self.mammut.image_proj.weight)
            self.class_scale.fill_(math.log(head.init_class_scale))
            self.class_bias.fill_(head.prior_bias)
        if self.class_table is not None:
            nn.init.normal_(self.class_table)

    # -- parameters ------------------------------------------------------------------------
    def text_parameters(self) -> Iterator[nn.Parameter]:
        """Every MaMMUT parameter outside the ViT (the text decoder, both projections,
        the contrastive logit scale): what ``freeze_text`` freezes."""
        for name, param in self.mammut.named_parameters():
            if not name.startswith("vision."):
                yield param

    def freeze_text(self) -> None:
        """Stop gradients into the text side, so unseen class names keep their embeddings."""
        for param in self.text_parameters():
            param.requires_grad_(False)

    # -- forward ---------------------------------------------------------------------------
    def class_scale_value(self) -> torch.Tensor:
        """``exp(class_scale)`` clamped to ``[1, max_class_scale]``."""
        top = math.log(self.config.head.max_class_scale)
        return self.class_scale.clamp(0.0, top).exp()

    def encode_class_names(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class-name prompts ``(C, T)`` -> ``(C, E)`` text embeddings (the contrastive pass)."""
        return self.mammut.encode_text(tokens, padding_mask)

    def forward(
        self, images: torch.Tensor, class_embeddings: torch.Tensor | None = None
    ) -> DetectionOutput:
        """Detect in ``(B, 3, S, S)`` images; see :meth:`detect_tokens`."""
        return self.detect_tokens(self.mammut.image_tokens(images), class_embeddings)

    def detect_tokens(
        self, tokens: torch.Tensor, class_embeddings: torch.Tensor | None = None
    ) -> DetectionOutput:
        """Boxes, objectness, region embeddings and class logits of every patch token.

        Args:
            tokens: ``(B, N, Dv)`` ViT patch tokens.
            class_embeddings: ``(C, E)`` class-name embeddings from
                :meth:`encode_class_names` (any order; row ``c`` gives logit ``c``).
                Required by the open-vocabulary head; must be None for a
                closed-vocabulary head (it uses its table).

        Raises:
            ValueError: wrong shapes, or class embeddings given / missing for the head kind.
        """
        cfg = self.config
        n, dv, e = cfg.mammut.vision.num_patches, cfg.mammut.vision.d_model, cfg.mammut.embed_dim
        if tokens.dim() != 3 or tokens.shape[1:] != (n, dv):
            raise ValueError(
                f"MaMMUTDetector expects tokens (B, {n}, {dv}), got {tuple(tokens.shape)}"
            )
        if self.class_table is not None:
            if class_embeddings is not None:
                raise ValueError(
                    "MaMMUTDetector: a closed-vocabulary head (class_table > 0) scores its own "
                    "classes; pass class_embeddings=None"
                )
            classes = self.class_table
        else:
            if class_embeddings is None:
                raise ValueError(
                    "MaMMUTDetector: the open-vocabulary head needs class_embeddings (C, E)"
                )
            classes = class_embeddings
        if classes.dim() != 2 or classes.shape[1] != e or classes.shape[0] == 0:
            raise ValueError(
                f"MaMMUTDetector: class embeddings must be (C >= 1, {e}), got "
                f"{tuple(classes.shape)}"
            )
        h = tokens
        for i, layer in enumerate(self.box_mlp):
            h = layer(h)
            if i < len(self.box_mlp) - 1:
                h = F.gelu(h)
        boxes = torch.sigmoid(h + self.box_bias)  # (B, N, 4) cxcywh
        objectness = self.objectness(tokens).squeeze(-1)  # (B, N)
        regions = F.normalize(self.region_proj(tokens), dim=-1)  # (B, N, E)
        classes = F.normalize(classes.to(regions.dtype), dim=-1)  # (C, E)
        logits = self.class_scale_value() * regions @ classes.T + self.class_bias  # (B, N, C)
        return DetectionOutput(boxes, objectness, regions, logits)
