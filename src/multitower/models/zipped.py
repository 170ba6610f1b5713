"""Zipping pre-trained towers from local folders, and saving only what the zip adds.

:func:`zip_towers` builds a :class:`~multitower.models.zipper.Zipper` from towers
given as local folders (a Hugging Face causal LM saved by ``save_pretrained``, or
a :class:`~multitower.models.decoder.DecoderTower` saved by
:func:`~multitower.models.pretrained.save_pretrained`) or as models in memory.
Nothing is downloaded: a name that is not a folder on disk is an error.

:func:`save_zipped` writes a directory with

* ``config.json``: the Zipper config (``model_type`` ``"Zipper"``; an HF tower's
  architecture is its whole ``transformers`` config);
* ``towers.json``: per tower, where its weights come from: ``"hf"`` or
  ``"multitower"`` with the source folder's path and SHA-256 (a tower read from a
  folder and frozen), or ``"stored"`` (its weights are in the weights file: a
  tower built in memory, or one that training may have changed);
* ``fusion.safetensors``: the ``fusion.*`` parameters plus the stored towers';
* ``hashes.json``: the SHA-256 of the two files above.

:func:`load_zipped` rebuilds the whole model: each referenced tower is loaded
from its folder (whose hash must still match) and frozen again, then the
weights file is loaded strictly over the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multitower.config import ConfigError, build_dataclass
from multitower.io import file_sha256, verify_hashes, write_hashes, write_json_atomic
from multitower.models.decoder import DecoderTower
from multitower.models.hf_tower import (
    HFTower,
    folder_sha256,
    hf_tower_config,
    load_hf_tower,
    require_transformers,
)
from multitower.models.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_config_json,
    load_safetensors,
    model_config_dict,
    save_safetensors_atomic,
    state_mismatch_report,
)
from multitower.models.pretrained import load_pretrained
from multitower.models.zipper import Tower, TowerSource, Zipper, ZipperConfig

FUSION_WEIGHTS = "fusion.safetensors"
MANIFEST_NAME = "towers.json"
_MANIFEST_FORMAT = "multitower.zipped"

TowerInput = str | os.PathLike[str] | Tower | Any  # Any: a transformers PreTrainedModel


def load_tower_folder(
    directory: str | os.PathLike[str], *, special_ids: Mapping[str, int] | None = None
) -> tuple[Tower, TowerSource]:
    """Load a tower from a local folder: an HF causal LM or a saved :class:`DecoderTower`.

    Args:
        directory: the folder (its ``config.json`` tells which kind).
        special_ids: ``pad_id``/``bos_id``/``eos_id`` for an HF tower (defaults: the
            HF config's token ids); not allowed for a DecoderTower, which has its own.

    Raises:
        FileNotFoundError: not a folder, or no ``config.json``.
        ValueError: a ``config.json`` of neither kind, or see :func:`load_hf_tower`.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(
            f"tower folder {path} does not exist (towers are read from local folders only; "
            "nothing is downloaded)"
        )
    data = load_config_json(path)
    ids = dict(special_ids or {})
    if data.get("model_type") == "DecoderTower":
        if ids:
            raise ValueError(
                f"{path} holds a DecoderTower, whose special ids are in its config; "
                f"do not pass special_ids {sorted(ids)}"
            )
        tower = load_pretrained(path, DecoderTower)
        return tower, TowerSource(
            "multitower", str(path.resolve()), file_sha256(path / WEIGHTS_NAME)
        )
    if "architectures" not in data and "transformers_version" not in data:
        raise ValueError(
            f"{path / CONFIG_NAME} is neither a saved DecoderTower (model_type "
            f"{data.get('model_type')!r}) nor a Hugging Face model config"
        )
    unknown = sorted(set(ids) - {"pad_id", "bos_id", "eos_id"})
    if unknown:
        raise ValueError(f"special_ids: unknown key(s) {unknown}; allowed: pad_id, bos_id, eos_id")
    tower = load_hf_tower(path, **ids)
    return tower, TowerSource("hf", str(path.resolve()), folder_sha256(path))


def zip_towers(
    towers: Mapping[str, TowerInput],
    *,
    special_ids: Mapping[str, Mapping[str, int]] | None = None,
    fusion: Mapping[str, Any] | None = None,
) -> Zipper:
    """A Zipper of pre-trained towers, with freshly initialised fusion parameters.

    Args:
        towers: tower (= modality) name -> a local folder (see :func:`load_tower_folder`),
            a :class:`DecoderTower` or :class:`HFTower`, or a ``transformers`` causal LM.
        special_ids: tower name -> ``{"pad_id", "bos_id", "eos_id"}`` for HF towers.
        fusion: the other :class:`ZipperConfig` fields (``cross_attention_every``,
            ``input_projection``, ...).

    Returns:
        The Zipper; ``tower_sources`` names the folders towers came from.

    Raises:
        ValueError: an unknown ``fusion`` key, a bad value (see :class:`ZipperConfig`),
            or a tower that cannot be loaded.
    """
    ids = dict(special_ids or {})
    unknown = sorted(set(ids) - set(towers))
    if unknown:
        raise ValueError(f"special_ids: unknown tower(s) {unknown}; towers: {list(towers)}")
    built: dict[str, Tower] = {}
    sources: dict[str, TowerSource] = {}
    for name, given in towers.items():
        if isinstance(given, str | os.PathLike):
            built[name], sources[name] = load_tower_folder(given, special_ids=ids.get(name))
        elif isinstance(given, DecoderTower | HFTower):
            built[name] = given
        elif isinstance(given, require_transformers().PreTrainedModel):
            built[name] = HFTower(hf_tower_config(given, **ids.get(name, {})), given)
        else:
            raise ValueError(
                f"towers[{name!r}]: expected a folder, a DecoderTower, an HFTower or a "
                f"transformers model, got {type(given).__name__}"
            )
    options = dict(fusion or {})
    allowed = [f.name for f in dataclasses.fields(ZipperConfig) if f.name != "towers"]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"fusion: unknown key(s) {bad}; allowed: {', '.join(allowed)}")
    config = ZipperConfig({n: t.config for n, t in built.items()}, **options)
    model = Zipper(config, towers=built)
    model.tower_sources = sources
    return model


