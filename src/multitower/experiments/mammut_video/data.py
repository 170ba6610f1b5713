"""Data of the ``mammut_video`` recipe: clips with captions and QA, the dataset and the eval set.

One training example is a clip of ``F`` frames with two texts, as in the image
recipe (:mod:`multitower.experiments.mammut.data`): a caption for the
contrastive pass, and for the generative pass a caption or, with probability
``vqa_fraction``, a question-answer pair scored on the answer only. Batches are
the image recipe's :class:`~multitower.experiments.mammut.data.MaMMUTBatch`
with ``images`` holding clips ``(B, F, 3, S, S)``, so the image recipe's task
(:class:`~multitower.experiments.mammut.task.MaMMUTTask`) trains the video model unchanged.

Generated clips are kept as ``uint8`` and normalised when drawn (the same
normalisation as :func:`~multitower.data.video_readers.load_clip`, so a clip
written to ``.npz`` and read back by the commands gives the same tensor).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from multitower.data.caption_text import caption_ids, clean_text, vqa_ids
from multitower.data.errors import BadRecordError
from multitower.data.images import ImageTransform
from multitower.data.tokenizer import TextTokenizer
from multitower.data.video_clips import generate_clips
from multitower.data.video_readers import load_clip, read_video_text
from multitower.eval.mammut_eval import EvalSet
from multitower.experiments.mammut.data import sample_texts
from multitower.experiments.mammut_video.config import VideoDataConfig


@dataclass
class VideoExample:
    """One clip with its texts.

    Attributes:
        key: a name for the clip.
        clip: ``(F, 3, S, S)`` ``uint8`` pixels, or ``float32`` already normalised.
        captions: its captions.
        qa: ``(question, answer)`` pairs.
        needs_order: per pair, whether the answer needs the frame order (None: unknown).
    """

    key: str
    clip: torch.Tensor
    captions: list[str]
    qa: list[tuple[str, str]] = field(default_factory=list)
    needs_order: list[bool | None] = field(default_factory=list)


def frames_to_clip(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 frames -> ``(F, 3, H, W)`` uint8."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def normalize_clip(clip: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    """A ``uint8`` clip ``(F, 3, S, S)`` scaled to [0, 1] and normalised (float clips pass through)."""
    if clip.dtype != torch.uint8:
        return clip
    mean = torch.tensor(transform.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(transform.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (clip.to(torch.float32) / 255.0 - mean) / std  # (F, 3, S, S)


def load_examples(
    cfg: VideoDataConfig, split: str, num_frames: int, image_size: int
) -> list[VideoExample]:
    """Training (``"train"``) or evaluation (``"eval"``) clips of ``num_frames`` frames.

    Generated clips are drawn at ``num_frames``; clips on disk are sampled to it
    (unreadable ones are skipped with one warning naming the first).

    Raises:
        ValueError: an unknown split, or generated frames of another size than the ViT's.
        BadRecordError: an unreadable annotation file or a missing clip.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    train = split == "train"
    if cfg.source == "clips":
        if cfg.clip.image_size != image_size:
            raise ValueError(
                f"data.clip.image_size={cfg.clip.image_size} must equal the ViT's "
                f"image_size={image_size}"
            )
        n, seed = (cfg.num_clips, cfg.seed) if train else (cfg.eval_clips, cfg.seed + 1)
        clip_cfg = replace(cfg.clip, num_frames=num_frames)
        return [
            VideoExample(
                f"clip-{seed}-{i}",
                frames_to_clip(c.frames),
                c.captions,
                [(q.question, q.answer) for q in c.qa],
                [q.needs_order for q in c.qa],
            )
            for i, c in enumerate(generate_clips(n, seed, clip_cfg))
        ]
    annotations = cfg.annotations if train else cfg.eval_annotations
    videos = cfg.videos if train else cfg.eval_videos
    if not (annotations and videos):
        return []
    examples, skipped = [], []
    for record in read_video_text(annotations, videos):
        try:
            clip = load_clip(record.path, num_frames, image_size)
        except BadRecordError as err:
            skipped.append(str(err))
            continue
        if record.captions:
            examples.append(
                VideoExample(record.video_id, clip, record.captions, record.qa, record.needs_order)
            )
    if skipped:
        warnings.warn(
            f"{split} clips: skipped {len(skipped)} unreadable clip(s); first: {skipped[0]}",
            stacklevel=2,
        )
    return examples


def check_alphabet(examples: list[VideoExample], tokenizer: TextTokenizer, where: str) -> None:
    """Raise a ValueError naming the characters of the texts that ``tokenizer`` cannot encode."""
    chars: set[str] = set()
    for ex in examples:
        for text in [*ex.captions, *(t for pair in ex.qa for t in pair)]:
            chars |= set(clean_text(text).replace(" ", ""))
    unknown = sorted(chars - tokenizer.alphabet)
    if unknown:
        raise ValueError(f"{where}: the tokenizer cannot encode the characters {unknown}")


class VideoTextDataset:
    """Clips with pre-tokenised captions and VQA examples (see the module docstring).

    ``dataset[i]`` returns ``(clip, contrastive ids, generative ids, weights)``,
    the texts drawn with Python's ``random`` (seeded by the trainer).
    """

    def __init__(
        self,
        examples: list[VideoExample],
        transform: ImageTransform,
        tokenizer: TextTokenizer,
        *,
        max_text_len: int,
        vqa_fraction: float,
    ) -> None:
        self.examples = examples
        self.transform = transform
        self.max_len = max_text_len
        self.vqa_fraction = vqa_fraction
        self.captions = [[caption_ids(tokenizer, c) for c in ex.captions] for ex in examples]
        self.vqa = [[vqa_ids(tokenizer, q, a) for q, a in ex.qa] for ex in examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], list[int], list[float]]:
        clip = normalize_clip(self.examples[index].clip, self.transform)  # (F, 3, S, S)
        text, gen, weights = sample_texts(
            self.captions[index], self.vqa[index], self.max_len, self.vqa_fraction
        )
        return clip, text, gen, weights


@dataclass
class VideoEvalSet:
    """Evaluation clips: an :class:`EvalSet` whose ``images`` are clips ``(N, F, 3, S, S)``,
    and per clip, which of its questions need the frame order."""

    data: EvalSet
    needs_order: list[list[bool | None]]

    @classmethod
    def from_examples(cls, examples: list[VideoExample], transform: ImageTransform) -> VideoEvalSet:
        clips = torch.stack([normalize_clip(ex.clip, transform) for ex in examples])
        data = EvalSet(
            clips,
            [[clean_text(c) for c in ex.captions] for ex in examples],
            [[(clean_text(q), clean_text(a)) for q, a in ex.qa] for ex in examples],
            [ex.key for ex in examples],
        )
        flags = [list(ex.needs_order) or [None] * len(ex.qa) for ex in examples]
        return cls(data, flags)
