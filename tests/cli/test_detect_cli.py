"""Open-vocabulary detection through the real command line: mammut-detect, then detect; bad input."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from multitower.cli.main import main
from multitower.data.image_datasets import SceneConfig, generate_scenes

pytest.importorskip("pycocotools")

PRETRAIN = {
    "recipe": "mammut",
    "train": {"max_steps": 2, "batch_size": 8, "warmup_steps": 1, "log_every": 1, "ckpt_every": 0,
              "progress": "off", "precision": "fp32", "device": "cpu"},
    "model": {
        "vocab_size": 160, "d_model": 32, "num_layers": 2, "num_heads": 2, "embed_dim": 16,
        "max_seq_len": 32, "cross_attn_every": 2,
        "vision": {"image_size": 32, "patch_size": 8, "d_model": 32, "num_layers": 1, "num_heads": 2},
    },
    "data": {"num_scenes": 24, "eval_scenes": 0, "max_text_len": 24,
             "scene": {"image_size": 32, "max_objects": 2, "captions_per_image": 2}},
}  # fmt: skip
DETECT = {
    "variants": ["open_vocab", "closed_vocab"],
    "data": {"num_scenes": 16, "eval_scenes": 12, "scene": {"image_size": 32, "max_objects": 2}},
    "train": {"max_steps": 2, "batch_size": 8, "warmup_steps": 1, "log_every": 1, "ckpt_every": 0,
              "progress": "off", "device": "cpu"},
    "eval": {"draw_images": 2, "draw_min_score": 0.0},
}  # fmt: skip


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, multitower_cli):
    root = tmp_path_factory.mktemp("detect")
    (root / "pretrain.yaml").write_text(yaml.safe_dump(PRETRAIN))
    config = root / "detect.yaml"
    config.write_text(
        yaml.safe_dump({**DETECT, "pretrain": {"config": str(root / "pretrain.yaml")}})
    )
    run_dir = root / "run"
    done = multitower_cli(
        "mammut-detect", str(config), "--run-dir", str(run_dir), "--jobs", "1", "--threads", "1"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return config, run_dir, done.stdout


def test_mammut_detect_writes_results_pngs_and_loadable_detectors(experiment):
    _, run_dir, stdout = experiment
    assert "| open_vocab | contrastive | class-name text |" in stdout
    result = json.loads((run_dir / "results.json").read_text())
    assert set(result["variants"]) == {"open_vocab", "closed_vocab"}
    assert result["novel"] and not set(result["novel"]) & set(result["base"])
    for name in ("open_vocab", "closed_vocab"):
        metrics = result["variants"][name]["metrics"]
        assert {"ap", "ap50", "ap_novel", "ap_base"} <= set(metrics)
        assert (run_dir / "plots" / f"detections_{name}.png").stat().st_size > 0
        assert (run_dir / name / "model" / "model.safetensors").is_file()
    # the closed head cannot name a novel class (the held-out scenes hold one): novel AP 0
    assert result["variants"]["closed_vocab"]["metrics"]["ap_novel"] == 0.0
    assert (run_dir / "pretrain_contrastive" / "model" / "model.safetensors").is_file()


def test_stages_in_two_processes_give_the_sequential_results(experiment, tmp_path, multitower_cli):
    config, run_dir, _ = experiment
    parallel = tmp_path / "parallel"
    done = multitower_cli(
        "mammut-detect", str(config), "--run-dir", str(parallel), "--jobs", "2", "--threads", "2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = {
        name: {
            v: row["metrics"]
            for v, row in json.loads((d / "results.json").read_text())["variants"].items()
        }
        for name, d in (("sequential", run_dir), ("parallel", parallel))
    }
    assert metrics["parallel"] == metrics["sequential"]
    log = (parallel / "run.log").read_text()
    assert "3 stages in 2 processes (1 thread(s) each)" in log
    # the workers' own lines reach the run's log
    assert "training the closed_vocab detector" in log and "pretrain_contrastive done" in log


def test_a_rerun_reuses_the_detectors_and_keeps_their_training_time(experiment, multitower_cli):
    config, run_dir, _ = experiment
    before = json.loads((run_dir / "results.json").read_text())["variants"]
    args = ["--run-dir", str(run_dir), "--jobs", "1", "--threads", "1"]
    done = multitower_cli("mammut-detect", str(config), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((run_dir / "results.json").read_text())["variants"]
    assert "closed_vocab: reusing the detector" in (run_dir / "run.log").read_text()
    for name, row in before.items():
        assert row["train_seconds"] > 0
        assert after[name]["train_seconds"] == row["train_seconds"]
        assert after[name]["metrics"] == row["metrics"]


def test_detect_prints_and_draws_boxes_for_any_names(experiment, tmp_path, multitower_cli):
    _, run_dir, _ = experiment

    image = tmp_path / "scene.png"
    generate_scenes(1, 99, SceneConfig(image_size=32))[0].image.save(image)
    out = tmp_path / "boxes.png"
    done = multitower_cli(
        "detect", str(image), "red circle", "purple star", "--run-dir", str(run_dir),
        "-o", str(out), "--min-score", "0", "--top-k", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "\t" in line]
    assert len(lines) == 3
    name, score, box = lines[0].split("\t")
    assert name in ("red circle", "purple star") and 0 <= float(score) <= 1
    x0, y0, x1, y1 = map(float, box.split(","))
    assert 0 <= x0 <= x1 <= 32 and 0 <= y0 <= y1 <= 32
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _main(capsys, *argv: str) -> tuple[int, str]:
    """The command in this process (the error paths need no fresh interpreter)."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_bad_input_gives_a_clear_error(experiment, tmp_path, capsys):
    config, run_dir, _ = experiment
    code, err = _main(
        capsys, "detect", str(tmp_path / "missing.png"), "red circle", "--run-dir", str(run_dir)
    )
    assert code == 1 and "image not found" in err and "missing.png" in err
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    code, err = _main(capsys, "detect", str(image), "--run-dir", str(run_dir))
    assert code == 1 and "at least one" in err
    code, err = _main(capsys, "detect", str(image), "red circle", "--run-dir", str(tmp_path))
    assert code == 1 and "not a mammut-detect detector directory" in err
    novel = json.loads((run_dir / "results.json").read_text())["novel"][0]
    code, err = _main(
        capsys, "detect", str(image), novel, "--run-dir", str(run_dir / "closed_vocab")
    )
    assert code == 1 and "closed-vocabulary" in err and novel in err
    code, err = _main(capsys, "mammut-detect", str(config), "variants=[open_vocab,bogus]")
    assert code == 2 and "variants" in err and "bogus" in err
    code, err = _main(
        capsys,
        "mammut-detect",
        str(config),
        f"init_from={tmp_path}",
        "--run-dir",
        str(tmp_path / "r"),
    )
    assert code == 1 and "init_from" in err and "not a MaMMUT run directory" in err


def test_a_coco_file_with_a_box_outside_its_image_is_named(experiment, tmp_path, capsys):
    config, _, _ = experiment
    Image.new("RGB", (10, 8)).save(tmp_path / "a.png")
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 8}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 9, 2]}],
    }))  # fmt: skip
    code, err = _main(
        capsys, "mammut-detect", str(config), "data.source=coco", f"data.coco_annotations={bad}",
        f"data.coco_images={tmp_path}", f"data.eval_coco_annotations={bad}",
        f"data.eval_coco_images={tmp_path}", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 1, err
    assert "instances.json: annotations[0]: bbox [5, 5, 9, 2] lies outside" in err
