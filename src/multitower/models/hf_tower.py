"""A Hugging Face ``transformers`` causal LM as a Zipper tower (Zipper section 2, "towers").

:class:`HFTower` holds the HF model's own modules under their own names (its
``state_dict`` keys are the HF model's, ``transformer.h.0.attn.c_attn.weight`` or
``model.layers.0.self_attn.q_proj.weight``), so a checkpoint saved by
``transformers`` loads into it strictly and it can be frozen like any tower. Zipper
drives it piece by piece, as it drives a :class:`~multitower.models.decoder.DecoderTower`::

    tokens --embed_tokens(positions)--> [layer 0] -> ... -> [layer L-1] --head--> logits
              GPT-2: wte + wpe             HF decoder layers, one run_block each,
              Llama family: embed_tokens   rotary cos/sin from the model's own rotary_emb

Positions are the model's own: GPT-2 adds its learned table at the embedding,
the Llama family (Llama, Qwen2, Gemma) rotates queries and keys with its
``rotary_emb`` at the given per-token positions. With caches set up, each layer
gets a preallocated :class:`~multitower.nn.kv_cache.KVCache` (key/value heads, so
grouped-query attention keeps its small cache) written at per-example slots, and
an additive mask lets a query at position p see slots ``<= p``: examples of one
batch may sit at different lengths, as Zipper's interleaved decoding needs.

``transformers`` is an optional dependency (``pip install 'multitower[hf]'``);
it is imported only when an HF tower is built or loaded. Checkpoints are read
only from local folders, only as safetensors (nothing is downloaded, nothing is
unpickled), always in float32 (call ``.to(dtype)`` on the model afterwards).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from multitower.io import file_sha256
from multitower.models.decoder import check_token_range
from multitower.models.hf_tower_config import HF_EXTRA, HF_LAYOUTS, HFTowerConfig
from multitower.nn import KVCache
from multitower.nn.kv_cache import check_slots

__all__ = [
    "HF_EXTRA",
    "HFTower",
    "HFTowerConfig",
    "folder_sha256",
    "hf_tower_config",
    "load_hf_tower",
    "require_transformers",
]

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def require_transformers() -> ModuleType:
    """The ``transformers`` module.

    Raises:
        ImportError: it is not installed; the message names the extra to install.
    """
    try:
        return importlib.import_module("transformers")
    except ImportError as err:
        raise ImportError(
            "Hugging Face towers need the 'transformers' package, which is not installed; "
            f"install the optional extra: pip install '{HF_EXTRA}'"
        ) from err


def folder_sha256(directory: str | os.PathLike[str]) -> str:
    """One SHA-256 over an HF model folder's ``config.json`` and ``*.safetensors`` files.

    The digest of the lines ``name sha256`` of each file, sorted by name, so a
    changed weight shard or config gives another hash.

    Raises:
        FileNotFoundError: no ``config.json`` or no ``*.safetensors`` file in the folder.
    """
    directory = Path(directory)
    weights = sorted(p.name for p in directory.glob("*.safetensors"))
    if not (directory / "config.json").is_file() or not weights:
        raise FileNotFoundError(
            f"{directory} is not a Hugging Face model folder: it needs config.json and "
            "*.safetensors weights (.bin checkpoints are not read: they are pickles)"
        )
    lines = [f"{name} {file_sha256(directory / name)}\n" for name in ["config.json", *weights]]
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def hf_tower_config(
    model: Any,
    *,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> HFTowerConfig:
    """The :class:`HFTowerConfig` of a ``transformers`` causal LM.

    Args:
        model: a ``PreTrainedModel`` (e.g. ``GPT2LMHeadModel``) or its ``PretrainedConfig``.
        pad_id, bos_id, eos_id: Zipper's special ids; each defaults to the HF config's
            ``pad_token_id``/``bos_token_id``/``eos_token_id``.

    Raises:
        ValueError: an id given by neither argument nor HF config, an unsupported
            architecture, or ids that are not three different ids (see :class:`HFTowerConfig`).
    """
    hf = getattr(model, "config", model)
    # As JSON gives it back (a saved config then equals this one); where it was read
    # from and by which version is not the architecture.
    data = json.loads(json.dumps(hf.to_dict()))
    for key in ("_name_or_path", "transformers_version"):
        data.pop(key, None)
    given = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}
    ids: dict[str, int] = {}
    for name, value in given.items():
        if value is None:
            value = data.get(name.replace("_id", "_token_id"))
        if isinstance(value, list):  # some configs list several eos ids
            value = value[0] if value else None
        if value is None:
            raise ValueError(
                f"{name}: the HF config has no {name.replace('_id', '_token_id')}; "
                f"pass {name}= (an id of the tower's vocabulary)"
            )
        ids[name] = int(value)
    return HFTowerConfig(data, **ids)


class _SlotWriter:
    """The ``cache`` an HF attention layer calls: writes its keys/values at the given
    per-example slots of the tower's preallocated :class:`KVCache` and returns its
    first ``length`` slots (the filled part)."""

    def __init__(self, caches: Sequence[KVCache], positions: torch.Tensor, length: int) -> None:
        self.caches = caches
        self.positions = positions
        self.length = length

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, H_kv, T, Dh) in, (B, H_kv, S, Dh) out
        k, v = self.caches[layer_idx].update(self.positions, key_states, value_states)
        return k[:, :, : self.length], v[:, :, : self.length]


@dataclass(frozen=True)
class HFBlockInputs:
    """What every HF decoder layer needs for one forward, computed once by
    :meth:`HFTower.prepare_blocks` and shared by all layers.

    Attributes:
        positions: ``(B, T)`` token positions.
        mask: the attention mask the layers take (``(B, 1, T, S)``), or None for sdpa's
            own causal mask.
        cos_sin: the model's rotary ``(cos, sin)`` at ``positions`` (Llama family), or None.
        cache: writes the layers' keys/values to the KV caches, or None without caches.
    """

    positions: torch.Tensor
    mask: torch.Tensor | None
    cos_sin: tuple[torch.Tensor, torch.Tensor] | None
    cache: _SlotWriter | None


class HFTower(nn.Module):
    """A ``transformers`` causal LM driven as a Zipper tower: ``tokens (B, T) -> logits (B, T, V)``.

    Args:
        config: the tower config (the HF architecture and Zipper's special ids).
        model: an HF model built from exactly ``config.hf_config`` (e.g. loaded by
            :func:`load_hf_tower`); None builds one with freshly initialised weights.

    Raises:
        ImportError: ``transformers`` is not installed.
        ValueError: ``model`` is of another architecture than ``config``, or uses an
            attention implementation other than sdpa or eager.
    """

    def __init__(self, config: HFTowerConfig, model: Any = None) -> None:
        super().__init__()
        self.config = config
        if model is None:
            transformers = require_transformers()
            hf_config = transformers.AutoConfig.for_model(**config.hf_config)
            model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
        found = model.config.to_dict()
        if _architecture(found) != _architecture(config.hf_config):
            raise ValueError(
                f"HFTower: the model's config differs from the tower config: "
                f"{_config_diff(config.hf_config, found)}"
            )
        impl = model.config._attn_implementation
        if impl not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"HFTower: attention implementation {impl!r} is not supported; load the model "
                f"with attn_implementation one of {ATTENTION_IMPLEMENTATIONS}"
            )
        layer_types = getattr(model.config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise ValueError(
                f"HFTower: layer_types {layer_types} has sliding-window layers, which the "
                "tower's KV cache does not implement; use a model with full attention only"
            )
        self.hf_config = model.config  # the PretrainedConfig (not a module, not saved)
        # The HF model's children become the tower's, so parameter names stay the HF ones.
        for name, child in model.named_children():
            self.add_module(name, child)
        self._base_name = model.base_model_prefix
        self.kv_caches: nn.ModuleList | None = None
        self._slots = torch.zeros(0, dtype=torch.long)  # cache slot ids, set with the caches

    # -- the HF modules ------------------------------------------------------------------------
    @property
    def base(self) -> nn.Module:
        """The HF base model (``transformer`` for GPT-2, ``model`` for the Llama family)."""
        return getattr(self, self._base_name)

    @property
    def layers(self) -> nn.ModuleList:
        """The HF decoder layers, in order."""
        return self.base.h if self.config.layout.learned_positions else self.base.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.base.ln_f if self.config.layout.learned_positions else self.base.norm

    # -- pieces driven one by one by Zipper ----------------------------------------------------
    def embed_tokens(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, T)`` ids -> ``(B, T, D)``: the HF model's embedding (plus its learned
        positions for GPT-2, at ``positions``, default ``arange(T)``).

        The vocabulary range check is skipped with caches set up, as in
        :meth:`DecoderTower.embed_tokens <multitower.models.decoder.DecoderTower.embed_tokens>`.
        """
        if not self.caches_enabled:
            check_token_range(tokens, self.config.vocab_size, "HFTower")
        base = self.base
        if not self.config.layout.learned_positions:
            return base.embed_tokens(tokens)  # Gemma's scales itself by sqrt(D)
        if positions is None:
            positions = _arange_like(tokens)
        return base.drop(base.wte(tokens) + base.wpe(positions))  # (B, T, D)

    def check_positions(self, positions: torch.Tensor) -> int:
        """Raise unless ``positions`` ``(B, T)`` fit the KV caches; return the largest
        (one host sync, once per forward)."""
        if self.kv_caches is None:
            raise ValueError("HFTower.check_positions: no KV caches are set up")
        return check_slots(positions, self.kv_caches[0].max_len, "HFTower")  # type: ignore[union-attr]

    def prepare_blocks(
        self, h: torch.Tensor, positions: torch.Tensor | None, *, max_position: int | None = None
    ) -> HFBlockInputs:
        """The mask, rotary tables and cache writer shared by every layer for ``h`` ``(B, T, D)``.

        Args:
            positions: ``(B, T)`` token positions (default ``arange(T)``); with caches set
                up, also the cache slots written, and a query at position p sees the
                slots ``<= p``. Without caches attention is causal over ``h``.
            max_position: from :meth:`check_positions`: attend only the filled part of
                the caches (default: all of them).
        """
        sdpa = self.hf_config._attn_implementation == "sdpa"
        cache, mask = None, None
        if self.kv_caches is not None:
            if positions is None:
                raise ValueError("HFTower.run_block: positions are required with caches set up")
            caches: list[KVCache] = list(self.kv_caches)  # type: ignore[arg-type]
            length = caches[0].max_len
            if max_position is not None:
                length = min(c.mark_filled(max_position) for c in caches)
            cache = _SlotWriter(caches, positions, length)
            slots = self._slots[:length]
            mask = _visibility_mask(positions, slots, h.dtype, boolean=sdpa)  # (B, 1, T, S)
        elif not sdpa:  # eager attention applies no causal mask of its own
            key_positions = _arange_like(h[..., 0])[0]
            mask = _visibility_mask(key_positions.expand(h.shape[:2]), key_positions, h.dtype)
        if positions is None:
            positions = _arange_like(h[..., 0])
        cos_sin = None
        if not self.config.layout.learned_positions:
            cos_sin = self.base.rotary_emb(h, position_ids=positions)  # (B, T, Dh) each
        return HFBlockInputs(positions, mask, cos_sin, cache)

    def run_block(
        self,
        index: int,
        h: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        inputs: HFBlockInputs | None = None,
    ) -> torch.Tensor:
        """Run HF decoder layer ``index`` on ``h`` ``(B, T, D)``.

        Args:
            positions: see :meth:`prepare_blocks`.
            inputs: from :meth:`prepare_blocks` (shared by the layers of one forward);
                replaces ``positions``. Default: built here.
        """
        if inputs is None:
            inputs = self.prepare_blocks(h, positions)
        layer = self.layers[index]
        if self.config.layout.learned_positions:
            return layer(h, cache=inputs.cache, attention_mask=inputs.mask)
        return layer(
            h,
            attention_mask=inputs.mask,
            position_ids=inputs.positions,
            cache=inputs.cache,
            position_embeddings=inputs.cos_sin,
        )

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The HF final norm and LM head: ``(B, T, D) -> (B, T, V)``."""
        return self.lm_head(self.final_norm(h))

    # -- caches --------------------------------------------------------------------------------
    def setup_caches(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        """Preallocate a KV cache of ``max_len`` slots per layer for ``batch`` sequences."""
        ref = self.lm_head.weight
        hf = self.hf_config
        kv_heads = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
        self._slots = torch.arange(max_len, device=device or ref.device)  # (S,)
        self.kv_caches = nn.ModuleList(
            KVCache(
                batch,
                kv_heads,
                max_len,
                head_dim,
                dtype=dtype or ref.dtype,
                device=device or ref.device,
            )
            for _ in range(self.config.num_layers)
        )

    def reset_caches(self) -> None:
        """Zero every KV cache (keeps the allocation)."""
        for cache in self.kv_caches or []:
            cache.reset()  # type: ignore[operator]

    def remove_caches(self) -> None:
        """Drop the KV caches: layers run on whole sequences again."""
        self.kv_caches = None

    @property
    def caches_enabled(self) -> bool:
        return self.kv_caches is not None

    def forward(
        self, tokens: torch.Tensor, *, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits ``(B, T) -> (B, T, V)``.

        Args:
            positions: ``(B, T)`` token positions (default ``arange(T)``); required with
                caches set up, where they are also the cache slots (see :meth:`prepare_blocks`).
        """
        h = self.embed_tokens(tokens, positions)
        max_position = None
        if self.kv_caches is not None:
            if positions is None:
                raise ValueError("HFTower.forward: positions are required with caches set up")
            max_position = self.check_positions(positions)
        inputs = self.prepare_blocks(h, positions, max_position=max_position)
        for i in range(self.config.num_layers):
            h = self.run_block(i, h, inputs=inputs)
        return self.head(h)


def _visibility_mask(
    positions: torch.Tensor, slots: torch.Tensor, dtype: torch.dtype, *, boolean: bool = False
) -> torch.Tensor:
    """``(B, 1, T, S)``: a query at position p sees the keys at slots ``<= p``.

    Boolean for sdpa; additive (0, or the dtype's lowest value) for eager attention,
    which adds the mask to its scores.
    """
    visible = slots[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, S)
    if boolean:
        return visible
    low = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=visible.device)
    return torch.zeros((), dtype=dtype, device=visible.device).where(visible, low)


