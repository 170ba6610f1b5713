"""``multitower run``: an impossible model value is a config error before any stage runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import multitower.cli.mammut_cmd  # noqa: F401  (imported here: the timings leave out imports)
from multitower.cli.main import main
from multitower.config import build_dataclass, dump_yaml, load_config, parse_yaml, to_plain
from multitower.experiments.zipper_speech_text.config import SpeechTextConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "zipper_speech_text_tiny.yaml"
FULL = ROOT / "configs" / "zipper_speech_text.yaml"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "fusion.cross_attention_every=-1",
            "fusion.cross_attention_every=-1 must lie in [1, 2] (1 to the depth of tower",
        ),
        ("text_tower.d_model=33", "text_tower.d_model (33) must be divisible by num_heads (2)"),
        ("fusion.cross_attention_every=3", "fusion.cross_attention_every=3 must lie in [1, 2]"),
        ("recognizer.num_heads=3", "recognizer.d_model (32) must be divisible by num_heads (3)"),
        ("speech_tower.norm=batch", "speech_tower.norm must be one of"),
        ("text_tower.vocab_size=50", "text_tower.vocab_size: set by the program at run time"),
        ("eval.max_new_speech=5000", "eval.max_new_speech=5000 exceeds recognizer.max_len=2048"),
        ("finetune.batch_size=64", "finetune.batch_size=64 exceeds the 40 training examples"),
    ],
)
def test_impossible_model_value_exits_2_naming_the_key_before_any_work(
    tmp_path, capsys, override: str, expected: str
) -> None:
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    rc = main(["run", str(TINY), override, "--run-dir", str(run_dir), "--quiet"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expected in err
    assert "Traceback" not in err
    assert not run_dir.exists()  # no corpus, no units, no pre-training
    assert seconds < 2.0, f"{seconds:.2f} s"


def test_recipes_read_their_saved_config_back_unchanged(tmp_path) -> None:
    for path in (TINY, FULL):
        raw = load_config(path)
        raw.pop("experiment")
        config = build_dataclass(SpeechTextConfig, raw, "")
        saved = parse_yaml(dump_yaml(to_plain(config)), source="config.yaml")
        assert "vocab_size" not in saved["text_tower"] and "towers" not in saved["fusion"]
        assert build_dataclass(SpeechTextConfig, saved, "") == config


def test_a_run_directory_from_before_the_model_sections_still_resumes(tmp_path) -> None:
    """config.yaml as written when the tower/fusion/recogniser sections had their own fields."""
    raw = load_config(TINY)
    raw.pop("experiment")
    config = build_dataclass(SpeechTextConfig, raw, "")
    old = to_plain(config)
    tower = {"d_model": 32, "num_layers": 2, "num_heads": 2, "mlp_ratio": 4.0, "max_seq_len": 256}
    old["text_tower"] = old["speech_tower"] = tower
    old["fusion"] = {
        "cross_attention_every": 1,
        "input_projection": "residual",
        "fusion_mlp_ratio": 1.0,
    }
    old["recognizer"] = {
        "d_model": 32,
        "num_layers": 1,
        "num_heads": 2,
        "upsample": 2,
        "unit_noise": 0.1,
        "train": old["recognizer"]["train"],
    }
    assert build_dataclass(SpeechTextConfig, old, "") == config


def test_the_section_defaults_are_the_recipes_not_the_models() -> None:
    config = build_dataclass(SpeechTextConfig, {"text_tower": {"d_model": 64}}, "")
    assert config.text_tower.max_seq_len == 1024 and config.text_tower.num_layers == 4
    assert config.recognizer.num_layers == 3
    # the fusion checks run against the configured towers, not the default ones
    deep = {"num_layers": 8}
    config = build_dataclass(
        SpeechTextConfig,
        {"text_tower": deep, "speech_tower": deep, "fusion": {"cross_attention_every": 8}},
        "",
    )
    assert config.fusion.towers == {"speech": config.speech_tower, "text": config.text_tower}


MAMMUT_TINY = ROOT / "configs" / "mammut_tiny.yaml"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.num_heads=3", "model.d_model (128) must be divisible by num_heads (3)"),
        ("model.vision.patch_size=7", "model.vision.patch_size=7 must divide image_size=64"),
        ("model.cross_attn_every=0", "model.cross_attn_every must lie in [1, num_layers=4]"),
        ("data.max_text_len=100", "data.max_text_len=100 exceeds model.max_seq_len=40"),
        ("eval.max_caption_tokens=40", "eval.max_caption_tokens=40: a generated caption"),
    ],
)
def test_mammut_impossible_model_value_exits_2_before_any_work(
    tmp_path, capsys, override: str, expected: str
) -> None:
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    rc = main(["mammut", str(MAMMUT_TINY), override, "--run-dir", str(run_dir)])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expected in err
    assert not run_dir.exists()
    assert seconds < 2.0, f"{seconds:.2f} s"
