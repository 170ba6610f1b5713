"""The model registry: every saved model type round-trips, also in a fresh process; clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import multitower
from multitower.config import ConfigError
from multitower.models.baseline import expand_vocabulary
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.detection import DetectionHeadConfig, MaMMUTDetector, MaMMUTDetectorConfig
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.pretrained import MODEL_TYPES, load_pretrained, save_pretrained
from multitower.models.unit_recognizer import UnitRecognizer, UnitRecognizerConfig
from multitower.models.video import MaMMUTVideo, MaMMUTVideoConfig, TubeSpec, VideoConfig
from multitower.models.vit import ViTConfig
from multitower.models.zipper import Zipper, ZipperConfig

TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=16, num_layers=2, num_heads=2)
MAMMUT = MaMMUTConfig(
    vocab_size=40, d_model=32, num_layers=3, num_heads=4, embed_dim=16, max_seq_len=16,
    vision=ViTConfig(image_size=16, patch_size=4, d_model=24, num_layers=2, num_heads=2),
    cross_attn_layers=(0, 2), norm="layer",
)  # fmt: skip
RECOGNIZER = UnitRecognizerConfig(
    unit_vocab_size=30, num_chars=12, d_model=32, num_layers=2, num_heads=4, upsample=3
)

# One tiny model per registered type; a type added to MODEL_TYPES without one fails below.
BUILDERS = {
    "DecoderTower": lambda: DecoderTower(TEXT),
    "Zipper": lambda: Zipper(
        ZipperConfig({"text": TEXT, "speech": SPEECH}, pair_intervals={"text<-speech": 1})
    ),
    "VocabExpansionLM": lambda: expand_vocabulary(DecoderTower(TEXT), "text", {"speech": 30}),
    "MaMMUT": lambda: MaMMUT(MAMMUT),
    "MaMMUTDetector": lambda: MaMMUTDetector(
        MaMMUTDetectorConfig(MAMMUT, DetectionHeadConfig(box_hidden=8, class_table=3))
    ),
    "MaMMUTVideo": lambda: MaMMUTVideo(
        MaMMUTVideoConfig(
            MAMMUT, VideoConfig(num_frames=4, tubes=(TubeSpec((2, 8, 8), (2, 8, 8)),))
        )
    ),
    "UnitRecognizer": lambda: UnitRecognizer(RECOGNIZER),
}


def test_every_registered_type_has_a_round_trip_test_and_is_keyed_by_its_class_name():
    assert set(BUILDERS) == set(MODEL_TYPES)
    for name, (cls, _config_cls) in MODEL_TYPES.items():
        assert cls.__name__ == name  # save_model writes type(model).__name__


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_every_saved_type_round_trips(tmp_path, model_type):
    torch.manual_seed(0)
    model = BUILDERS[model_type]()
    with torch.no_grad():  # not the init, so a load that re-initialises would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_pretrained(model, tmp_path / "m")
    torch.manual_seed(1)  # another seed: the loaded values must come from the file
    loaded = load_pretrained(tmp_path / "m")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert list(loaded.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    again = load_pretrained(tmp_path / "m", type(model))  # with the expected class
    assert again.config == model.config


def _params_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_load_pretrained_works_in_a_fresh_process(tmp_path):
    """Regression: MaMMUT used to register itself on import, so a fresh process
    that imported only ``multitower.models.pretrained`` could not load it."""
    torch.manual_seed(0)
    models = {"mammut": MaMMUT(MAMMUT), "recognizer": UnitRecognizer(RECOGNIZER)}
    for name, model in models.items():
        save_pretrained(model, tmp_path / name)
    code = (
        "import json, sys\n"
        "from multitower.models.pretrained import load_pretrained\n"
        "out = {}\n"
        "for name in ('mammut', 'recognizer'):\n"
        "    m = load_pretrained(sys.argv[1] + '/' + name)\n"
        "    out[name] = [type(m).__name__, float(sum(p.double().sum() for p in m.parameters()))]\n"
        "print(json.dumps(out))\n"
    )
    src = str(Path(multitower.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["mammut"][0] == "MaMMUT"
    assert got["recognizer"][0] == "UnitRecognizer"
    for name, model in models.items():
        assert got[name][1] == pytest.approx(_params_checksum(model), rel=1e-12)


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_unknown_model_type_lists_the_known_ones(tmp_path):
    save_pretrained(DecoderTower(TEXT), tmp_path / "m")
    _edit_config(tmp_path / "m", model_type="GPT5")
    with pytest.raises(ConfigError) as err:
        load_pretrained(tmp_path / "m")
    msg = str(err.value)
    assert "model_type 'GPT5' is not known" in msg
    assert "known model types: " + ", ".join(sorted(MODEL_TYPES)) in msg
    assert str(tmp_path / "m" / "config.json") in msg


def test_a_config_json_with_a_bad_field_names_the_field(tmp_path):
    torch.manual_seed(0)
    save_pretrained(UnitRecognizer(RECOGNIZER), tmp_path / "rec")
    _edit_config(tmp_path / "rec", num_layers="two")
    with pytest.raises(ConfigError, match=r"UnitRecognizer: num_layers: expected int, got 'two'"):
        load_pretrained(tmp_path / "rec")

    save_pretrained(MaMMUT(MAMMUT), tmp_path / "mammut")
    vision = json.loads((tmp_path / "mammut" / "config.json").read_text())["vision"]
    _edit_config(tmp_path / "mammut", vision={**vision, "patch_sise": 4})
    with pytest.raises(ConfigError, match=r"MaMMUT: vision\.patch_sise: unknown key 'patch_sise'"):
        load_pretrained(tmp_path / "mammut")

    save_pretrained(BUILDERS["Zipper"](), tmp_path / "zipper")
    towers = json.loads((tmp_path / "zipper" / "config.json").read_text())["towers"]
    towers["speech"].pop("d_model")
    _edit_config(tmp_path / "zipper", towers=towers)
    with pytest.raises(ConfigError, match=r"Zipper: towers\.speech\.d_model: missing required key"):
        load_pretrained(tmp_path / "zipper")


def _int_paths(node: dict, prefix: tuple = ()) -> list[tuple]:
    """Key paths of every int in a nested config dict."""
    paths = []
    for key, value in node.items():
        if isinstance(value, dict):
            paths += _int_paths(value, (*prefix, key))
        elif type(value) is int:
            paths.append((*prefix, key))
    return paths


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_every_int_field_given_as_a_string_is_named(tmp_path, model_type):
    save_pretrained(BUILDERS[model_type](), tmp_path / "m")
    text = (tmp_path / "m" / "config.json").read_text()
    paths = _int_paths(json.loads(text))
    assert len(paths) >= 3, model_type
    for path in paths:  # e.g. d_model: "128", towers.speech.num_heads: "2"
        cfg = json.loads(text)
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = str(node[path[-1]])
        (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
        dotted = re.escape(".".join(path))
        with pytest.raises(ConfigError, match=rf"{model_type}: {dotted}: expected int, got '"):
            load_pretrained(tmp_path / "m")


def test_invalid_values_are_reported_with_the_config_checks_message(tmp_path):
    save_pretrained(MaMMUT(MAMMUT), tmp_path / "m")
    _edit_config(tmp_path / "m", cross_attn_layers=[0, 7])
    with pytest.raises(ConfigError, match=r"config\.json: MaMMUT: cross_attn_layers must be"):
        load_pretrained(tmp_path / "m")