def _arange_like(x: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` positions ``0 .. T-1`` for a ``(B, T)`` tensor."""
    B, T = x.shape
    return torch.arange(T, device=x.device).expand(B, T)


# HF config keys that describe a run or a file, not the architecture.
_NOT_ARCHITECTURE = {
    "_name_or_path",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "id2label",
    "label2id",
}


def _architecture(hf_config: dict[str, Any]) -> dict[str, Any]:
    """The architecture keys, as JSON would give them back (tuples become lists)."""
    data = json.loads(json.dumps(hf_config, default=str))
    return {k: v for k, v in data.items() if k not in _NOT_ARCHITECTURE}


def _config_diff(expected: dict[str, Any], found: dict[str, Any]) -> str:
    a, b = _architecture(expected), _architecture(found)
    keys = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
    return "; ".join(f"{k}: expected {a.get(k)!r}, found {b.get(k)!r}" for k in keys)


def load_hf_tower(
    directory: str | os.PathLike[str],
    *,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
    sha256: str | None = None,
) -> HFTower:
    """Load a ``transformers`` causal LM from a local folder as an :class:`HFTower` (strict).

    Nothing is downloaded: ``directory`` must be a folder on disk, as written by
    ``save_pretrained`` (``config.json`` + ``*.safetensors``).

    Args:
        directory: the model folder.
        pad_id, bos_id, eos_id: Zipper's special ids (see :func:`hf_tower_config`).
        sha256: when given, :func:`folder_sha256` of the folder must equal it.

    Raises:
        ImportError: ``transformers`` is not installed (the message names the extra).
        FileNotFoundError: ``directory`` is not a local model folder with safetensors weights.
        ValueError: the folder's hash differs from ``sha256``; the checkpoint's keys do
            not match the model's (every missing, unexpected and mis-shaped key is
            listed); an unsupported architecture; bad special ids.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no Hugging Face model folder at {directory} (only local folders are read; "
            "nothing is downloaded)"
        )
    digest = folder_sha256(directory)
    model_type = json.loads((directory / "config.json").read_text(encoding="utf-8")).get(
        "model_type"
    )
    if model_type not in HF_LAYOUTS:
        raise ValueError(
            f"{directory}: model_type {model_type!r} is not supported as a tower; "
            f"supported: {', '.join(sorted(HF_LAYOUTS))}"
        )
    if sha256 is not None and digest != sha256:
        raise ValueError(
            f"{directory}: SHA-256 {digest[:12]}... of config.json and the weights differs "
            f"from the {sha256[:12]}... recorded when the model was zipped (the folder changed)"
        )
    transformers = require_transformers()
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        directory,
        local_files_only=True,
        use_safetensors=True,
        dtype=torch.float32,
        output_loading_info=True,
        ignore_mismatched_sizes=True,  # reported below, with every other difference
    )
    problems = [f"missing key {k!r}" for k in sorted(info["missing_keys"])]
    problems += [f"unexpected key {k!r}" for k in sorted(info["unexpected_keys"])]
    problems += [
        f"shape mismatch for {k!r}: checkpoint {list(a)}, model {list(b)}"
        for k, a, b in sorted(info["mismatched_keys"])
    ]
    if problems:
        raise ValueError(
            f"cannot load {directory} strictly into {type(model).__name__}: "
            f"{len(problems)} difference(s):\n  " + "\n  ".join(problems)
        )
    config = hf_tower_config(model, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
    return HFTower(config, model)
