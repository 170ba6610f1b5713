"""Decoding loops that live outside the models."""

from multitower.generation.interleaved import CompileOptions, generate
from multitower.generation.sampling import sample_next_token

__all__ = ["CompileOptions", "generate", "sample_next_token"]
