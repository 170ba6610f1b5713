"""Training data and task for interleaved multimodal language models (Zipper, baseline).

* :class:`TokenSequences` + :func:`~multitower.data.padding.pad_right` + ``NextTokenTask``:
  one-modality pre-training of a tower (text on text, speech tower on speech units).
* :class:`PairedDirections`: aligned (speech, text) pairs turned into speech
  recognition examples ``[speech][text]`` (loss on text) and synthesis examples
  ``[text][speech]`` (loss on speech); both directions can be trained at once
  (spec "Training": per-modality loss weights).
* :class:`InterleavedLMTask`: next-token loss of every tower, weighted per token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from multitower.interleave import Modality, Segment, TowerBatch, collate_interleaved
from multitower.losses import interleaved_next_token_loss
from multitower.train.task import LossOutput

DIRECTIONS = ("asr", "tts")


class TokenSequences:
    """A list of id sequences, each returned as ``[bos] + ids + [eos]`` (truncated)."""

    def __init__(
        self, sequences: Sequence[Sequence[int]], bos: int, eos: int, max_len: int
    ) -> None:
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3, got {max_len}")
        self.sequences = sequences
        self.bos, self.eos, self.max_len = bos, eos, max_len

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> list[int]:
        ids = list(self.sequences[i])[: self.max_len - 2]
        return [self.bos, *ids, self.eos]

    def lengths(self) -> list[int]:
        """Each item's length (``TrainConfig.group_by_length``)."""
        return [min(len(s) + 2, self.max_len) for s in self.sequences]


@dataclass(frozen=True)
class PairedExample:
    """One interleaved example and the modalities it is scored on."""

    segments: list[Segment]
    loss_weights: dict[str, float]


