"""Model configs built in Python check their numeric fields' types, as a config file's
values are checked: the error names the class, the field and the value."""

from __future__ import annotations

from dataclasses import replace

import pytest

from multitower.models.decoder_config import DecoderConfig
from multitower.models.detection_config import DetectionHeadConfig
from multitower.models.mammut import MaMMUTConfig
from multitower.models.unit_recognizer_config import UnitRecognizerConfig
from multitower.models.vit import ViTConfig
from multitower.models.zipper_config import ZipperConfig

TOWER = DecoderConfig(vocab_size=16, d_model=8, num_layers=2, num_heads=2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("d_model", "128", r"DecoderConfig\.d_model must be an int, got '128' \(str\)"),
        ("num_heads", 2.0, r"DecoderConfig\.num_heads must be an int, got 2\.0 \(float\)"),
        ("d_model", True, r"DecoderConfig\.d_model must be an int, got True \(bool\)"),
        ("eos_id", None, r"DecoderConfig\.eos_id must be an int, got None \(NoneType\)"),
        ("mlp_ratio", "4", r"DecoderConfig\.mlp_ratio must be a number, got '4' \(str\)"),
        ("rope_base", False, r"DecoderConfig\.rope_base must be a number, got False \(bool\)"),
    ],
)
def test_decoder_config_refuses_a_wrong_type_by_field_and_value(field, value, message) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        replace(TOWER, **{field: value})


def test_an_int_is_a_number_for_a_float_field() -> None:
    assert replace(TOWER, mlp_ratio=2, rope_base=500).mlp_hidden == 16


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ZipperConfig({"a": TOWER, "b": TOWER}, cross_attention_every=True),
            r"ZipperConfig\.cross_attention_every must be an int, got True \(bool\)",
        ),
        (
            lambda: ZipperConfig({"a": TOWER, "b": TOWER}, pair_intervals={"a<-b": 1.0}),
            r"ZipperConfig\.pair_intervals\['a<-b'\] must be an int, got 1\.0 \(float\)",
        ),
        (
            lambda: ZipperConfig({"a": TOWER, "b": TOWER}, fusion_mlp_ratio="1"),
            r"ZipperConfig\.fusion_mlp_ratio must be a number, got '1' \(str\)",
        ),
        (
            lambda: UnitRecognizerConfig(unit_vocab_size=8, num_chars=5, d_model=True),
            r"UnitRecognizerConfig\.d_model must be an int, got True \(bool\)",
        ),
        (
            lambda: UnitRecognizerConfig(unit_vocab_size=8, num_chars=5, mlp_ratio="4"),
            r"UnitRecognizerConfig\.mlp_ratio must be a number, got '4' \(str\)",
        ),
        (
            lambda: ViTConfig(image_size=32, patch_size=8, d_model=True, num_heads=1),
            r"ViTConfig\.d_model must be an int, got True \(bool\)",
        ),
        (
            lambda: MaMMUTConfig(vocab_size=16, cross_attn_every=1.0),
            r"MaMMUTConfig\.cross_attn_every must be an int, got 1\.0 \(float\)",
        ),
        (
            lambda: DetectionHeadConfig(box_layers=True),
            r"DetectionHeadConfig\.box_layers must be an int, got True \(bool\)",
        ),
        (
            lambda: DetectionHeadConfig(prior_prob="0.01"),
            r"DetectionHeadConfig\.prior_prob must be a number, got '0\.01' \(str\)",
        ),
    ],
)
def test_the_other_model_configs_check_their_numbers_too(build, message) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        build()
