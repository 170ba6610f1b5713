"""Config of the ``mammut_video`` recipe: which systems to train, on which clips.

A config names ``recipe: mammut_video`` and has the sections ``train``
(:class:`~multitower.train.train_config.TrainConfig`, the same for every
system), ``model`` (:class:`~multitower.models.mammut.MaMMUTConfig`), ``video``
(:class:`VideoRecipeConfig`), ``data`` (:class:`VideoDataConfig`), ``loss`` and
``eval`` (the image recipe's :class:`~multitower.experiments.mammut.task.MaMMUTLossConfig`
and :class:`~multitower.experiments.mammut.task.MaMMUTEvalConfig`).

A *system* is one video encoder at one frame count, e.g. ``tubes_f8``; the
recipe trains and evaluates every pair of ``video.encoders`` x ``video.frames``
with the same model size, steps, seed and clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from multitower.data.video_clips import ClipConfig
from multitower.models.video_config import TUBE_KERNELS, VIDEO_ENCODERS, TubeSpec

VIDEO_SOURCES = ("clips", "files")


def system_name(encoder: str, num_frames: int) -> str:
    """``"tubes_f8"``: the name (and sub-directory) of one system."""
    return f"{encoder}_f{num_frames}"


@dataclass(frozen=True)
class VideoRecipeConfig:
    """Which systems the recipe trains, and where they start.

    Args:
        encoders: video encoders to compare (``"tubes"``, ``"frames"``).
        frames: frame counts ``F``; every encoder is trained at each.
        tubes: the tube list of the ``tubes`` encoder at every ``F``; ``None``:
            TubeViT's four tubes scaled to each ``F`` (``default_tubes``).
        tube_kernels: ``"inflated"`` (computed from the ViT's patch embedding at
            every forward) or ``"learned"`` (each tube's own kernel, initialised so);
            see :class:`~multitower.models.video_config.VideoConfig`.
        init_from: a trained image MaMMUT run directory (``multitower mammut``)
            every system starts from: all its weights, its tokenizer and its
            model config (the ``model`` section is then not used). ``None``: from scratch.
        shuffled_control: also score the order-dependent questions on clips whose
            frames are put in a random order (a model reading the order drops to
            about chance there).
    """

    encoders: tuple[str, ...] = VIDEO_ENCODERS
    frames: tuple[int, ...] = (4, 8, 16)
    tubes: tuple[TubeSpec, ...] | None = None
    tube_kernels: str = "inflated"
    init_from: str | None = None
    shuffled_control: bool = True

    def __post_init__(self) -> None:
        encoders, frames = tuple(self.encoders), tuple(self.frames)
        if not encoders or any(e not in VIDEO_ENCODERS for e in encoders):
            raise ValueError(f"encoders must be names from {VIDEO_ENCODERS}, got {encoders}")
        if len(set(encoders)) != len(encoders) or len(set(frames)) != len(frames):
            raise ValueError(f"encoders and frames must not repeat, got {encoders}, {frames}")
        if not frames or any(not isinstance(f, int) or f < 1 for f in frames):
            raise ValueError(f"frames must be positive ints, got {frames}")
        if self.tubes is not None:
            for i, tube in enumerate(self.tubes):
                if tube.min_frames() > min(frames):
                    raise ValueError(
                        f"tubes[{i}] needs {tube.min_frames()} frames, more than the "
                        f"{min(frames)} of the shortest clips"
                    )
        if self.tube_kernels not in TUBE_KERNELS:
            raise ValueError(
                f"tube_kernels must be one of {TUBE_KERNELS}, got {self.tube_kernels!r}"
            )
        object.__setattr__(self, "encoders", encoders)
        object.__setattr__(self, "frames", frames)

    @property
    def systems(self) -> list[tuple[str, int]]:
        """``(encoder, F)`` pairs in training order: by ``F``, then encoder."""
        return [(e, f) for f in self.frames for e in self.encoders]


@dataclass(frozen=True)
class VideoDataConfig:
    """The video-text data.

    Args:
        source: ``"clips"`` (generated, :mod:`multitower.data.video_clips`) or
            ``"files"`` (an MSR-VTT/MSVD-style layout read by
            :func:`~multitower.data.video_readers.read_video_text`).
        num_clips, eval_clips: generated training / evaluation clips.
        seed: seed of the training clips (evaluation clips use ``seed + 1``).
        clip: how clips are drawn; its ``num_frames`` is replaced by each system's ``F``
            and its ``image_size`` must be the ViT's.
        annotations, videos: training annotation file and clip folder (``files``).
        eval_annotations, eval_videos: the same for evaluation.
        max_text_len: longest token sequence, bos and eos included.
        vqa_fraction: chance that the generative pass trains on a question-answer
            pair instead of a caption.
    """

    source: str = "clips"
    num_clips: int = 2000
    eval_clips: int = 200
    seed: int = 0
    clip: ClipConfig = field(default_factory=lambda: ClipConfig(image_size=32))
    annotations: str | None = None
    videos: str | None = None
    eval_annotations: str | None = None
    eval_videos: str | None = None
    max_text_len: int = 32
    vqa_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.source not in VIDEO_SOURCES:
            raise ValueError(f"source must be one of {VIDEO_SOURCES}, got {self.source!r}")
        if self.num_clips <= 0 or self.eval_clips < 0:
            raise ValueError("num_clips must be positive and eval_clips >= 0")
        if self.source == "files" and not (self.annotations and self.videos):
            raise ValueError("source='files' needs annotations and videos")
        if self.max_text_len < 3:
            raise ValueError(f"max_text_len must be >= 3, got {self.max_text_len}")
        if not 0.0 <= self.vqa_fraction <= 1.0:
            raise ValueError(f"vqa_fraction must lie in [0, 1], got {self.vqa_fraction}")
