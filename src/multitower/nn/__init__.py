"""Config-free building blocks shared by every model.

The blocks are loaded on first use (a module ``__getattr__``, PEP 562): importing
a torch-free submodule such as :mod:`.checks`, which the model configs need, runs
this file and must not import torch. ``from multitower.nn import TransformerStack``
works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from multitower.nn.checks import check_heads

if TYPE_CHECKING:
    from multitower.nn.attention import CrossAttention, SelfAttention
    from multitower.nn.block import CrossAttentionBlock, TransformerBlock, TransformerStack
    from multitower.nn.gated import GatedCrossAttentionBlock
    from multitower.nn.kv_cache import CrossKVCache, KVCache
    from multitower.nn.mlp import MLP
    from multitower.nn.norms import RMSNorm, make_norm
    from multitower.nn.rotary import Rotary

# name -> submodule defining it (imported when the name is first read)
_LAZY: dict[str, str] = {
    "CrossAttention": "attention",
    "SelfAttention": "attention",
    "CrossAttentionBlock": "block",
    "TransformerBlock": "block",
    "TransformerStack": "block",
    "GatedCrossAttentionBlock": "gated",
    "CrossKVCache": "kv_cache",
    "KVCache": "kv_cache",
    "MLP": "mlp",
    "RMSNorm": "norms",
    "make_norm": "norms",
    "Rotary": "rotary",
}

__all__ = [
    "MLP",
    "CrossAttention",
    "CrossAttentionBlock",
    "CrossKVCache",
    "GatedCrossAttentionBlock",
    "KVCache",
    "RMSNorm",
    "Rotary",
    "SelfAttention",
    "TransformerBlock",
    "TransformerStack",
    "check_heads",
    "make_norm",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
