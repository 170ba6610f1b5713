"""Video-text data on disk: clips as frame folders, ``.npz`` files or video files, and an
MSR-VTT / MSVD-style annotation reader.

A clip on disk is one of

* a folder of frame images (any format Pillow reads), in file-name order;
* an ``.npz`` file holding ``frames``, ``(F, H, W, 3)`` uint8 RGB (read with
  ``allow_pickle=False``; written atomically by :func:`write_clip_npz`);
* a video file (``.mp4``, ``.avi``, ``.webm``, ``.mkv``, ``.mov``, ...) decoded
  with PyAV (``pip install av``; only this case needs it).

:func:`load_clip` samples ``num_frames`` frames evenly over the clip (the
middle frame of each of ``num_frames`` equal segments) and applies the image
evaluation transform (shorter side resize, center crop, normalise) to each:
``(F, 3, S, S)`` float32.

Annotations (:func:`read_video_text`) map video ids to captions and/or QA pairs:

* JSON, MSR-VTT style: ``{"sentences": [{"video_id", "caption"}], "qa": [{"video_id",
  "question", "answer"}]}`` (either list may be missing; QA entries may carry
  ``"needs_order"``), or a plain list of such entries (MSVD-QA style);
* CSV with a header: ``video_id,caption`` or ``video_id,question,answer`` columns.

The video of id ``v`` is ``videos_dir/v`` (a frame folder), ``videos_dir/v.npz``
or ``videos_dir/v.<video extension>``. :func:`write_msrvtt_style` writes the
generated clips (:mod:`multitower.data.video_clips`) in this layout.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multitower.data.errors import BadRecordError
from multitower.data.images import IMAGE_EXTENSIONS, ImageTransform
from multitower.data.video_clips import Clip
from multitower.io import write_bytes_atomic, write_text_atomic

VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "webm", "mkv", "mov", "m4v", "mpg", "mpeg")


# --------------------------------------------------------------------------- clips


def write_clip_npz(path: str | Path, frames: np.ndarray) -> None:
    """Write ``(F, H, W, 3)`` uint8 frames as an ``.npz`` (atomically)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, frames=frames)
    write_bytes_atomic(path, buffer.getvalue())


