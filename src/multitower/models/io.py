"""Saving and loading model weights and configs: safetensors files written atomically.

Every model is an ``nn.Module`` whose ``.config`` is a (possibly nested) frozen
dataclass. A saved model is a directory with

* ``model.safetensors``: the ``state_dict``;
* ``config.json``: ``dataclasses.asdict(model.config)`` plus ``"model_type"``
  (the class name);
* ``hashes.json``: the SHA-256 of ``model.safetensors``, checked by
  :func:`load_weights` (``config.json`` is not hashed: every field is checked by
  name when it is read, and a changed shape is caught by the strict loader).
  A saved model without it is refused (``load_weights(..., require_hash=True)``, as
  :func:`~multitower.models.pretrained.load_pretrained` loads): a deleted manifest
  would otherwise turn the check off unnoticed.

Files are written atomically (:mod:`multitower.io`).

Tied weights: safetensors refuses tensors that share storage (an output head
tied to the embedding appears twice in ``state_dict``). Exact aliases (same
storage, offset, shape and stride) are stored once; the other names are recorded
in the file's metadata under ``"multitower.aliases"`` and restored by
:func:`load_safetensors`. Tensors that merely overlap (different views of one
buffer) are cloned before writing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from multitower.io import (
    HASHES_NAME,
    verify_hashes,
    write_bytes_atomic,
    write_hashes,
    write_text_atomic,
)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
ALIASES_KEY = "multitower.aliases"


# -- safetensors -------------------------------------------------------------------------------
def _dedup_shared(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (tensors without shared storage, {alias: kept name}).

    Exact aliases are dropped and recorded; partial overlaps are cloned.
    """
    by_storage: dict[tuple[torch.device, int], list[str]] = {}
    for name, t in tensors.items():
        if t.device.type == "meta" or t.untyped_storage().nbytes() == 0:
            continue
        key = (t.device, t.untyped_storage().data_ptr())
        by_storage.setdefault(key, []).append(name)
    out = {name: t.detach() for name, t in tensors.items()}
    aliases: dict[str, str] = {}
    for names in by_storage.values():
        if len(names) < 2:
            continue
        kept: list[str] = []
        for name in names:
            t = tensors[name]
            twin = next(
                (
                    k
                    for k in kept
                    if tensors[k].storage_offset() == t.storage_offset()
                    and tensors[k].shape == t.shape
                    and tensors[k].stride() == t.stride()
                    and tensors[k].dtype == t.dtype
                ),
                None,
            )
            if twin is not None:
                aliases[name] = twin
                del out[name]
            elif kept:
                out[name] = t.detach().clone()  # overlaps another view: break the sharing
            else:
                kept.append(name)
    return out, aliases


