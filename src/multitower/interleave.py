"""Interleaved multimodal examples and the tensors every model consumes.

An example is a list of :class:`Segment` s in linear order, each in one modality,
e.g. ``[speech][text]`` (speech recognition) or ``[text][speech]`` (synthesis).
Each segment becomes ``[bos] + tokens + [eos]`` in its modality's vocabulary.
Collation groups the tokens by *tower*: for Zipper every modality has its own
tower; for the vocabulary-expansion baseline all modalities share one tower and
are told apart by an id offset. Each token keeps

* its tower-local position (self-attention order and KV-cache slot),
* its global position in the example's linear order (cross-attention order),
* whether it is real (right padding is not), and
* the loss weight of predicting it from the previous token of its tower.

Zipper's causal cross-attention rule (spec "Causal cross-attention over
interleaved sequences"): a token at global position p sees another tower's token
at global position q only when q < p. :func:`cross_attention_mask` builds that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from multitower.data.padding import pad_right


@dataclass(frozen=True)
class Modality:
    """One modality's vocabulary and where it lives inside a tower.

    Args:
        name: modality name, e.g. ``"text"``.
        tower: name of the tower whose vocabulary holds it.
        vocab_size: size of the modality's own vocabulary (special tokens included).
        offset: id of the modality's token 0 inside the tower vocabulary.
        pad_id, bos_id, eos_id: special ids in the modality's own vocabulary.
    """

    name: str
    tower: str
    vocab_size: int
    offset: int = 0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError(f"modality {self.name!r}: vocab_size must be positive")
        for key in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, key) < self.vocab_size:
                raise ValueError(
                    f"modality {self.name!r}: {key}={getattr(self, key)} outside [0, {self.vocab_size})"
                )


@dataclass(frozen=True)
class Segment:
    """A run of tokens in one modality (ids of the modality's own vocabulary, no bos/eos)."""

    modality: str
    tokens: Sequence[int]


@dataclass
class TowerBatch:
    """All tokens of one tower in a batch, right padded to ``T``.

    Attributes:
        tokens: ``(B, T)`` ids in the tower vocabulary (pad where ``valid`` is False).
        positions: ``(B, T)`` tower-local positions.
        global_positions: ``(B, T)`` positions in each example's linear order.
        valid: ``(B, T)`` True for real tokens.
        loss_weights: ``(B, T)`` weight of predicting this token from the previous one.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    global_positions: torch.Tensor
    valid: torch.Tensor
    loss_weights: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def to(self, device: torch.device | str) -> TowerBatch:
        return TowerBatch(
            self.tokens.to(device),
            self.positions.to(device),
            self.global_positions.to(device),
            self.valid.to(device),
            self.loss_weights.to(device),
        )


InterleavedBatch = dict[str, TowerBatch]


def check_modalities(names: Sequence[str], modalities: Mapping[str, Modality], where: str) -> None:
    """Raise a ValueError naming any modality that is not in ``modalities``."""
    for name in names:
        if name not in modalities:
            raise ValueError(f"{where}: unknown modality {name!r}; allowed: {sorted(modalities)}")


def segment_ids(segment: Segment, modality: Modality, *, close: bool = True) -> list[int]:
    """Tower-vocabulary ids of ``[bos] + tokens (+ [eos])`` for one segment.

    Raises:
        ValueError: a token outside the modality's vocabulary, or a special token inside
            the segment's content.
    """
    ids = [int(t) for t in segment.tokens]
    for t in ids:
        if not 0 <= t < modality.vocab_size:
            raise ValueError(
                f"modality {modality.name!r}: token id {t} is outside its vocabulary "
                f"[0, {modality.vocab_size})"
            )
    body = [modality.bos_id, *ids] + ([modality.eos_id] if close else [])
    return [modality.offset + t for t in body]


def collate_interleaved(
    examples: Sequence[Sequence[Segment]],
    modalities: Mapping[str, Modality],
    *,
    loss_weights: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
    open_last: Sequence[bool] | None = None,
) -> InterleavedBatch:
    """Turn examples into per-tower tensors.

    Args:
        examples: each a list of segments in linear order; any order and number.
        modalities: modality name -> :class:`Modality` (from the model).
        loss_weights: modality name -> weight of its tokens as prediction targets,
            for all examples or one mapping per example (e.g. speech recognition and
            synthesis examples mixed in one batch); modalities absent get weight 0
            (input only). ``bos`` is never a target.
        open_last: per example, True to leave the last segment without ``eos``
            (a segment being generated).

    Returns:
        tower name -> :class:`TowerBatch`; every tower of ``modalities`` is present
        with at least one (padding) column.
    """
    if len(examples) == 0:
        raise ValueError("collate_interleaved: no examples")
    if loss_weights is None or isinstance(loss_weights, Mapping):
        per_example = [dict(loss_weights or {})] * len(examples)
    else:
        per_example = [dict(w) for w in loss_weights]
        if len(per_example) != len(examples):
            raise ValueError(
                f"loss_weights: {len(per_example)} mappings for {len(examples)} examples"
            )
    for w in per_example:
        check_modalities(list(w), modalities, "loss_weights")
    towers = list(dict.fromkeys(m.tower for m in modalities.values()))
    pad = {}
    for m in modalities.values():
        pad.setdefault(m.tower, m.offset + m.pad_id)
    rows: dict[str, list[tuple[list[int], list[int], list[float]]]] = {t: [] for t in towers}
    for i, example in enumerate(examples):
        per_tower: dict[str, tuple[list[int], list[int], list[float]]] = {
            t: ([], [], []) for t in towers
        }
        gpos = 0
        for j, segment in enumerate(example):
            check_modalities([segment.modality], modalities, f"example {i} segment {j}")
            modality = modalities[segment.modality]
            close = not (open_last is not None and open_last[i] and j == len(example) - 1)
            ids = segment_ids(segment, modality, close=close)
            weight = float(per_example[i].get(segment.modality, 0.0))
            toks, gps, wts = per_tower[modality.tower]
            toks.extend(ids)
            gps.extend(range(gpos, gpos + len(ids)))
            wts.extend([0.0] + [weight] * (len(ids) - 1))  # bos is given, never predicted
            gpos += len(ids)
        for t in towers:
            rows[t].append(per_tower[t])
    batch: InterleavedBatch = {}
    for t in towers:
        toks, gps, wts = zip(*rows[t])
        tokens = pad_right(toks, pad[t], min_len=1)  # (B, T): every tower has a column
        B, T = tokens.shape
        gpos_t = pad_right(gps, 0, min_len=1)
        weights = pad_right(wts, 0.0, dtype=torch.get_default_dtype(), min_len=1)
        lengths = torch.tensor([len(x) for x in toks])
        valid = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
        positions = torch.arange(T).expand(B, T).clone()
        batch[t] = TowerBatch(tokens, positions, gpos_t, valid, weights)
    return batch


def cross_attention_mask(
    query_global_positions: torch.Tensor,
    query_valid: torch.Tensor,
    source_global_positions: torch.Tensor,
    source_valid: torch.Tensor,
) -> torch.Tensor:
    """Which source tokens each query token may attend to.

    Args:
        query_global_positions, query_valid: ``(B, Tq)``.
        source_global_positions, source_valid: ``(B, S)``.

    Returns:
        ``(B, Tq, S)`` bool: real source tokens strictly before the (real) query token.
    """
    earlier = source_global_positions[:, None, :] < query_global_positions[:, :, None]
    return earlier & source_valid[:, None, :] & query_valid[:, :, None]
