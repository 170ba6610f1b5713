"""caption / vqa / retrieve on clips with a mammut-video run, through the real command line
(``python -m multitower`` in a subprocess): .npz clips, frame folders and video files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from multitower.cli.main import main
from multitower.data.video_clips import ClipConfig, generate_clips
from multitower.data.video_readers import write_clip_npz

TINY = {
    "recipe": "mammut_video",
    "train": {
        "max_steps": 3, "batch_size": 8, "lr": 3.0e-3, "warmup_steps": 1, "log_every": 1,
        "ckpt_every": 0, "progress": "off", "precision": "fp32", "device": "cpu",
    },
    "model": {
        "vocab_size": 160, "d_model": 32, "num_layers": 2, "num_heads": 2, "embed_dim": 16,
        "max_seq_len": 24, "cross_attn_every": 1,
        "vision": {"image_size": 32, "patch_size": 8, "d_model": 32, "num_layers": 1, "num_heads": 2},
    },
    "video": {"encoders": ["tubes", "frames"], "frames": [4], "shuffled_control": False},
    "data": {"num_clips": 16, "eval_clips": 3, "max_text_len": 24, "clip": {"image_size": 32}},
    "eval": {"batch_size": 8, "max_caption_tokens": 6, "max_answer_tokens": 2},
}  # fmt: skip


def write_mp4(path: Path, frames: np.ndarray) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_cli")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run_dir = root / "run"
    args = ["--run-dir", str(run_dir), "--jobs", "1"]
    assert main(["mammut-video", str(root / "tiny.yaml"), *args]) == 0
    clips = root / "clips"
    clips.mkdir()
    drawn = generate_clips(3, 5, ClipConfig(image_size=32, num_frames=8))
    write_clip_npz(clips / "a.npz", drawn[0].frames)
    (clips / "b").mkdir()
    for i, frame in enumerate(drawn[1].frames):
        Image.fromarray(frame).save(clips / "b" / f"{i:03d}.png")
    write_mp4(clips / "c.mp4", drawn[2].frames)
    (clips / "broken.mp4").write_bytes(b"not a video")
    (clips / "notes.txt").write_text("ignored")
    return root, run_dir, clips


def test_caption_vqa_and_retrieve_read_every_kind_of_clip(video_run, multitower_cli):
    _, run_dir, clips = video_run
    inputs = [str(clips / n) for n in ("a.npz", "b", "c.mp4")]
    done = multitower_cli("caption", *inputs, "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == inputs
    # another system, given by name or by its own directory, with beam search
    done = multitower_cli(
        "caption", inputs[0], "--run-dir", str(run_dir / "frames_f4"), "--beam", "2"
    )
    assert done.returncode == 0 and done.stdout.startswith(inputs[0] + "\t"), done.stderr

    done = multitower_cli(
        "vqa", inputs[2], "which way does the circle move", "--run-dir", str(run_dir),
        "--system", "frames_f4",
    )  # fmt: skip
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1, done.stderr

    args = ["--run-dir", str(run_dir), "--videos", str(clips), "--text", "a red circle moves up"]
    done = multitower_cli("retrieve", *args, "--top", "3")
    assert done.returncode == 0, done.stderr
    ranked = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert sorted(Path(p).name for _, p in ranked) == ["a.npz", "b", "c.mp4"]
    scores = [float(s) for s, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    assert "broken.mp4" in done.stderr and "notes.txt" not in done.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("missing.npz", "no such clip"),
        ("short.npz", "has 2 frames but 4 are needed"),
        ("tiny", "frame 0: image is 4x4 pixels, smaller than"),
        ("empty", "no frame images"),
    ],
)
def test_bad_clips_are_named_in_the_error(video_run, tmp_path, capsys, make, message):
    _, run_dir, _ = video_run
    path = tmp_path / make
    if make == "short.npz":
        write_clip_npz(path, np.zeros((2, 32, 32, 3), dtype=np.uint8))
    elif make in ("tiny", "empty"):
        path.mkdir()
        if make == "tiny":
            for i in range(4):
                Image.new("RGB", (4, 4)).save(path / f"{i}.png")
    capsys.readouterr()
    assert main(["caption", str(path), "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err, err


def test_errors_through_the_real_command_line(video_run, multitower_cli, capsys):
    _, run_dir, clips = video_run
    done = multitower_cli(
        "vqa", str(clips / "broken.mp4"), "what colour", "--run-dir", str(run_dir)
    )
    assert done.returncode == 1
    assert "unreadable video file" in done.stderr and str(clips / "broken.mp4") in done.stderr
    capsys.readouterr()
    args = ["caption", str(clips / "a.npz"), "--run-dir", str(run_dir), "--system", "tubes_f32"]
    assert main(args) == 1
    assert "trained: frames_f4, tubes_f4" in capsys.readouterr().err
    assert main(["retrieve", "--run-dir", str(run_dir), "--images", str(clips), "--text", "a"]) == 1
    assert "give the clips with --videos" in capsys.readouterr().err
