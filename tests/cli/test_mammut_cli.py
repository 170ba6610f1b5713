"""MaMMUT end to end through the real CLI: train + evaluate, then caption / retrieve / vqa."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from multitower.cli.main import main
from multitower.data.image_datasets import SceneConfig, generate_scenes

TINY = {
    "recipe": "mammut",
    "train": {
        "max_steps": 8, "batch_size": 16, "lr": 3.0e-3, "warmup_steps": 1, "log_every": 1,
        "ckpt_every": 0, "progress": "off", "precision": "fp32", "device": "cpu",
    },
    "model": {
        "vocab_size": 160, "d_model": 32, "num_layers": 2, "num_heads": 2, "embed_dim": 16,
        "max_seq_len": 32, "cross_attn_every": 2,
        "vision": {"image_size": 16, "patch_size": 4, "d_model": 32, "num_layers": 1, "num_heads": 2},
    },
    "data": {
        "num_scenes": 48, "eval_scenes": 6, "max_text_len": 24, "vqa_fraction": 0.5,
        "scene": {"image_size": 32, "max_objects": 2, "captions_per_image": 3, "questions_per_image": 2},
    },
    "loss": {"caption_weight": 2.0, "contrastive_weight": 1.0},
    "eval": {"batch_size": 4, "beam_size": 2, "max_caption_tokens": 8, "max_answer_tokens": 3},
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mammut")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run_dir = root / "run"
    assert main(["mammut", str(config), "--run-dir", str(run_dir)]) == 0
    images = root / "images"
    images.mkdir()
    for i, scene in enumerate(generate_scenes(3, 9, SceneConfig(image_size=32))):
        scene.image.save(images / f"{i}.png")
    (images / "broken.png").write_bytes(b"not an image")
    return root, run_dir, images


def test_train_and_evaluate_writes_results(trained):
    _, run_dir, _ = trained
    result = json.loads((run_dir / "results.json").read_text())
    metrics = result["metrics"]
    for key in ("i2t_r1", "t2i_r10", "greedy_bleu4", "greedy_cider", "beam_cider", "vqa_accuracy"):
        assert 0.0 <= metrics[key] <= (10.0 if "cider" in key else 1.0)
    assert result["baselines"]["chance_t2i_r10"] == 1.0  # 6 images: R@10 is always a hit
    assert result["baselines"]["chance_t2i_r1"] == pytest.approx(1 / 6)
    assert "question_prior_vqa_accuracy" in result["baselines"]
    by_type = result["vqa_by_question"].values()
    assert sum(v["questions"] for v in by_type) == metrics["vqa_questions"]
    table = (run_dir / "results.md").read_text()
    assert "| retrieval image -> text |" in table
    # the metric is CIDEr-D, and the table calls it so, as the README does
    assert "| captioning, greedy | BLEU-4 / CIDEr-D |" in table
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| captioning, greedy | BLEU-4 / CIDEr-D |" in readme
    for name in ("training.png", "evaluation.png"):
        assert (run_dir / "plots" / name).stat().st_size > 1000
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]  # the joint loss goes down
    assert {"caption_loss", "contrastive_loss", "logit_scale"} <= set(rows[-1])
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "model" / "config.json").is_file()


def test_caption_retrieve_and_vqa_commands(trained, capsys):
    _, run_dir, images = trained
    capsys.readouterr()
    assert (
        main(["caption", str(images / "0.png"), str(images / "1.png"), "--run-dir", str(run_dir)])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(images / "0.png") + "\t")
    assert main(["caption", str(images / "0.png"), "--beam", "2", "--run-dir", str(run_dir)]) == 0
    assert capsys.readouterr().out.startswith(str(images / "0.png"))

    assert main(["retrieve", "--run-dir", str(run_dir), "--images", str(images), "--text", "a red circle", "--top", "2"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    scores = [float(line.split("\t")[0]) for line in captured.out.strip().splitlines()]
    assert len(scores) == 2 and scores[0] >= scores[1]
    assert "broken.png" in captured.err  # the unreadable file is reported and skipped

    assert (
        main(
            ["vqa", str(images / "2.png"), "How many shapes are there?", "--run-dir", str(run_dir)]
        )
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_commands_report_bad_input(trained, capsys):
    root, run_dir, images = trained
    assert main(["caption", str(images / "missing.png"), "--run-dir", str(run_dir)]) == 1
    assert "image not found" in capsys.readouterr().err
    assert main(["caption", str(images / "broken.png"), "--run-dir", str(run_dir)]) == 1
    assert "cannot decode image" in capsys.readouterr().err
    assert main(["vqa", str(images / "0.png"), "what is 日", "--run-dir", str(run_dir)]) == 1
    assert "never saw" in capsys.readouterr().err
    assert main(["retrieve", "--run-dir", str(root), "--images", str(images), "--text", "x"]) == 1
    assert "not a run directory" in capsys.readouterr().err
    assert main(["mammut", str(root / "tiny.yaml"), "model.cross_attn_every=9"]) == 2
    assert "cross_attn_every must lie in" in capsys.readouterr().err
    tokenizer = run_dir / "tokenizer.json"
    good = tokenizer.read_text()
    try:  # a changed tokenizer is an error line naming it, not a traceback
        tokenizer.write_text(good.replace('"vocab": {', '"vocab": {"zz": 99999, ', 1))
        assert main(["caption", str(images / "0.png"), "--run-dir", str(run_dir)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and "SHA-256 differs" in err
        assert f"error: cannot load the tokenizer: {tokenizer}: " in err
    finally:
        tokenizer.write_text(good)


def test_generic_train_command_runs_the_recipe(tmp_path, capsys):
    """``multitower train`` drives the same recipe (here with the focal contrastive loss);
    the run's tokenizer is rebuilt when the run is loaded."""
    config = tmp_path / "tiny.yaml"
    focal = {**TINY, "train": {**TINY["train"], "max_steps": 2}, "loss": {"contrastive": "focal"}}
    config.write_text(yaml.safe_dump(focal))
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 0
    assert "eval/i2t_r1" in (run_dir / "metrics.jsonl").read_text()
    image = tmp_path / "scene.png"
    generate_scenes(1, 3, SceneConfig(image_size=32))[0].image.save(image)
    capsys.readouterr()
    assert main(["caption", str(image), "--run-dir", str(run_dir)]) == 0
    assert capsys.readouterr().out.startswith(str(image))
