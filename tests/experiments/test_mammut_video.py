"""The mammut-video recipe end to end on tiny settings: every system trained and evaluated,
results and plots written, resumed without retraining, and started from an image run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from multitower.cli.main import main
from multitower.data.images import ImageTransform
from multitower.data.video_clips import ClipConfig, generate_clip
from multitower.data.video_readers import load_clip, write_clip_npz
from multitower.experiments.mammut.run import load_run
from multitower.experiments.mammut_video.data import frames_to_clip, normalize_clip
from multitower.experiments.mammut_video.evaluate import shuffled_frames
from multitower.experiments.mammut_video.run import (
    initial_model,
    resolve_video_config,
    starting_point,
)
from multitower.models.video import TubeSpec, tube_tokens

ROOT = Path(__file__).resolve().parents[2]
VISION = {"image_size": 32, "patch_size": 8, "d_model": 32, "num_layers": 1, "num_heads": 2}
TINY = {
    "recipe": "mammut_video",
    "train": {
        "max_steps": 6, "batch_size": 8, "lr": 3.0e-3, "warmup_steps": 1, "log_every": 1,
        "ckpt_every": 3, "progress": "off", "precision": "fp32", "device": "cpu",
    },
    "model": {
        "vocab_size": 160, "d_model": 32, "num_layers": 2, "num_heads": 2, "embed_dim": 16,
        "max_seq_len": 24, "cross_attn_every": 1, "vision": VISION,
    },
    "video": {"encoders": ["tubes", "frames"], "frames": [4, 6]},
    "data": {"num_clips": 24, "eval_clips": 5, "max_text_len": 24, "clip": {"image_size": 32}},
    "eval": {"batch_size": 8, "max_caption_tokens": 6, "max_answer_tokens": 2},
}  # fmt: skip
SYSTEMS = ["tubes_f4", "frames_f4", "tubes_f6", "frames_f6"]


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run_dir = root / "run"
    args = ["--run-dir", str(run_dir), "--jobs", "1", "--threads", "1"]
    assert main(["mammut-video", str(config), *args]) == 0
    return config, run_dir


def test_every_system_is_trained_evaluated_and_tabled(video_run):
    _, run_dir = video_run
    result = json.loads((run_dir / "results.json").read_text())
    assert list(result["systems"]) == SYSTEMS
    for name, system in result["systems"].items():
        m = system["metrics"]
        for key in ("vqa_accuracy", "vqa_motion_accuracy", "i2t_r1", "t2i_r10"):
            assert 0.0 <= m[key] <= 1.0, (name, key)
        assert m["greedy_cider"] >= 0.0 and m["encoder_ms_per_clip"] > 0.0
        # every question is either order-dependent or not, and both kinds are asked
        assert m["vqa_motion_questions"] + m["vqa_static_questions"] == m["vqa_questions"]
        assert m["vqa_motion_questions"] > 0 and m["vqa_static_questions"] > 0
        assert system["baselines"]["chance_t2i_r1"] == pytest.approx(1 / 5)
        rows = [json.loads(x) for x in (run_dir / name / "train" / "metrics.jsonl").open()]
        assert rows[-1]["step"] == 6
        assert (run_dir / name / "model" / "hashes.json").is_file()
    systems = result["systems"]
    # the same ViT: a per-frame clip is F sequences of (32 / 8)^2 tokens
    assert systems["frames_f6"]["metrics"]["video_tokens"] == 6 * 16
    assert (
        systems["tubes_f4"]["metrics"]["video_tokens"]
        < systems["frames_f4"]["metrics"]["video_tokens"] + 64
    )
    table = (run_dir / "results.md").read_text()
    assert table.count("\n| tubes |") == 2 and table.count("\n| frames |") == 2
    assert "order-dependent VQA (%)" in table
    for name in ("metrics.png", "encoder_time.png", "training.png"):
        assert (run_dir / "plots" / name).stat().st_size > 1000
    log = (run_dir / "run.log").read_text()
    assert "training frames_f6" in log and "evaluating tubes_f4" in log


def _measured(run_dir):
    """Every system's metrics except the timings."""
    systems = json.loads((run_dir / "results.json").read_text())["systems"]
    return {
        name: {k: v for k, v in s["metrics"].items() if "ms" not in k and "seconds" not in k}
        for name, s in systems.items()
    }


