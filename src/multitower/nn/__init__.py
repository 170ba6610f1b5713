"""Config-free building blocks shared by every model."""

from multitower.nn.attention import CrossAttention, SelfAttention, check_heads
from multitower.nn.block import CrossAttentionBlock, TransformerBlock, TransformerStack
from multitower.nn.gated import GatedCrossAttentionBlock
from multitower.nn.kv_cache import CrossKVCache, KVCache
from multitower.nn.mlp import MLP
from multitower.nn.norms import RMSNorm, make_norm
from multitower.nn.rotary import Rotary

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