def save_safetensors_atomic(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save ``tensors`` to a safetensors file atomically.

    Tensors sharing storage are deduplicated (see the module docstring); every
    tensor is written contiguous, on CPU.

    Args:
        path: target ``.safetensors`` file; its directory is created if needed.
        tensors: name -> tensor.
        metadata: optional string -> string metadata; the key ``"multitower.aliases"``
            is reserved.

    Raises:
        ValueError: a metadata key or value that is not a string, or the reserved key.
    """
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"safetensors metadata must map str to str, got {k!r}: {v!r}")
    if ALIASES_KEY in meta:
        raise ValueError(f"metadata key {ALIASES_KEY!r} is reserved")
    unique, aliases = _dedup_shared(tensors)
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    payload = {name: t.cpu().contiguous() for name, t in unique.items()}
    write_bytes_atomic(path, safetensors.torch.save(payload, metadata=meta or None))


def load_safetensors(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file onto CPU: (tensors with aliases restored, metadata).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"cannot read safetensors file {path}: {err}") from err
    for alias, name in json.loads(metadata.pop(ALIASES_KEY, "{}")).items():
        tensors[alias] = tensors[name]
    return tensors, metadata


# -- strict state loading ----------------------------------------------------------------------
def state_mismatch_report(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Lines describing every missing key, unexpected key and shape mismatch (empty when equal).

    Args:
        expected: key -> shape the model has.
        found: key -> shape the state offers.
    """
    lines = [
        f"missing key {k!r} (expected shape {list(expected[k])})"
        for k in expected
        if k not in found
    ]
    lines += [f"unexpected key {k!r} (shape {list(found[k])})" for k in found if k not in expected]
    lines += [
        f"shape mismatch for {k!r}: model expects {list(expected[k])}, found {list(found[k])}"
        for k in expected
        if k in found and tuple(expected[k]) != tuple(found[k])
    ]
    return lines


def check_state_compatible(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Raise a ValueError listing every key/shape difference between ``model`` and ``state``.

    Shapes of sharded (DTensor) parameters are their global shapes, so this works
    for FSDP-wrapped models too.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    lines = state_mismatch_report(expected, found)
    if lines:
        raise ValueError(
            f"cannot load {source} into {type(model).__name__}: {len(lines)} difference(s):\n  "
            + "\n  ".join(lines)
        )


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model`` after checking keys and shapes, touching nothing on error.

    Args:
        model: the module to load into.
        state: name -> tensor, e.g. from :func:`load_safetensors`.
        source: where ``state`` comes from, quoted in the error.

    Raises:
        ValueError: listing every missing key, unexpected key and shape mismatch
            (key, expected shape, found shape).
    """
    check_state_compatible(model, state, source=source)
    model.load_state_dict(dict(state), strict=True)


# -- whole models ------------------------------------------------------------------------------
def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """``dataclasses.asdict(model.config)`` plus ``"model_type"`` (the class name).

    Raises:
        ValueError: ``model.config`` is not a dataclass instance.
    """
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ValueError(
            f"{type(model).__name__}.config must be a dataclass instance, got {type(config).__name__}"
        )
    return {**dataclasses.asdict(config), "model_type": type(model).__name__}


def save_model(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``hashes.json`` into ``directory``
    (each atomic; the hash manifest last)."""
    directory = Path(directory)
    config = model_config_dict(model)
    save_safetensors_atomic(
        directory / WEIGHTS_NAME, model.state_dict(), {"model_type": config["model_type"]}
    )
    # Key order is kept: it carries meaning (e.g. the baseline's modality id order).
    write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    write_hashes(directory, [WEIGHTS_NAME])


def load_config_json(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``directory/config.json`` (as written by :func:`save_model`).

    Raises:
        FileNotFoundError: no ``config.json`` in ``directory``.
        ValueError: the file is not a JSON object.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_weights(
    model: nn.Module, path: str | os.PathLike[str], *, require_hash: bool = False
) -> None:
    """Load a safetensors file (or a directory holding ``model.safetensors``) into ``model``.

    When the file's directory has a ``hashes.json`` listing it, its SHA-256 is
    checked first. With ``require_hash`` (a model saved by :func:`save_model`) the
    manifest must be there and list it; without, a file with no manifest (a training
    checkpoint's weights, which its own manifest covers) loads unchecked.

    Raises:
        FileNotFoundError: no weights file, or (``require_hash``) no ``hashes.json``
            beside it.
        ValueError: the file's hash differs from the recorded one, (``require_hash``)
            the manifest does not list it, or keys or shapes differ (see
            :func:`load_state_strict`).
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if path.is_file():
        listed = verify_hashes(path.parent, [path.name])
        manifest = path.parent / HASHES_NAME
        if require_hash and not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest} is missing: it records the SHA-256 of {path.name}, which is "
                "checked before loading; save the model again (save_pretrained)"
            )
        if require_hash and not listed:
            raise ValueError(
                f"{manifest} does not list {path.name}, so its SHA-256 cannot be checked; "
                "save the model again (save_pretrained)"
            )
    tensors, _ = load_safetensors(path)
    load_state_strict(model, tensors, source=str(path))