def _is_frozen(tower: Tower) -> bool:
    return not any(p.requires_grad for p in tower.parameters())


def save_zipped(model: Zipper, directory: str | os.PathLike[str]) -> None:
    """Write the fusion parameters, the stored towers and the tower manifest (see the module
    docstring). A tower is referenced by its source folder only when it has one and is
    frozen; every other tower's weights are written.
    """
    directory = Path(directory)
    manifest: dict[str, dict[str, str]] = {}
    prefixes = ["fusion."]
    for name, tower in model.towers.items():
        source = model.tower_sources.get(name)
        if source is not None and _is_frozen(tower):
            manifest[name] = dataclasses.asdict(source)
        else:
            manifest[name] = {"kind": "stored"}
            prefixes.append(f"towers.{name}.")
    state = {k: v for k, v in model.state_dict().items() if k.startswith(tuple(prefixes))}
    save_safetensors_atomic(directory / FUSION_WEIGHTS, state, {"model_type": "Zipper"})
    config = model_config_dict(model)
    write_json_atomic(directory / CONFIG_NAME, config, indent=2)
    payload = {"format": _MANIFEST_FORMAT, "version": 1, "towers": manifest}
    write_json_atomic(directory / MANIFEST_NAME, payload, indent=2)
    write_hashes(directory, [FUSION_WEIGHTS, MANIFEST_NAME])


def _read_manifest(directory: Path, towers: list[str]) -> dict[str, dict[str, str]]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory} (not saved by save_zipped)")
    payload = json.loads(path.read_text(encoding="utf-8"))
    entries = payload.get("towers") if isinstance(payload, dict) else None
    if payload.get("format") != _MANIFEST_FORMAT or not isinstance(entries, dict):
        raise ValueError(f"{path} is not a zipped-model manifest")
    if sorted(entries) != sorted(towers):
        raise ValueError(f"{path} names towers {sorted(entries)}, config.json {sorted(towers)}")
    for name, entry in entries.items():
        kind = entry.get("kind")
        if kind not in ("hf", "multitower", "stored"):
            raise ValueError(f"{path}: towers.{name}.kind {kind!r} is not hf, multitower or stored")
        if kind != "stored" and not (entry.get("path") and entry.get("sha256")):
            raise ValueError(f"{path}: towers.{name} needs a path and a sha256")
    return entries


def load_zipped(directory: str | os.PathLike[str]) -> Zipper:
    """Rebuild a model written by :func:`save_zipped`.

    Raises:
        FileNotFoundError: a missing file or source folder.
        ValueError: a file whose hash differs from the recorded one (the directory's or a
            source folder's), a source tower whose config differs from the recorded one,
            or weights whose keys or shapes do not match (every difference listed).
    """
    directory = Path(directory)
    if not verify_hashes(directory, [FUSION_WEIGHTS, MANIFEST_NAME]):
        raise FileNotFoundError(
            f"{directory} has no complete hashes.json (not saved by save_zipped)"
        )
    data = load_config_json(directory)
    if data.pop("model_type", None) != "Zipper":
        raise ValueError(f"{directory / CONFIG_NAME} is not a Zipper config")
    try:
        config = build_dataclass(ZipperConfig, data, "")
    except ConfigError as err:
        raise ConfigError([f"{directory / CONFIG_NAME}: {line}" for line in err.problems]) from err
    manifest = _read_manifest(directory, list(config.towers))
    towers: dict[str, Tower] = {}
    sources: dict[str, TowerSource] = {}
    for name, entry in manifest.items():
        if entry["kind"] == "stored":
            continue
        source = TowerSource(entry["kind"], entry["path"], entry["sha256"])
        if source.kind == "hf":
            cfg = config.towers[name]
            ids = {"pad_id": cfg.pad_id, "bos_id": cfg.bos_id, "eos_id": cfg.eos_id}
            tower: Tower = load_hf_tower(source.path, sha256=source.sha256, **ids)
        else:
            tower = load_pretrained(source.path, DecoderTower)
            actual = file_sha256(Path(source.path) / WEIGHTS_NAME)
            if actual != source.sha256:
                raise ValueError(
                    f"{source.path}: SHA-256 {actual[:12]}... of the tower weights differs from "
                    f"the {source.sha256[:12]}... recorded when the model was zipped"
                )
        towers[name], sources[name] = tower, source
    model = Zipper(config, towers=towers)
    model.tower_sources = sources
    state, _ = load_safetensors(directory / FUSION_WEIGHTS)
    stored = tuple(
        ["fusion.", *(f"towers.{n}." for n, e in manifest.items() if e["kind"] == "stored")]
    )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(stored)}
    lines = state_mismatch_report(expected, {k: tuple(v.shape) for k, v in state.items()})
    if lines:
        raise ValueError(
            f"cannot load {directory / FUSION_WEIGHTS}: {len(lines)} difference(s):\n  "
            + "\n  ".join(lines)
        )
    model.load_state_dict(state, strict=False)  # the other keys are the source towers'
    model.freeze_towers(list(sources))
    return model
