"""Decoding loops that live outside the models."""

from multitower.generation.interleaved import generate
from multitower.generation.sampling import sample_next_token

__all__ = ["generate", "sample_next_token"]
