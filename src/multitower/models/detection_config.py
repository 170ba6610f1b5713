"""Config of the MaMMUT detection head (torch-free; :mod:`multitower.models.detection` re-exports it).

The head follows OWL-ViT (Minderer et al., 2022, arXiv 2205.06230): every ViT
patch token predicts one box, an objectness logit and a region embedding in the
shared image-text space; a box's class logits are the scaled similarities of its
region embedding to class embeddings plus a learned bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from multitower.nn.checks import check_numbers


@dataclass(frozen=True)
class DetectionHeadConfig:
    """Sizes and initial values of the per-token detection head.

    Args:
        box_hidden: width of the box MLP's hidden layers (0: the ViT width).
        box_layers: linear layers of the box MLP (>= 1; GELU between them).
        init_class_scale: initial multiplier of the region-class cosine similarity
            (learned, as a log, clamped to ``[1, max_class_scale]``).
        max_class_scale: the upper clamp of that multiplier.
        prior_prob: initial probability of every class and of objectness (the
            RetinaNet prior: the bias starts at ``-log((1 - p) / p)``).
        class_table: 0 for the open-vocabulary head (class embeddings come from
            the text encoder at call time); ``K > 0`` for a closed-vocabulary head
            with a learned table of ``K`` class embeddings (it can only name those).
    """

    box_hidden: int = 0
    box_layers: int = 3
    init_class_scale: float = 10.0
    max_class_scale: float = 100.0
    prior_prob: float = 0.01
    class_table: int = 0

    def __post_init__(self) -> None:
        check_numbers(
            self,
            ints=("box_hidden", "box_layers", "class_table"),
            floats=("init_class_scale", "max_class_scale", "prior_prob"),
        )
        if not isinstance(self.box_hidden, int) or self.box_hidden < 0:
            raise ValueError(
                f"DetectionHeadConfig.box_hidden must be an int >= 0, got {self.box_hidden!r}"
            )
        if not isinstance(self.box_layers, int) or self.box_layers < 1:
            raise ValueError(
                f"DetectionHeadConfig.box_layers must be an int >= 1, got {self.box_layers!r}"
            )
        if not 1.0 <= self.init_class_scale <= self.max_class_scale:
            raise ValueError(
                "DetectionHeadConfig needs 1 <= init_class_scale <= max_class_scale, got "
                f"{self.init_class_scale} and {self.max_class_scale}"
            )
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(
                f"DetectionHeadConfig.prior_prob must lie in (0, 1), got {self.prior_prob}"
            )
        if not isinstance(self.class_table, int) or self.class_table < 0:
            raise ValueError(
                f"DetectionHeadConfig.class_table must be an int >= 0, got {self.class_table!r}"
            )

    @property
    def open_vocabulary(self) -> bool:
        """Whether class embeddings come from text (no learned class table)."""
        return self.class_table == 0

    @property
    def prior_bias(self) -> float:
        """``-log((1 - p) / p)``: the logit whose sigmoid is ``prior_prob``."""
        return -math.log((1.0 - self.prior_prob) / self.prior_prob)
