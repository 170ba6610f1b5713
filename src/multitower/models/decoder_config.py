"""The config of one decoder tower (:class:`~multitower.models.decoder.DecoderTower`).

Kept apart from the model so that a config can be built and checked without
importing torch; :mod:`multitower.models.decoder` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from multitower.nn.checks import NORM_KINDS, check_heads, check_numbers


@dataclass(frozen=True)
class DecoderConfig:
    """Size and vocabulary of one decoder tower.

    ``pad_id``, ``bos_id`` and ``eos_id`` are ids inside ``vocab_size``.
    """

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    max_seq_len: int = 512
    mlp_ratio: float = 4.0
    norm: str = "rms"
    rope_base: float = 10000.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        check_numbers(
            self,
            ints=(
                "vocab_size",
                "d_model",
                "num_layers",
                "num_heads",
                "max_seq_len",
                "pad_id",
                "bos_id",
                "eos_id",
            ),
            floats=("mlp_ratio", "rope_base"),
        )
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_heads(self.d_model, self.num_heads)
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"head_dim = d_model / num_heads = {self.d_model // self.num_heads} must be even "
                "for rotary positions"
            )
        if self.norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name} must lie in [0, vocab_size={self.vocab_size}), got {value}"
                )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.d_model)
