"""The command line end to end: train, config errors before any work, plot, registry."""

from __future__ import annotations

import json

import pytest
import yaml

from multitower.cli.main import COMMANDS, main
from multitower.experiments.recipes import available_recipes
from multitower.models.io import load_safetensors

CONFIG = """
recipe: toy_lm
train: {max_steps: 40, batch_size: 16, lr: 1.0e-2, warmup_steps: 5, log_every: 5, ckpt_every: 20,
        progress: "off", device: cpu}
model: {vocab_size: 13, d_model: 32, num_layers: 1, num_heads: 2, max_seq_len: 16}
data: {num_sequences: 128, seq_len: 10, eval_sequences: 32}
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(CONFIG)
    return path


def test_train_learns_writes_config_and_plots(tmp_path, config, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run), "train.seed=1"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 5 and rows[-1]["step"] == 40
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]  # the bigram rule is being learnt
    assert rows[-1]["eval/accuracy"] > 0.5
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        resolved["train"]["seed"] == 1 and resolved["train"]["clip_norm"] == 1.0
    )  # defaults filled
    assert resolved["model"]["norm"] == "rms" and resolved["recipe"] == "toy_lm"
    weights, _ = load_safetensors(run / "checkpoints" / "step_000040" / "model.safetensors")
    assert weights["embed.weight"].shape == (13, 32)
    assert "finished" in capsys.readouterr().out

    assert main(["plot", str(run)]) == 0
    for name in ("loss.png", "metrics.png"):
        png = run / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run into the same directory without --resume is refused.
    assert main(["train", str(config), "--run-dir", str(run)]) == 1
    assert "pass --resume" in capsys.readouterr().err


def test_config_errors_are_all_reported_before_any_work(tmp_path, config, capsys) -> None:
    run = tmp_path / "run"
    code = main(["train", str(config), "--run-dir", str(run),
                 "train.lr=-1", "train.bogus=1", "model.d_model=wide", "data.seq_len=2", "extra.x=1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "train.lr must be positive, got -1.0" in err
    assert "train.bogus: unknown key 'bogus' in train; allowed keys: max_steps," in err
    assert "model.d_model: expected int, got 'wide' (str)" in err
    assert "data.seq_len must be >= 3" in err
    assert "extra: unknown section 'extra'; allowed sections: recipe, train, model, data" in err
    assert not run.exists()


def test_cross_section_and_recipe_errors(tmp_path, config, capsys) -> None:
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "data.seq_len=40"]) == 2
    assert "data.seq_len=40: the model reads seq_len - 1 tokens" in capsys.readouterr().err
    assert main(["train", str(config), "recipe=nope"]) == 2
    assert "recipe: unknown recipe 'nope'; available: " in capsys.readouterr().err


def test_plot_without_metrics_is_a_clean_error(tmp_path, capsys) -> None:
    assert main(["plot", str(tmp_path)]) == 1
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_registries_list_the_builtins() -> None:
    assert {"train", "plot"} <= set(COMMANDS)
    assert "toy_lm" in available_recipes()
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_progress_off_override_and_a_directory_as_config(tmp_path, config, multitower_cli) -> None:
    done = multitower_cli(
        "train", str(config), "train.progress=off", "train.max_steps=5", "train.ckpt_every=5",
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "progress: 'off'" in (tmp_path / "run" / "config.yaml").read_text()
    # RUN_DIR/run.log, as `multitower run` writes it: the progress lines whatever the
    # mode, and the final line; a resumed run appends to it
    log = (tmp_path / "run" / "run.log").read_text().splitlines()
    assert "] train run: 5/5 (100%) | loss " in log[0]
    assert "] finished " in log[-1] and " at step 5: " in log[-1]
    done = multitower_cli(
        "train", str(config), "train.progress=off", "train.max_steps=8", "train.ckpt_every=5",
        "--run-dir", str(tmp_path / "run"), "--resume",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "run.log").read_text().splitlines()
    assert "] train run: 5/5 (100%) | loss " in log[0] and "] resumed " in log[2]
    assert "] train run: 8/8 (100%) | loss " in log[3] and " at step 8: " in log[-1]
    done = multitower_cli("train", str(tmp_path))
    assert done.returncode == 2
    assert f"config file {tmp_path} is a directory; give the path of a YAML file" in done.stderr


def test_training_progress_in_a_log_file_is_plain_lines(tmp_path, config, multitower_cli) -> None:
    # stderr is a pipe here, as in `multitower train ... > log 2>&1`
    done = multitower_cli(
        "train", str(config), "train.progress=auto", "--run-dir", str(tmp_path / "run"),
        env={"MULTITOWER_LOG_INTERVAL": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = [x for x in done.stderr.splitlines() if "train run: " in x]
    assert len(lines) >= 40  # one per step at interval 0, and a last one
    assert "train run: 40/40 (100%) | loss " in lines[-1] and " steps/s | ETA 0:00" in lines[-1]
    assert "train run: 20/40 (50%)" in "\n".join(lines)


def test_metric_panels_have_readable_titles() -> None:
    from multitower.cli.plot_cmd import metric_label

    assert metric_label("tokens_per_s") == "throughput (tokens / s)"
    assert metric_label("eval/valid_loss") == "held-out: valid loss"
    assert metric_label("caption_loss") == "caption loss"
