"""Saving and loading models: round trips, wrong model types, mismatched shapes."""

from __future__ import annotations

import json
import re

import pytest
import torch

from multitower.models.baseline import expand_vocabulary
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.pretrained import load_pretrained, save_pretrained
from multitower.models.zipper import Zipper, ZipperConfig

TEXT = DecoderConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4)
SPEECH = DecoderConfig(vocab_size=30, d_model=16, num_layers=2, num_heads=2)


@pytest.mark.parametrize(
    "build",
    [
        lambda: DecoderTower(TEXT),
        lambda: Zipper(ZipperConfig({"text": TEXT, "speech": SPEECH}, input_projection="paper")),
        lambda: expand_vocabulary(DecoderTower(TEXT), "text", {"speech": 30}),
    ],
    ids=["tower", "zipper", "baseline"],
)
def test_round_trip(tmp_path, build):
    torch.manual_seed(0)
    model = build()
    save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m", type(model))
    assert loaded.config == model.config
    if hasattr(model, "modalities"):  # the id layout survives (dict order carries offsets)
        assert loaded.modalities == model.modalities
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    tokens = torch.randint(3, 30, (2, 5))
    if isinstance(model, DecoderTower):
        torch.testing.assert_close(loaded(tokens), model(tokens))


def test_pretrained_tower_loads_into_zipper_with_its_own_key_names(tmp_path):
    torch.manual_seed(0)
    tower = DecoderTower(TEXT)
    save_pretrained(tower, tmp_path / "text")
    z = Zipper(ZipperConfig({"text": TEXT, "speech": SPEECH}))
    z.load_tower("text", load_pretrained(tmp_path / "text", DecoderTower))
    for k, v in tower.state_dict().items():
        assert torch.equal(z.state_dict()[f"towers.text.{k}"], v)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    save_pretrained(DecoderTower(TEXT), tmp_path / "tower")
    with pytest.raises(ValueError, match="holds a 'DecoderTower' checkpoint, expected 'Zipper'"):
        load_pretrained(tmp_path / "tower", Zipper)


def test_weights_that_do_not_match_the_config_are_listed(tmp_path):
    save_pretrained(DecoderTower(TEXT), tmp_path / "tower")
    cfg = json.loads((tmp_path / "tower" / "config.json").read_text())
    cfg["vocab_size"] = 41
    cfg["num_layers"] = 1
    (tmp_path / "tower" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path / "tower")
    msg = str(err.value)
    assert "shape mismatch for 'embed.weight': model expects [41, 32], found [40, 32]" in msg
    assert "unexpected key 'blocks.1.attn.q_proj.weight'" in msg


def test_flipped_bytes_in_the_weights_are_detected(tmp_path):
    save_pretrained(DecoderTower(TEXT), tmp_path / "tower")
    manifest_data = json.loads((tmp_path / "tower" / "hashes.json").read_text())
    assert list(manifest_data["sha256"]) == ["model.safetensors"]
    path = tmp_path / "tower" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor's data: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: SHA-256 .* differs"):
        load_pretrained(tmp_path / "tower")
    # deleting the manifest does not turn the check off: the load is refused by name
    (tmp_path / "tower" / "hashes.json").unlink()
    manifest = re.escape(str(tmp_path / "tower" / "hashes.json"))
    with pytest.raises(FileNotFoundError, match=rf"^{manifest} is missing: it records"):
        load_pretrained(tmp_path / "tower")
    # a manifest that does not list the weights is refused too
    (tmp_path / "tower" / "hashes.json").write_text(json.dumps({**manifest_data, "sha256": {}}))
    with pytest.raises(ValueError, match=r"hashes\.json does not list model\.safetensors"):
        load_pretrained(tmp_path / "tower")


def test_unknown_config_key_and_missing_files(tmp_path):
    save_pretrained(DecoderTower(TEXT), tmp_path / "tower")
    cfg = json.loads((tmp_path / "tower" / "config.json").read_text())
    cfg["n_embd"] = 3
    (tmp_path / "tower" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"DecoderTower: n_embd: unknown key 'n_embd'"):
        load_pretrained(tmp_path / "tower")
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path / "nowhere")
