"""Vocabulary-expansion baseline (Zipper paper, "Baseline").

One pre-trained decoder tower whose vocabulary is extended by the tokens of other
modalities: the new embedding rows are appended after the old ones (which are
kept), and every modality is told apart by an id offset. It consumes exactly the
same interleaved examples as :class:`~multitower.models.zipper.Zipper` (all
segments go, in their linear order, into the single tower ``"joint"``), so the two
approaches are compared on identical data. The tower is a
:class:`~multitower.models.decoder.DecoderTower` or a Hugging Face causal LM
(:class:`~multitower.models.hf_tower.HFTower`), whose embedding and untied head
both grow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from multitower.interleave import Modality, TowerBatch
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.hf_tower import HFTower, HFTowerConfig

JOINT = "joint"


@dataclass(frozen=True)
class VocabExpansionConfig:
    """A joint tower and the modalities packed into its vocabulary.

    Args:
        tower: config of the joint tower; its ``vocab_size`` is the sum of the
            modality vocabularies.
        modality_vocab: modality name -> own vocabulary size, in id order; the first is
            the base modality (offset 0, special ids of ``tower``); the others use
            pad/bos/eos = 0/1/2 of their own vocabulary.
    """

    tower: DecoderConfig | HFTowerConfig
    modality_vocab: dict[str, int]

    def __post_init__(self) -> None:
        if len(self.modality_vocab) < 2:
            raise ValueError("modality_vocab: need the base modality and at least one new one")
        total = sum(self.modality_vocab.values())
        if total != self.tower.vocab_size:
            raise ValueError(
                f"tower.vocab_size ({self.tower.vocab_size}) must equal the sum of "
                f"modality_vocab ({self.modality_vocab} -> {total})"
            )
        for name, size in self.modality_vocab.items():
            if size < 3:
                raise ValueError(f"modality_vocab[{name!r}]={size}: needs room for pad/bos/eos")


class VocabExpansionLM(nn.Module):
    """One decoder over the union of all modality vocabularies."""

    def __init__(self, config: VocabExpansionConfig) -> None:
        super().__init__()
        self.config = config
        self.tower: DecoderTower | HFTower = (
            HFTower(config.tower)
            if isinstance(config.tower, HFTowerConfig)
            else DecoderTower(config.tower)
        )

    @property
    def max_seq_lens(self) -> dict[str, int]:
        """``{"joint": max_seq_len}`` of the one tower."""
        return {JOINT: self.config.tower.max_seq_len}

    @property
    def modalities(self) -> dict[str, Modality]:
        out, offset = {}, 0
        for i, (name, size) in enumerate(self.config.modality_vocab.items()):
            t = self.config.tower
            specials = (t.pad_id, t.bos_id, t.eos_id) if i == 0 else (0, 1, 2)
            out[name] = Modality(name, JOINT, size, offset, *specials)
            offset += size
        return out

    # -- caches (delegated to the single tower) ---------------------------------------------
    def setup_caches(
        self,
        batch: int,
        max_len: int | Mapping[str, int],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        n = max_len if isinstance(max_len, int) else max_len[JOINT]
        self.tower.setup_caches(batch, n, dtype=dtype, device=device)

    def reset_caches(self) -> None:
        self.tower.reset_caches()

    def remove_caches(self) -> None:
        self.tower.remove_caches()

    @property
    def caches_enabled(self) -> bool:
        return self.tower.caches_enabled

    def forward(self, batch: Mapping[str, TowerBatch]) -> dict[str, torch.Tensor]:
        """Logits of the joint tower: ``{"joint": (B, T, V_total)}``."""
        unknown = [t for t in batch if t != JOINT]
        if unknown:
            raise ValueError(f"unknown tower(s) {unknown}; the baseline has only {JOINT!r}")
        tb = batch[JOINT]
        positions = tb.positions if self.caches_enabled else None
        return {JOINT: self.tower(tb.tokens, positions=positions)}


def _with_vocab_size(
    config: DecoderConfig | HFTowerConfig, vocab_size: int
) -> DecoderConfig | HFTowerConfig:
    if isinstance(config, HFTowerConfig):
        return replace(config, hf_config={**config.hf_config, "vocab_size": vocab_size})
    return replace(config, vocab_size=vocab_size)


def expand_vocabulary(
    tower: DecoderTower | HFTower,
    base_modality: str,
    new_modalities: Mapping[str, int],
    *,
    generator: torch.Generator | None = None,
) -> VocabExpansionLM:
    """Build the baseline from a pre-trained tower.

    The old rows of every vocabulary-sized tensor (the embedding, and an HF model's
    head when it is not tied to it) are copied unchanged; each new row starts at
    the mean old row plus normal(0, 0.02) noise, which keeps the initial output
    distribution close to the pre-trained one. Every other weight is copied.

    Args:
        tower: the pre-trained base tower (e.g. text), a DecoderTower or an HFTower.
        base_modality: name of the tower's own modality.
        new_modalities: modality name -> vocabulary size to append.
    """
    if base_modality in new_modalities:
        raise ValueError(f"new_modalities must not contain the base modality {base_modality!r}")
    vocab = {base_modality: tower.config.vocab_size, **dict(new_modalities)}
    joint_cfg = _with_vocab_size(tower.config, sum(vocab.values()))
    model = VocabExpansionLM(VocabExpansionConfig(joint_cfg, vocab))
    old_state, new_state = tower.state_dict(), model.tower.state_dict()
    # The vocabulary-sized tensors are those whose shape changed (a tied head appears
    # under both names and shares the embedding's storage).
    grown = [k for k in new_state if k in old_state and new_state[k].shape != old_state[k].shape]
    state = {k: v for k, v in old_state.items() if k not in grown}
    missing, unexpected = model.tower.load_state_dict(state, strict=False)
    if unexpected or sorted(missing) != sorted(grown) or not grown:
        raise ValueError(f"expand_vocabulary: unexpected keys {unexpected}, missing {missing}")
    done: set[int] = set()
    with torch.no_grad():
        for key in grown:
            old, new = old_state[key], new_state[key]
            if new.shape[1:] != old.shape[1:] or new.shape[0] != joint_cfg.vocab_size:
                raise ValueError(
                    f"expand_vocabulary: {key} has shape {list(old.shape)}, which is not "
                    f"(vocab_size, ...) with vocab_size {tower.config.vocab_size}"
                )
            if new.data_ptr() in done:  # tied to a tensor already filled
                continue
            done.add(new.data_ptr())
            new[: old.shape[0]] = old
            extra = new.shape[0] - old.shape[0]
            noise = torch.randn(extra, *old.shape[1:], generator=generator) * 0.02
            new[old.shape[0] :] = old.mean(0, keepdim=True) + noise.to(old)
    return model