def _frames_from_folder(folder: Path) -> list[Image.Image]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise BadRecordError(
            f"{folder}: no frame images ({', '.join(IMAGE_EXTENSIONS)}) in this folder"
        )
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                frames.append(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise BadRecordError(f"{file}: unreadable frame image ({exc})") from exc
    return frames


def _frames_from_npz(path: Path) -> list[Image.Image]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "frames" not in data.files:
                raise BadRecordError(f"{path}: no 'frames' array (has {data.files})")
            frames = data["frames"]
    except (OSError, ValueError) as exc:
        raise BadRecordError(f"{path}: unreadable .npz clip ({exc})") from exc
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise BadRecordError(
            f"{path}: 'frames' must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
        )
    return [Image.fromarray(f) for f in frames]


def _frames_from_video(path: Path) -> list[Image.Image]:
    try:
        import av  # PyAV: needed only for video files
    except ImportError as exc:
        raise BadRecordError(
            f"{path}: decoding video files needs PyAV (pip install av); "
            "frame folders and .npz clips work without it"
        ) from exc
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise BadRecordError(f"{path}: unreadable video file ({exc})") from exc
    return frames


def read_frames(path: str | Path) -> list[Image.Image]:
    """Every frame of a clip on disk, as RGB images (see the module docstring).

    Raises:
        BadRecordError: missing, unreadable, empty, or of an unknown kind (names the path).
    """
    p = Path(path)
    if p.is_dir():
        frames = _frames_from_folder(p)
    elif not p.exists():
        raise BadRecordError(f"{p}: no such clip (a frame folder, .npz or video file)")
    elif p.suffix.lower() == ".npz":
        frames = _frames_from_npz(p)
    elif p.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS:
        frames = _frames_from_video(p)
    else:
        raise BadRecordError(
            f"{p}: unknown clip kind {p.suffix!r}; expected a frame folder, .npz or one of "
            f"{', '.join('.' + e for e in VIDEO_EXTENSIONS)}"
        )
    if not frames:
        raise BadRecordError(f"{p}: the clip has zero frames")
    return frames


def list_clips(folder: str | Path) -> list[Path]:
    """The clips of a folder, sorted by name: ``.npz`` files, video files and sub-folders
    (each a folder of frames). Other files are ignored; nothing is read yet."""
    root = Path(folder)
    out = []
    for p in sorted(root.iterdir()):
        kind = p.suffix.lower().lstrip(".")
        if p.is_dir() or (p.is_file() and (kind == "npz" or kind in VIDEO_EXTENSIONS)):
            out.append(p)
    return out


def sample_indices(available: int, num_frames: int) -> list[int]:
    """``num_frames`` evenly spread frame indices: the middle of each of ``num_frames`` segments.

    Raises:
        ValueError: fewer frames available than asked for.
    """
    if available < num_frames:
        raise ValueError(f"the clip has {available} frames but {num_frames} are needed")
    return [int((i + 0.5) * available / num_frames) for i in range(num_frames)]


def load_clip(path: str | Path, num_frames: int, transform: ImageTransform | int) -> torch.Tensor:
    """Load a clip as ``(num_frames, 3, S, S)`` float32 (evenly sampled frames, eval transform).

    Args:
        path: a frame folder, ``.npz`` or video file.
        num_frames: frames to sample.
        transform: an :class:`ImageTransform`, or the image size ``S`` for the default one.

    Raises:
        BadRecordError: unreadable, empty, or too few frames (names the path).
    """
    if isinstance(transform, int):
        transform = ImageTransform(image_size=transform)
    frames = read_frames(path)
    try:
        indices = sample_indices(len(frames), num_frames)
    except ValueError as exc:
        raise BadRecordError(f"{path}: {exc}") from exc
    # each frame is named in errors (a frame too small, say) by the clip and its index
    return torch.stack(
        [transform(frames[i], name=f"{path} frame {i}") for i in indices]
    )  # (F, 3, S, S)


# --------------------------------------------------------------------------- annotations


@dataclass
class VideoTextRecord:
    """One video with its texts.

    Attributes:
        video_id: the id in the annotations.
        path: the clip on disk (frame folder, ``.npz`` or video file).
        captions: its captions.
        qa: ``(question, answer)`` pairs.
        needs_order: per QA pair, whether the answer needs the frame order
            (``None`` when the annotations do not say).
    """

    video_id: str
    path: Path
    captions: list[str] = field(default_factory=list)
    qa: list[tuple[str, str]] = field(default_factory=list)
    needs_order: list[bool | None] = field(default_factory=list)


def _find_video(videos_dir: Path, video_id: str) -> Path:
    candidates = [videos_dir / video_id, videos_dir / f"{video_id}.npz"]
    candidates += [videos_dir / f"{video_id}.{ext}" for ext in VIDEO_EXTENSIONS]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise BadRecordError(
        f"video {video_id!r}: no frame folder, .npz or video file of that name in {videos_dir}"
    )


def _entries(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRecordError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and ("sentences" in data or "qa" in data):
        return [*data.get("sentences", []), *data.get("qa", [])]
    raise BadRecordError(
        f"{path}: expected a list of entries or an object with 'sentences' and/or 'qa'"
    )


def read_video_text(
    annotations: str | Path, videos_dir: str | Path, *, check_videos: bool = True
) -> list[VideoTextRecord]:
    """Read an MSR-VTT / MSVD-style annotation file (see the module docstring).

    Args:
        annotations: the JSON or CSV file.
        videos_dir: the folder of clips.
        check_videos: fail on a video id without a clip (else the path is
            ``videos_dir / video_id``, checked when loaded).

    Returns:
        One record per video id, in order of first appearance.

    Raises:
        BadRecordError: an unreadable file, an entry without ``video_id`` or
            without a caption / question+answer (naming the entry's index), or a
            missing clip.
    """
    path, root = Path(annotations), Path(videos_dir)
    if not path.is_file():
        raise BadRecordError(f"{path}: no such annotation file")
    records: dict[str, VideoTextRecord] = {}
    for i, entry in enumerate(_entries(path)):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise BadRecordError(f"{where}: expected an object, got {type(entry).__name__}")
        video_id = str(entry.get("video_id", entry.get("video", ""))).strip()
        if not video_id:
            raise BadRecordError(f"{where}: no 'video_id'")
        if video_id not in records:
            clip = _find_video(root, video_id) if check_videos else root / video_id
            records[video_id] = VideoTextRecord(video_id, clip)
        record = records[video_id]
        caption = str(entry.get("caption") or "").strip()
        question = str(entry.get("question") or "").strip()
        answer = str(entry.get("answer") or "").strip()
        if caption:
            record.captions.append(caption)
        elif question and answer:
            record.qa.append((question, answer))
            flag = entry.get("needs_order")
            record.needs_order.append(None if flag in (None, "") else str(flag).lower() == "true")
        else:
            raise BadRecordError(f"{where}: needs a 'caption' or a 'question' and an 'answer'")
    return list(records.values())


def write_msrvtt_style(
    clips: Sequence[Clip], out_dir: str | Path, *, annotations_name: str = "annotations.json"
) -> Path:
    """Write generated clips as ``out_dir/videos/video<i>.npz`` + an MSR-VTT-style JSON file.

    Read it back with ``read_video_text(path, out_dir / "videos")``.

    Returns:
        The path of the JSON file.
    """
    root = Path(out_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    sentences, qa = [], []
    for i, clip in enumerate(clips):
        video_id = f"video{i}"
        write_clip_npz(root / "videos" / f"{video_id}.npz", clip.frames)
        sentences += [{"video_id": video_id, "caption": c} for c in clip.captions]
        qa += [
            {"video_id": video_id, "question": q.question, "answer": q.answer,
             "needs_order": q.needs_order}
            for q in clip.qa
        ]  # fmt: skip
    path = root / annotations_name
    payload = {"info": {"description": "multitower generated clips"}, "sentences": sentences,
               "qa": qa}  # fmt: skip
    write_text_atomic(path, json.dumps(payload, indent=1))
    return path
