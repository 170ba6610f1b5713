"""Build and load models from ``config.json`` + ``model.safetensors`` directories.

``config.json`` carries ``model_type`` (the class name); loading checks it, so a
checkpoint of another model is refused with a clear message instead of being
loaded into the wrong architecture. Nothing here unpickles anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from multitower.models.baseline import VocabExpansionConfig, VocabExpansionLM
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.io import load_config_json, load_weights, save_model
from multitower.models.zipper import Zipper, ZipperConfig

C = TypeVar("C")


def dataclass_from_dict(cls: type[C], data: Mapping[str, Any], where: str) -> C:
    """Build the frozen config dataclass ``cls`` from a JSON dict, naming unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as err:  # a missing required field
        raise ValueError(f"{where}: {err}") from err


def _decoder(data: Mapping[str, Any]) -> DecoderConfig:
    return dataclass_from_dict(DecoderConfig, data, "DecoderConfig")


def _zipper(data: Mapping[str, Any]) -> ZipperConfig:
    fields = dict(data)
    towers = fields.pop("towers", None)
    if not isinstance(towers, Mapping):
        raise ValueError("ZipperConfig: 'towers' must be a mapping of tower name -> decoder config")
    fields["towers"] = {name: _decoder(cfg) for name, cfg in towers.items()}
    return dataclass_from_dict(ZipperConfig, fields, "ZipperConfig")


def _baseline(data: Mapping[str, Any]) -> VocabExpansionConfig:
    fields = dict(data)
    fields["tower"] = _decoder(fields.get("tower", {}))
    return dataclass_from_dict(VocabExpansionConfig, fields, "VocabExpansionConfig")


MODEL_TYPES: dict[str, tuple[type[nn.Module], Callable[[Mapping[str, Any]], Any]]] = {
    "DecoderTower": (DecoderTower, _decoder),
    "Zipper": (Zipper, _zipper),
    "VocabExpansionLM": (VocabExpansionLM, _baseline),
}


def register_model_type(
    cls: type[nn.Module], config_from_dict: Callable[[Mapping[str, Any]], Any]
) -> None:
    """Make ``load_pretrained`` able to build ``cls`` (used by models defined elsewhere)."""
    MODEL_TYPES[cls.__name__] = (cls, config_from_dict)


def build_from_config_dict(data: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model from a ``config.json`` dict (with ``model_type``)."""
    fields = dict(data)
    model_type = fields.pop("model_type", None)
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"config.json: model_type {model_type!r} is not known; allowed: {sorted(MODEL_TYPES)}"
        )
    cls, from_dict = MODEL_TYPES[model_type]
    return cls(from_dict(fields))  # type: ignore[call-arg]


M = TypeVar("M", bound=nn.Module)


def load_pretrained(directory: str | os.PathLike[str], expected: type[M] | None = None) -> M:
    """Load a model saved with :func:`save_pretrained`.

    Args:
        directory: holds ``config.json`` and ``model.safetensors``.
        expected: the class the caller needs; another ``model_type`` is an error.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: another model type, an unknown config key, or weights whose keys
            or shapes do not match the config (every difference is listed).
    """
    data = load_config_json(directory)
    if expected is not None and data.get("model_type") != expected.__name__:
        raise ValueError(
            f"{directory} holds a {data.get('model_type')!r} checkpoint, expected "
            f"{expected.__name__!r}"
        )
    model = build_from_config_dict(data)
    load_weights(model, Path(directory))
    return model  # type: ignore[return-value]


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` and ``config.json`` (atomic; no pickle)."""
    save_model(model, directory)
