"""Clips on disk (frame folders, .npz, video files through PyAV) and the MSR-VTT/MSVD-style reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from multitower.data.errors import BadRecordError
from multitower.data.images import ImageTransform
from multitower.data.video_clips import ClipConfig, generate_clips
from multitower.data.video_readers import (
    load_clip,
    read_frames,
    read_video_text,
    sample_indices,
    write_clip_npz,
    write_msrvtt_style,
)

CONFIG = ClipConfig(image_size=32, num_frames=6)


def frames(n: int = 6, size: int = 32) -> np.ndarray:
    """Frame i is a flat grey of level 40 * i, so the sampled indices can be read back."""
    return np.stack([np.full((size, size, 3), 40 * i, dtype=np.uint8) for i in range(n)])


def levels(clip: torch.Tensor) -> list[int]:
    pixels = ImageTransform(image_size=32).denormalize(clip)  # (F, 3, S, S) in [0, 1]
    return [round(float(p.mean()) * 255) for p in pixels]


def test_sample_indices_take_the_middle_of_equal_segments():
    assert sample_indices(6, 3) == [1, 3, 5]
    assert sample_indices(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="has 3 frames but 4 are needed"):
        sample_indices(3, 4)


def test_npz_and_frame_folder_load_the_same_clip(tmp_path):
    write_clip_npz(tmp_path / "a.npz", frames())
    folder = tmp_path / "b"
    folder.mkdir()
    for i, f in enumerate(frames()):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    a = load_clip(tmp_path / "a.npz", 3, 32)
    b = load_clip(folder, 3, 32)
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert levels(a) == [40, 120, 200]


def test_video_file_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for f in frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert len(read_frames(path)) == 6
    got = levels(load_clip(path, 3, 32))
    assert all(abs(g - e) <= 6 for g, e in zip(got, [40, 120, 200])), got  # lossy codec


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npz", None, "no such clip"),
        ("x.mp4", b"not a video", "unreadable video"),
        ("x.npz", b"junk", "unreadable .npz"),
        ("x.txt", b"hi", "unknown clip kind"),
        ("empty", "folder", "no frame images"),
    ],
)
def test_bad_clips_name_the_file(tmp_path, name, content, message):
    if "video" in message:
        pytest.importorskip("av")
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(BadRecordError, match=message) as info:
        load_clip(path, 2, 32)
    assert str(path) in str(info.value)


def test_zero_frames_and_too_few_frames(tmp_path):
    write_clip_npz(tmp_path / "z.npz", np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(BadRecordError, match="zero frames"):
        load_clip(tmp_path / "z.npz", 2, 32)
    write_clip_npz(tmp_path / "short.npz", frames(3))
    with pytest.raises(BadRecordError, match=r"short\.npz: the clip has 3 frames but 8"):
        load_clip(tmp_path / "short.npz", 8, 32)


def test_generated_clips_round_trip_through_the_msrvtt_layout(tmp_path):
    clips = generate_clips(4, seed=0, config=CONFIG)
    path = write_msrvtt_style(clips, tmp_path)
    records = read_video_text(path, tmp_path / "videos")
    assert [r.video_id for r in records] == ["video0", "video1", "video2", "video3"]
    for clip, record in zip(clips, records):
        assert record.captions == clip.captions
        assert record.qa == [(q.question, q.answer) for q in clip.qa]
        assert record.needs_order == [q.needs_order for q in clip.qa]
        pixels = load_clip(record.path, CONFIG.num_frames, 32)
        expected = torch.stack([ImageTransform(image_size=32).normalize(Image.fromarray(f))
                                for f in clip.frames])  # fmt: skip
        torch.testing.assert_close(pixels, expected)


def test_csv_and_list_json_annotations(tmp_path):
    (tmp_path / "videos").mkdir()
    write_clip_npz(tmp_path / "videos" / "v1.npz", frames())
    (tmp_path / "qa.csv").write_text("video_id,question,answer\nv1,what is it,a dog\n")
    (tmp_path / "caps.json").write_text(json.dumps([{"video": "v1", "caption": "a dog runs"}]))
    [qa] = read_video_text(tmp_path / "qa.csv", tmp_path / "videos")
    assert qa.qa == [("what is it", "a dog")] and qa.needs_order == [None]
    [caps] = read_video_text(tmp_path / "caps.json", tmp_path / "videos")
    assert caps.captions == ["a dog runs"] and caps.path.name == "v1.npz"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([{"caption": "x"}], r"entry 0: no 'video_id'"),
        ([{"video_id": "v1"}], r"entry 0: needs a 'caption' or a 'question' and an 'answer'"),
        ([{"video_id": "nope", "caption": "x"}], r"video 'nope': no frame folder"),
        ({"videos": []}, "expected a list of entries"),
    ],
)
def test_bad_annotations_name_the_entry(tmp_path, payload, message):
    (tmp_path / "videos").mkdir()
    write_clip_npz(tmp_path / "videos" / "v1.npz", frames())
    (tmp_path / "a.json").write_text(json.dumps(payload))
    with pytest.raises(BadRecordError, match=message):
        read_video_text(tmp_path / "a.json", tmp_path / "videos")
