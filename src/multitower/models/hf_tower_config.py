"""The config of a Hugging Face causal LM used as a Zipper tower (:class:`~multitower.models.hf_tower.HFTower`).

The architecture is the ``transformers`` config itself (``hf_config``, the dict
``PretrainedConfig.to_dict()`` gives), so a tower can be rebuilt from a saved
Zipper's ``config.json`` alone; the sizes Zipper needs (width, depth, heads,
vocabulary, longest sequence) are read from it by name per architecture. The
special ids are Zipper's own: every interleaved segment is ``[bos] ... [eos]``,
so pad, bos and eos must be three different ids (GPT-2's single
``<|endoftext|>`` serves as both bos and eos, which cannot work).

Kept apart from the model, without torch or ``transformers``, so that a config
can be built and checked in well under a second;
:mod:`multitower.models.hf_tower` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multitower.nn.checks import check_heads

HF_EXTRA = "multitower[hf]"


@dataclass(frozen=True)
class HFLayout:
    """Where one ``transformers`` architecture keeps the sizes Zipper reads.

    Args:
        d_model, num_layers, num_heads, max_seq_len: keys of the HF config dict.
        norm: the norm of the fusion blocks zipped into such a tower (the tower's own
            kind: ``"layer"`` for GPT-2, ``"rms"`` for the Llama family).
        learned_positions: a learned position table added to the embeddings (GPT-2),
            otherwise rotary positions inside attention.
    """

    d_model: str
    num_layers: str
    num_heads: str
    max_seq_len: str
    norm: str
    learned_positions: bool


_ROTARY = HFLayout(
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "rms",
    learned_positions=False,
)

# HF model_type -> layout. Only architectures the test suite checks for exact logit
# parity with the HF model are listed.
HF_LAYOUTS: dict[str, HFLayout] = {
    "gpt2": HFLayout("n_embd", "n_layer", "n_head", "n_positions", "layer", learned_positions=True),
    "llama": _ROTARY,
    "qwen2": _ROTARY,
    "gemma": _ROTARY,
}


@dataclass(frozen=True)
class HFTowerConfig:
    """A ``transformers`` causal LM as a Zipper tower.

    Args:
        hf_config: the model's config as a dict (``PretrainedConfig.to_dict()``), with
            ``model_type`` one of :data:`HF_LAYOUTS`.
        pad_id, bos_id, eos_id: three different ids inside the vocabulary; Zipper opens
            every segment with ``bos`` and closes it with ``eos``.
    """

    hf_config: dict[str, Any]
    pad_id: int
    bos_id: int
    eos_id: int

    def __post_init__(self) -> None:
        model_type = self.hf_config.get("model_type")
        if model_type not in HF_LAYOUTS:
            raise ValueError(
                f"hf_config.model_type {model_type!r} is not supported; supported: "
                f"{', '.join(sorted(HF_LAYOUTS))}"
            )
        layout = HF_LAYOUTS[model_type]
        for key in ("vocab_size", layout.d_model, layout.num_layers, layout.num_heads):
            value = self.hf_config.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"hf_config.{key} must be a positive integer, got {value!r}")
        value = self.hf_config.get(layout.max_seq_len)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"hf_config.{layout.max_seq_len} must be a positive integer, got {value!r}"
            )
        check_heads(self.d_model, self.num_heads)
        ids = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        for name, value in ids.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name} must lie in [0, vocab_size={self.vocab_size}), got {value}"
                )
        if len(set(ids.values())) < 3:
            raise ValueError(
                f"pad_id, bos_id and eos_id must be three different ids, got {ids}: Zipper "
                "opens each segment with bos, closes it with eos and never samples pad or bos "
                "(GPT-2's <|endoftext|> cannot be both bos and eos; choose another eos)"
            )

    @property
    def layout(self) -> HFLayout:
        return HF_LAYOUTS[self.hf_config["model_type"]]

    @property
    def model_type(self) -> str:
        return str(self.hf_config["model_type"])

    @property
    def vocab_size(self) -> int:
        return int(self.hf_config["vocab_size"])

    @property
    def d_model(self) -> int:
        return int(self.hf_config[self.layout.d_model])

    @property
    def num_layers(self) -> int:
        return int(self.hf_config[self.layout.num_layers])

    @property
    def num_heads(self) -> int:
        return int(self.hf_config[self.layout.num_heads])

    @property
    def max_seq_len(self) -> int:
        return int(self.hf_config[self.layout.max_seq_len])

    @property
    def norm(self) -> str:
        return self.layout.norm
