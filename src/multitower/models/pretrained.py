"""The model registry, and building and loading models from ``config.json`` + ``model.safetensors``.

:data:`MODEL_TYPES` is the one list of every model the project saves: ``model_type``
(the class name written into ``config.json`` by :func:`save_pretrained`) -> (model
class, config class). It is written out here, not filled by imports of the model
modules, so :func:`load_pretrained` knows every type in a fresh process. A new
saved model adds one line to it.

Config dicts become config dataclasses through :func:`multitower.config.build_dataclass`
(nested configs, tuples and every unknown, missing or mistyped key reported by
name). Loading checks ``model_type``, so a checkpoint of another model is refused
with a clear message instead of being loaded into the wrong architecture. Nothing
here unpickles anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from multitower.config import ConfigError, build_dataclass
from multitower.models.baseline import VocabExpansionConfig, VocabExpansionLM
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.detection import MaMMUTDetector, MaMMUTDetectorConfig
from multitower.models.io import CONFIG_NAME, load_config_json, load_weights, save_model
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.unit_recognizer import UnitRecognizer, UnitRecognizerConfig
from multitower.models.video import MaMMUTVideo, MaMMUTVideoConfig
from multitower.models.zipper import Zipper, ZipperConfig

MODEL_TYPES: dict[str, tuple[type[nn.Module], type]] = {
    "DecoderTower": (DecoderTower, DecoderConfig),
    "Zipper": (Zipper, ZipperConfig),
    "VocabExpansionLM": (VocabExpansionLM, VocabExpansionConfig),
    "MaMMUT": (MaMMUT, MaMMUTConfig),
    "MaMMUTDetector": (MaMMUTDetector, MaMMUTDetectorConfig),
    "MaMMUTVideo": (MaMMUTVideo, MaMMUTVideoConfig),
    "UnitRecognizer": (UnitRecognizer, UnitRecognizerConfig),
}


def build_from_config_dict(data: Mapping[str, Any], *, source: str = CONFIG_NAME) -> nn.Module:
    """A freshly initialised model from a ``config.json`` dict (with ``model_type``).

    Args:
        data: the config fields plus ``"model_type"``.
        source: where ``data`` comes from, quoted in errors.

    Raises:
        ConfigError: an unknown ``model_type`` (the known ones are listed) or config
            fields that do not fit its config class (each bad key is named).
    """
    fields = dict(data)
    model_type = fields.pop("model_type", None)
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not known; "
            f"known model types: {', '.join(sorted(MODEL_TYPES))}"
        )
    cls, config_cls = MODEL_TYPES[model_type]
    try:
        config = build_dataclass(config_cls, fields, "")
    except ConfigError as err:
        raise ConfigError([f"{source}: {model_type}: {line}" for line in err.problems]) from err
    return cls(config)  # type: ignore[call-arg]


M = TypeVar("M", bound=nn.Module)


def load_pretrained(directory: str | os.PathLike[str], expected: type[M] | None = None) -> M:
    """Load a model saved with :func:`save_pretrained`.

    Args:
        directory: holds ``config.json``, ``model.safetensors`` and ``hashes.json``.
        expected: the class the caller needs; another ``model_type`` is an error.

    Raises:
        FileNotFoundError: a missing file (``hashes.json`` included: a model saved
            without one, or whose manifest was deleted, is refused).
        ValueError: a weights file whose SHA-256 differs from the recorded one, another
            model type, an unknown model type, a config key that is
            unknown, missing or of the wrong type (a :class:`ConfigError`), or weights
            whose keys or shapes do not match the config (every difference is listed).
    """
    data = load_config_json(directory)
    if expected is not None and data.get("model_type") != expected.__name__:
        raise ValueError(
            f"{directory} holds a {data.get('model_type')!r} checkpoint, expected "
            f"{expected.__name__!r}"
        )
    model = build_from_config_dict(data, source=str(Path(directory) / CONFIG_NAME))
    load_weights(model, Path(directory), require_hash=True)
    return model  # type: ignore[return-value]


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` and ``config.json`` (atomic; no pickle)."""
    save_model(model, directory)
