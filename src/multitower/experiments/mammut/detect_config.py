"""The config of ``multitower mammut-detect``: one frozen dataclass for the whole YAML file.

Torch-free, so a bad config is reported before torch loads. The experiment is
:mod:`multitower.experiments.mammut.detect`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from multitower.data.image_datasets import SceneConfig
from multitower.models.detection_config import DetectionHeadConfig
from multitower.train.train_config import TrainConfig

DETECT_SOURCES = ("scenes", "coco")
FREQUENCIES = ("r", "c", "f")
# What each compared detector is: (which pre-trained MaMMUT, which head).
VARIANTS: dict[str, tuple[str, str]] = {
    "open_vocab": ("contrastive", "open"),
    "closed_vocab": ("contrastive", "closed"),
    "no_contrastive": ("no_contrastive", "open"),
    "cropped_pos_emb": ("cropped_pos_emb", "open"),
}
# The pre-training overrides that make each kind of MaMMUT from the pre-training config.
PRETRAIN_KINDS: dict[str, tuple[str, ...]] = {
    "contrastive": (),
    "no_contrastive": ("loss.contrastive_weight=0",),
    "cropped_pos_emb": ("model.vision.cropped_pos_emb=true",),
}


@dataclass(frozen=True)
class DetectPretrainConfig:
    """How a MaMMUT is pre-trained when no run directory is given for it.

    Args:
        config: a ``recipe: mammut`` YAML file (relative paths: to the working directory).
        overrides: dotted overrides applied to it before each kind's own.
    """

    config: str = "configs/mammut_tiny.yaml"
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectDataConfig:
    """Detection data and its base/novel split.

    Args:
        source: ``"scenes"`` (generated) or ``"coco"`` (instances JSON + image folder).
        num_scenes, eval_scenes, seed: generated training / evaluation scenes
            (evaluation uses ``seed + 1``).
        scene: how scenes are drawn.
        split_seed: seed of the base/novel split of the scene classes.
        coco_annotations, coco_images, eval_coco_annotations, eval_coco_images:
            COCO instances files and folders (training / evaluation).
        novel_frequencies: with ``coco``, the LVIS frequencies whose classes are
            novel (``["r"]``: APr).
    """

    source: str = "scenes"
    num_scenes: int = 3000
    eval_scenes: int = 300
    seed: int = 2
    scene: SceneConfig = field(default_factory=lambda: SceneConfig(max_objects=3))
    split_seed: int = 0
    coco_annotations: str | None = None
    coco_images: str | None = None
    eval_coco_annotations: str | None = None
    eval_coco_images: str | None = None
    novel_frequencies: tuple[str, ...] = ("r",)

    def __post_init__(self) -> None:
        if self.source not in DETECT_SOURCES:
            raise ValueError(f"source must be one of {DETECT_SOURCES}, got {self.source!r}")
        if self.num_scenes <= 0 or self.eval_scenes <= 0 or self.seed < 0:
            raise ValueError("num_scenes and eval_scenes must be positive and seed >= 0")
        if self.source == "coco":
            missing = [
                k
                for k in (
                    "coco_annotations",
                    "coco_images",
                    "eval_coco_annotations",
                    "eval_coco_images",
                )
                if not getattr(self, k)
            ]
            if missing:
                raise ValueError(f"source='coco' needs {', '.join(missing)}")
        bad = [f for f in self.novel_frequencies if f not in FREQUENCIES]
        if bad or not self.novel_frequencies:
            raise ValueError(
                f"novel_frequencies must be a non-empty list from {FREQUENCIES}, got "
                f"{list(self.novel_frequencies)}"
            )


@dataclass(frozen=True)
class DetectLossConfig:
    """The set loss's weights (also the matching costs) and what is trained.

    Args:
        class_weight, l1_weight, giou_weight, objectness_weight: loss weights.
        alpha, gamma: focal loss parameters.
        freeze_text: keep the text side fixed (class names keep their embeddings).
    """

    class_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    objectness_weight: float = 1.0
    alpha: float = 0.25
    gamma: float = 2.0
    freeze_text: bool = True

    def __post_init__(self) -> None:
        for name in ("class_weight", "l1_weight", "giou_weight", "objectness_weight", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class DetectEvalConfig:
    """Decoding and drawing.

    Args:
        batch_size: images per forward.
        top_k: detections kept per image (COCO counts up to 100).
        nms_iou: class-wise NMS threshold.
        draw_images: evaluation images drawn per detector (0: none).
        draw_min_score: the lowest score drawn.
    """

    batch_size: int = 100
    top_k: int = 100
    nms_iou: float = 0.5
    draw_images: int = 6
    draw_min_score: float = 0.3

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.top_k < 1 or self.draw_images < 0:
            raise ValueError("batch_size and top_k must be >= 1, draw_images >= 0")
        if not 0 < self.nms_iou <= 1 or not 0 <= self.draw_min_score <= 1:
            raise ValueError("nms_iou must lie in (0, 1] and draw_min_score in [0, 1]")


@dataclass(frozen=True)
class DetectExperimentConfig:
    """The whole ``multitower mammut-detect`` YAML file.

    Args:
        init_from: RUN_DIR of a trained image MaMMUT (``multitower mammut``) for the
            ``open_vocab`` and ``closed_vocab`` detectors; None: pre-train one.
        no_contrastive_from: RUN_DIR of a MaMMUT trained without the contrastive
            loss (for ``no_contrastive``); None: pre-train one.
        cropped_pos_emb_from: RUN_DIR of a MaMMUT pre-trained with cropped
            positional embeddings (for ``cropped_pos_emb``); None: pre-train one.
        variants: the detectors to train and compare, from :data:`VARIANTS`.
        pretrain: how missing MaMMUTs are pre-trained.
        head: the detection head (the closed-vocabulary one sets its table size itself).
        data, train, loss, eval: detection data, training, loss and evaluation.
    """

    init_from: str | None = None
    no_contrastive_from: str | None = None
    cropped_pos_emb_from: str | None = None
    variants: tuple[str, ...] = ("open_vocab", "closed_vocab", "no_contrastive", "cropped_pos_emb")
    pretrain: DetectPretrainConfig = field(default_factory=DetectPretrainConfig)
    head: DetectionHeadConfig = field(default_factory=DetectionHeadConfig)
    data: DetectDataConfig = field(default_factory=DetectDataConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=600, batch_size=64, lr=1e-3, warmup_steps=30)
    )
    loss: DetectLossConfig = field(default_factory=DetectLossConfig)
    eval: DetectEvalConfig = field(default_factory=DetectEvalConfig)

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(
                f"variants must be distinct names from {tuple(VARIANTS)}, got {list(self.variants)}"
            )
        if self.head.class_table:
            raise ValueError(
                "head.class_table must stay 0: the closed_vocab variant sets it to the base classes"
            )

    def run_dir_for(self, kind: str) -> str | None:
        """The RUN_DIR given for a pre-training kind (None: pre-train it)."""
        return {
            "contrastive": self.init_from,
            "no_contrastive": self.no_contrastive_from,
            "cropped_pos_emb": self.cropped_pos_emb_from,
        }[kind]
