"""Loading a speech-text run for ``asr`` / ``tts``: a bad piece is a clean error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multitower.cli.main import main
from multitower.data.speech.units import SpeechUnitTokenizer
from multitower.data.speech_config import UnitConfig
from multitower.data.tokenizer import TextTokenizer


def _run_dir(root: Path) -> Path:
    """The files of a finished run's ``inference.json``, tokenizers real, model a stub
    (the tokenizers are read first)."""
    run = root / "run"
    TextTokenizer.characters(["the red bird"]).save(run / "text" / "tokenizer.json")
    cfg = UnitConfig(codebook_size=4)
    SpeechUnitTokenizer(
        cfg,
        torch.randn(cfg.codebook_size, cfg.feature_dim),
        torch.zeros(cfg.feature_dim),
        torch.ones(cfg.feature_dim),
    ).save(run / "units" / "tokenizer")
    (run / "finetune" / "zipper_1" / "model").mkdir(parents=True)
    manifest = {
        "text_tokenizer": "text/tokenizer.json",
        "unit_tokenizer": "units/tokenizer",
        "models": {"zipper_1": "finetune/zipper_1/model"},
        "default_model": "zipper_1",
    }
    (run / "inference.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize("command", ["asr", "tts"])
def test_a_corrupted_tokenizer_is_an_error_naming_the_file(tmp_path, capsys, command) -> None:
    run = _run_dir(tmp_path)
    args = {
        "asr": ["asr", str(tmp_path / "x.wav")],
        "tts": ["tts", "hello", "-o", str(tmp_path / "o.wav")],
    }
    text_path = run / "text" / "tokenizer.json"
    good = text_path.read_text()
    text_path.write_text(good.replace('"d"', '"D"', 1))  # an edit: the hash no longer fits
    assert main([*args[command], "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"multitower {command}: error: cannot load the text tokenizer: {text_path}: " in err
    assert "SHA-256 differs" in err

    text_path.write_text(good)
    tensors = run / "units" / "tokenizer" / "unit_tokenizer.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the centroids
    tensors.write_bytes(bytes(data))
    assert main([*args[command], "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"multitower {command}: error: cannot load the unit tokenizer: {tensors}: " in err
    assert "SHA-256 differs" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beams", "0"], "--beams must be >= 1, got 0"),
        (["--beams", "4", "--temperature", "0.7"], "drop --temperature"),
        (["--length-penalty", "-1"], "--length-penalty must be >= 0"),
    ],
)
def test_tts_decoding_flags_are_checked_before_loading(tmp_path, capsys, flags, message) -> None:
    # no run directory at all: the flags are refused before anything is read
    out = tmp_path / "o.wav"
    code = main(["tts", "hello", "-o", str(out), "--run-dir", str(tmp_path / "none"), *flags])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_tts_decoding_defaults_to_four_beams_and_samples_with_one() -> None:
    import argparse

    from multitower.cli.tts_cmd import decoding_beams

    def beams(**kw):
        ns = {"beams": None, "temperature": 0.0, "length_penalty": 1.0} | kw
        return decoding_beams(argparse.Namespace(**ns))

    assert beams() == 4
    assert beams(beams=1) == 1
    assert beams(temperature=0.7) == 1
    assert beams(temperature=0.7, beams=1) == 1