def test_systems_in_two_processes_give_the_sequential_results(video_run, tmp_path, multitower_cli):
    config, run_dir = video_run
    parallel = tmp_path / "parallel"
    args = ["--run-dir", str(parallel), "--jobs", "2", "--threads", "2"]
    done = multitower_cli("mammut-video", str(config), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _measured(parallel) == _measured(run_dir)
    stages = json.loads((parallel / "stages.json").read_text())
    assert {f"{what} {name}" for name in SYSTEMS for what in ("train", "eval")} <= set(stages)
    log = (parallel / "run.log").read_text()
    assert "4 systems in 2 processes (1 thread(s) each)" in log
    assert "training frames_f6" in log and "evaluating tubes_f4" in log  # the workers' lines
    # with their stage's place: train and eval of each system in SYSTEMS order
    assert "(stage 7 of 8) training frames_f6" in log
    assert "(stage 2 of 8) evaluating tubes_f4" in log


def test_rerun_resumes_instead_of_retraining(video_run, capsys):
    config, run_dir = video_run
    before = (run_dir / "tubes_f4" / "train" / "metrics.jsonl").read_text()
    stages = json.loads((run_dir / "stages.json").read_text())
    # forget that one system was trained and evaluated: it resumes from its last checkpoint
    del stages["train frames_f6"], stages["eval frames_f6"]
    (run_dir / "stages.json").write_text(json.dumps(stages))
    args = ["--run-dir", str(run_dir), "--jobs", "1", "--threads", "1"]
    assert main(["mammut-video", str(config), *args]) == 0
    log = (run_dir / "run.log").read_text()
    assert "(stage 7 of 8)   resumed frames_f6 at step 6" in log
    # its evaluation's own place, though its training is not yet marked finished
    assert "(stage 8 of 8) evaluating frames_f6" in log
    assert log.count("training tubes_f4") == 1  # finished systems are not trained again
    assert (run_dir / "tubes_f4" / "train" / "metrics.jsonl").read_text() == before
    capsys.readouterr()
    assert main(["mammut-video", str(config), "train.max_steps=7", "--run-dir", str(run_dir)]) == 1
    assert "started with another config" in capsys.readouterr().err


def test_bad_configs_are_refused_by_name(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    bad = {**TINY, "video": {"frames": [4], "tubes": [{"kernel": [8, 8, 8], "stride": [1, 8, 8]}]}}
    config.write_text(yaml.safe_dump(bad))
    assert main(["mammut-video", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    assert "tubes[0] needs 8 frames" in capsys.readouterr().err
    assert main(["mammut-video", str(config), "video.tubes=null", "data.clip.image_size=48"]) == 2
    assert "must equal model.vision.image_size=32" in capsys.readouterr().err


def test_init_from_an_image_run_copies_it_into_every_system(tmp_path, capsys):
    image_cfg = {
        "recipe": "mammut",
        "train": {**TINY["train"], "max_steps": 2},
        "model": {**TINY["model"], "max_seq_len": 40, "vision": {**VISION, "image_size": 32}},
        "data": {"num_scenes": 16, "eval_scenes": 2, "max_text_len": 24,
                 "scene": {"image_size": 32, "max_objects": 2}},
        "eval": {"batch_size": 4, "max_caption_tokens": 6, "max_answer_tokens": 2},
    }  # fmt: skip
    (tmp_path / "image.yaml").write_text(yaml.safe_dump(image_cfg))
    image_dir = tmp_path / "image"
    args = ["mammut", str(tmp_path / "image.yaml"), "--run-dir", str(image_dir), "--no-beam"]
    assert main(args) == 0
    cfg = resolve_video_config({**TINY, "video": {"frames": [4], "init_from": str(image_dir)}})
    start = starting_point(cfg)
    image = load_run(image_dir).model
    assert start.tokenizer is not None and start.model_config == image.config
    model = initial_model(start, cfg.video_config("tubes", 4), seed=0)
    for name, value in image.state_dict().items():
        assert torch.equal(model.state_dict()[f"mammut.{name}"], value), name
    # a one-frame clip through the 1 x p x p tube is the image model's patch tokens
    frame = torch.randn(2, 3, 32, 32)
    embed = model.mammut.vision.patch_embed
    with torch.no_grad():
        ours = tube_tokens(
            frame.unsqueeze(1), embed.weight, embed.bias, (TubeSpec((1, 8, 8), (1, 8, 8)),)
        )
        theirs = image.vision.patch_embed(frame).flatten(2).transpose(1, 2)
    assert torch.equal(ours, theirs)
    # and the whole recipe runs from it (its model section is not used)
    video_cfg = {**TINY, "model": {"vocab_size": 999}, "video": {"frames": [4], "encoders": ["tubes"], "init_from": str(image_dir)}}  # fmt: skip
    (tmp_path / "video.yaml").write_text(yaml.safe_dump(video_cfg))
    args = ["mammut-video", str(tmp_path / "video.yaml"), "train.max_steps=2"]
    assert main([*args, "--run-dir", str(tmp_path / "video")]) == 0
    result = json.loads((tmp_path / "video" / "results.json").read_text())
    assert result["init_from"] == str(image_dir) and result["model"]["vocab_size"] == 160
    # a question that cannot be answered within the image model's max_seq_len is refused
    # before any training (the image tokenizer spells the video questions letter by letter)
    capsys.readouterr()
    bad = [*args, "eval.max_answer_tokens=30", "--run-dir", str(tmp_path / "long")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "eval.max_answer_tokens=30" in err and "exceeds model.max_seq_len=40" in err
    assert "video.init_from" in err and not (tmp_path / "long" / "tubes_f4").exists()
    assert (tmp_path / "video" / "tokenizer.json").read_text() == (
        image_dir / "tokenizer.json"
    ).read_text()


def test_a_generated_clip_on_disk_reads_back_as_the_training_tensor(tmp_path):
    clip = generate_clip(3, 0, ClipConfig(image_size=32, num_frames=6))
    write_clip_npz(tmp_path / "c.npz", clip.frames)
    transform = ImageTransform(image_size=32)
    trained_on = normalize_clip(frames_to_clip(clip.frames), transform)
    torch.testing.assert_close(load_clip(tmp_path / "c.npz", 6, transform), trained_on)


def test_shuffled_frames_is_a_new_order_of_the_same_frames():
    clips = torch.arange(5 * 4).float().view(5, 4, 1, 1, 1).expand(5, 4, 3, 2, 2)
    out = shuffled_frames(clips, seed=0)
    for i in range(5):
        order = out[i, :, 0, 0, 0]
        assert sorted(order.tolist()) == clips[i, :, 0, 0, 0].tolist()
        assert not torch.equal(order, clips[i, :, 0, 0, 0])


def test_clips_on_disk_in_the_msrvtt_layout(tmp_path):
    from multitower.data.video_clips import generate_clips
    from multitower.data.video_readers import write_msrvtt_style

    clip_cfg = ClipConfig(image_size=32, num_frames=8)
    train = write_msrvtt_style(generate_clips(12, 0, clip_cfg), tmp_path / "train")
    held_out = write_msrvtt_style(generate_clips(4, 1, clip_cfg), tmp_path / "eval")
    data = {
        "source": "files", "max_text_len": 24,
        "annotations": str(train), "videos": str(tmp_path / "train" / "videos"),
        "eval_annotations": str(held_out), "eval_videos": str(tmp_path / "eval" / "videos"),
    }  # fmt: skip
    raw = {**TINY, "data": data, "video": {"frames": [4], "encoders": ["frames"]}}
    raw["train"] = {**TINY["train"], "max_steps": 2}
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(raw))
    assert (
        main(["mammut-video", str(tmp_path / "files.yaml"), "--run-dir", str(tmp_path / "r")]) == 0
    )
    result = json.loads((tmp_path / "r" / "results.json").read_text())
    metrics = result["systems"]["frames_f4"]["metrics"]
    # the needs_order flags travel through the annotation file
    assert metrics["vqa_motion_questions"] > 0 and metrics["vqa_static_questions"] > 0
    assert result["systems"]["frames_f4"]["eval_clips"] == 4
