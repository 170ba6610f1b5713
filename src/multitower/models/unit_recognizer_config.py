"""The config of the CTC unit recogniser (:class:`~multitower.models.unit_recognizer.UnitRecognizer`).

Kept apart from the model so that a config can be built and checked without
importing torch; :mod:`multitower.models.unit_recognizer` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from multitower.nn.checks import NORM_KINDS, check_heads, check_numbers


@dataclass(frozen=True)
class UnitRecognizerConfig:
    """Size of a :class:`UnitRecognizer`.

    Attributes:
        unit_vocab_size: number of speech-tower ids (specials included); inputs lie in
            ``[0, unit_vocab_size)``.
        num_chars: output classes, index 0 being the CTC blank (``CharAlphabet.num_classes``).
        upsample: output frames per input position.
        max_len: longest accepted input, in unit positions.
    """

    unit_vocab_size: int
    num_chars: int
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    upsample: int = 2
    max_len: int = 2048
    norm: str = "rms"
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        check_numbers(
            self,
            ints=(
                "unit_vocab_size",
                "num_chars",
                "d_model",
                "num_layers",
                "num_heads",
                "upsample",
                "max_len",
            ),
            floats=("mlp_ratio", "rope_base"),
        )
        for name in (
            "unit_vocab_size",
            "d_model",
            "num_layers",
            "num_heads",
            "upsample",
            "max_len",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"UnitRecognizerConfig.{name} must be a positive int, got {value!r}"
                )
        if not isinstance(self.num_chars, int) or self.num_chars < 2:
            raise ValueError(
                f"UnitRecognizerConfig.num_chars must be an int >= 2 (the blank plus at least "
                f"one character), got {self.num_chars!r}"
            )
        check_heads(self.d_model, self.num_heads)
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"UnitRecognizerConfig: head_dim = d_model / num_heads = "
                f"{self.d_model // self.num_heads} must be even for rotary positions"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(
                f"UnitRecognizerConfig.mlp_ratio must be positive, got {self.mlp_ratio}"
            )
        if self.norm not in NORM_KINDS:
            raise ValueError(
                f"UnitRecognizerConfig.norm must be one of {NORM_KINDS}, got {self.norm!r}"
            )
        if not self.rope_base > 0:
            raise ValueError(
                f"UnitRecognizerConfig.rope_base must be positive, got {self.rope_base}"
            )

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.d_model)