class PairedDirections:
    """Aligned pairs as recognition and/or synthesis examples.

    Args:
        pairs: ``(speech ids, text ids)`` in each modality's own vocabulary.
        directions: subset of ``("asr", "tts")``; item ``i`` is pair
            ``i // len(directions)`` in direction ``i % len(directions)``.
        speech, text: modality names.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        directions: Sequence[str] = DIRECTIONS,
        *,
        speech: str = "speech",
        text: str = "text",
    ) -> None:
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad or not directions:
            raise ValueError(
                f"directions must be a non-empty subset of {DIRECTIONS}, got {directions}"
            )
        self.pairs, self.directions = pairs, tuple(directions)
        self.speech, self.text = speech, text

    def __len__(self) -> int:
        return len(self.pairs) * len(self.directions)

    def lengths(self) -> list[int]:
        """Each item's token count, both segments (``TrainConfig.group_by_length``)."""
        return [len(s) + len(t) for s, t in self.pairs for _ in self.directions]

    def __getitem__(self, i: int) -> PairedExample:
        speech_ids, text_ids = self.pairs[i // len(self.directions)]
        s, t = Segment(self.speech, speech_ids), Segment(self.text, text_ids)
        if self.directions[i % len(self.directions)] == "asr":
            return PairedExample([s, t], {self.text: 1.0})
        return PairedExample([t, s], {self.speech: 1.0})


def balanced_weights(
    items: Sequence[PairedExample], shares: Mapping[str, float]
) -> list[dict[str, float]]:
    """Per-example loss weights under which each output modality's targets carry its
    share of the batch's loss.

    With plain token weights a batch's loss is dominated by the modality with the
    longest outputs (61 speech units against 14 text tokens per utterance in the
    speech-text recipe: ASR gets a fifth of the gradient). Here each modality's
    target tokens are averaged on their own and the averages mixed by ``shares``
    (renormalised over the modalities present in the batch); the total weight, and
    so the token count a trainer sees, is unchanged.
    """
    counts: dict[str, float] = {}
    for x in items:
        for seg in x.segments:
            w = x.loss_weights.get(seg.modality, 0.0)
            if w:
                if seg.modality not in shares:
                    raise ValueError(
                        f"shares has no entry for output modality {seg.modality!r} "
                        f"(given: {sorted(shares)})"
                    )
                counts[seg.modality] = counts.get(seg.modality, 0.0) + w * (len(seg.tokens) + 1)
    total, norm = sum(counts.values()), sum(shares[m] for m in counts)
    if not counts or norm <= 0:
        return [dict(x.loss_weights) for x in items]
    factor = {m: shares[m] / norm * total / n for m, n in counts.items()}
    return [{m: w * factor.get(m, 1.0) for m, w in x.loss_weights.items()} for x in items]


def interleaved_collate(
    modalities: Mapping[str, Modality], shares: Mapping[str, float] | None = None
) -> Callable[[list[PairedExample]], dict[str, TowerBatch]]:
    """Collate :class:`PairedExample` s for a model with these modalities.

    ``shares``: output modality -> share of each batch's loss (:func:`balanced_weights`);
    ``None`` weighs every target token the same.
    """
    if shares is not None:
        bad = {m: v for m, v in shares.items() if m not in modalities or not v >= 0}
        if bad or sum(shares.values()) <= 0:
            raise ValueError(
                f"shares must map modalities of {sorted(modalities)} to weights >= 0 with a "
                f"positive sum, got {dict(shares)}"
            )

    def collate(items: list[PairedExample]) -> dict[str, TowerBatch]:
        weights = balanced_weights(items, shares) if shares else [x.loss_weights for x in items]
        return collate_interleaved([x.segments for x in items], modalities, loss_weights=weights)

    return collate


class InterleavedLMTask:
    """Next-token loss over every tower of an interleaved batch.

    ``input_noise`` (training only): each target token, as the input that predicts
    the next one, is replaced by a random token of its modality with this
    probability; the targets stay the real tokens. Teacher forcing otherwise lets
    the output modality's own history explain most of the next token, and a model
    learns to read the other modality more slowly (word dropout, Bowman et al.
    2016). ``modalities`` (the model's, :attr:`Zipper.modalities`) says which ids
    each tower's modalities occupy; the special ids are never drawn or replaced.
    Draws come from the global torch RNG, which the trainer checkpoints, so a
    resumed run draws the same noise.
    """

    def __init__(
        self, input_noise: float = 0.0, modalities: Mapping[str, Modality] | None = None
    ) -> None:
        if not 0.0 <= input_noise < 1.0:
            raise ValueError(f"input_noise must be in [0, 1), got {input_noise}")
        if input_noise and not modalities:
            raise ValueError("input_noise needs the model's modalities")
        self.input_noise = input_noise
        self.modalities = dict(modalities or {})

    def noisy_inputs(self, batch: Mapping[str, TowerBatch]) -> dict[str, TowerBatch]:
        """``batch`` with target tokens replaced at random as inputs (see the class)."""
        out = dict(batch)
        for tower, tb in batch.items():
            tokens = tb.tokens
            targets = tb.loss_weights > 0  # (B, T): tokens that are predicted
            new = tokens
            for m in self.modalities.values():
                if m.tower != tower:
                    continue
                specials = torch.tensor([m.pad_id, m.bos_id, m.eos_id], device=tokens.device)
                local = tokens - m.offset
                inside = (local >= 0) & (local < m.vocab_size) & ~torch.isin(local, specials)
                draw = torch.randint(0, m.vocab_size, tokens.shape, device=tokens.device)
                hit = torch.rand(tokens.shape, device=tokens.device) < self.input_noise
                replace = hit & targets & inside & ~torch.isin(draw, specials)
                new = torch.where(replace, draw + m.offset, new)
            out[tower] = TowerBatch(
                new, tb.positions, tb.global_positions, tb.valid, tb.loss_weights
            )
        return out

    def compute_loss(self, model: nn.Module, batch: Mapping[str, TowerBatch]) -> LossOutput:
        noisy = self.input_noise > 0 and model.training
        logits = model(self.noisy_inputs(batch) if noisy else batch)
        loss = interleaved_next_token_loss(logits, batch)
        weight = sum(tb.loss_weights[:, 1:].sum() for tb in batch.values())
        return LossOutput(loss=loss, num_tokens=weight)  # type: ignore[arg-type]


@torch.no_grad()
def mean_loss(
    model: nn.Module,
    dataset: PairedDirections,
    collate: Callable[[list[PairedExample]], dict[str, TowerBatch]],
    *,
    batch_size: int = 32,
) -> float:
    """Token-weighted mean next-token loss of ``model`` over ``dataset`` (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = count = 0.0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
        batch = {k: v.to(device) for k, v in batch.items()}
        weight = float(sum(tb.loss_weights[:, 1:].sum() for tb in batch.values()))
        total += float(interleaved_next_token_loss(model(batch), batch)) * weight
        count += weight
    model.train(was_training)
    return total / max(count, 1e-8)
