"""Training, saving and running the fixed unit-to-character recogniser that scores TTS.

TTS output (speech units) is judged by transcribing it with a separate
:class:`~multitower.models.unit_recognizer.UnitRecognizer`, trained once with CTC
on every aligned (units, transcript) pair and never one of the systems compared;
the transcript's WER against the input text is the TTS score.

A trained recogniser is a directory holding

* ``model.safetensors`` and ``config.json`` (``model_type = "UnitRecognizer"``),
  written by :func:`multitower.models.io.save_model`;
* ``alphabet.json``: the :class:`~multitower.data.charset.CharAlphabet`;
* optionally ``decoder.json``: the :class:`TextDecoder` (beam size, lexicon,
  word n-gram LM, its weight and word bonus) that turns the recogniser's frames
  into text; without it the scorer decodes greedily;

and, when it is the training run directory, the Trainer's ``checkpoints/`` and
``metrics.jsonl`` beside them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from multitower.data.charset import CharAlphabet
from multitower.data.padding import pad_right
from multitower.experiments.zipper_speech_text.text_decoder import (
    TextDecoder,
    character_error_rate,
    load_decoder,
)
from multitower.io import write_text_atomic
from multitower.losses import ctc_loss
from multitower.models.io import save_model
from multitower.models.pretrained import load_pretrained
from multitower.models.unit_recognizer import UnitRecognizer, UnitRecognizerConfig
from multitower.train.task import LossOutput
from multitower.train.trainer import EvalFn, TrainConfig, Trainer

ALPHABET_NAME = "alphabet.json"


# -- data --------------------------------------------------------------------------------------
@dataclasses.dataclass
class UnitCTCBatch:
    """A padded batch of (units, character ids) pairs.

    Attributes:
        units: ``(B, T)`` speech-tower ids, padded with 0 after each row's length.
        lengths: ``(B,)`` real units per row.
        targets: ``(B, S)`` character ids (``>= 1``), padded with 0.
        target_lengths: ``(B,)`` characters per row.
    """

    units: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor


def _pad_with_lengths(
    seqs: Sequence[Sequence[int] | torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad integer sequences with 0: ``(B, max_len)`` long tensor and ``(B,)`` lengths."""
    return pad_right(seqs, 0), torch.tensor([len(s) for s in seqs], dtype=torch.long)


class UnitTranscriptDataset:
    """(units, transcript) pairs as ``(units, char_ids)`` long tensors.

    Every transcript is encoded up front, so an unknown character is reported
    before training starts.

    Args:
        pairs: ``(units, transcript)``: speech-tower ids (ints >= 0) and its text.
        alphabet: encodes the transcripts.
        unit_noise: probability of replacing each unit by a random one in
            ``[first_unit, vocab_size)`` every time an item is read (augmentation
            against memorising a small aligned set; drawn from torch's global RNG,
            which the Trainer seeds and checkpoints).
        mask_prob: SpecAugment-style time masking (Park et al. 2019, section 2),
            applied after the noise: each unit starts a masked span with
            probability ``mask_prob / mask_span``, and masked units become
            ``mask_id``, so about ``mask_prob`` of the units are hidden.
        mask_span: length of each masked span, in units.
        mask_id: the id masked units take (default 0, the pad id, which the
            recogniser's embedding has but real inputs never use).

    Raises:
        ValueError: a pair that is not ``(list of ints >= 0, str)``, or a transcript
            with a character outside ``alphabet`` (the pair index is named).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Sequence[int], str]],
        alphabet: CharAlphabet,
        *,
        unit_noise: float = 0.0,
        vocab_size: int = 0,
        first_unit: int = 3,
        mask_prob: float = 0.0,
        mask_span: int = 3,
        mask_id: int = 0,
    ) -> None:
        if not 0.0 <= unit_noise < 1.0:
            raise ValueError(f"unit_noise must lie in [0, 1), got {unit_noise}")
        if not 0.0 <= mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie in [0, 1), got {mask_prob}")
        if mask_span < 1:
            raise ValueError(f"mask_span must be >= 1, got {mask_span}")
        self.mask_prob, self.mask_span, self.mask_id = mask_prob, mask_span, mask_id
        if unit_noise and vocab_size <= first_unit:
            raise ValueError(f"unit_noise needs vocab_size > first_unit={first_unit}")
        self.unit_noise, self.vocab_size, self.first_unit = unit_noise, vocab_size, first_unit
        self.units: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not isinstance(pair[1], str):
                raise ValueError(f"pair {i} must be (units, transcript str), got {pair!r}")
            units = torch.as_tensor(list(pair[0]), dtype=torch.long)
            if units.dim() != 1 or (units.numel() and int(units.min()) < 0):
                raise ValueError(f"pair {i}: units must be a flat list of ids >= 0")
            try:
                target = alphabet.encode(pair[1])
            except ValueError as err:
                raise ValueError(f"pair {i}: {err}") from None
            self.units.append(units)
            self.targets.append(torch.tensor(target, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.units)

    def lengths(self) -> list[int]:
        """Each pair's number of units (``TrainConfig.group_by_length``)."""
        return [len(u) for u in self.units]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        units = self.units[index]
        if self.unit_noise:
            swap = torch.rand(units.shape) < self.unit_noise
            noise = torch.randint(self.first_unit, self.vocab_size, units.shape)
            units = torch.where(swap, noise, units)
        if self.mask_prob and units.numel():
            starts = torch.rand(units.shape) < self.mask_prob / self.mask_span  # (T,)
            # a unit is masked when a span started at most mask_span - 1 units before it
            window = torch.ones(1, 1, self.mask_span)
            covered = torch.nn.functional.conv1d(
                starts.float()[None, None], window, padding=self.mask_span - 1
            )[0, 0, : units.numel()]  # (T,)
            units = torch.where(covered > 0, torch.full_like(units, self.mask_id), units)
        return units, self.targets[index]


def collate_unit_ctc(items: list[tuple[torch.Tensor, torch.Tensor]]) -> UnitCTCBatch:
    """Pad a list of ``(units, char_ids)`` into a :class:`UnitCTCBatch`."""
    units, lengths = _pad_with_lengths([u for u, _ in items])
    targets, target_lengths = _pad_with_lengths([t for _, t in items])
    return UnitCTCBatch(units, lengths, targets, target_lengths)


def ctc_frames_needed(target: Sequence[int]) -> int:
    """Fewest CTC frames that can emit ``target``: one per label plus a blank between repeats."""
    repeats = sum(1 for a, b in itertools.pairwise(target) if a == b)
    return len(target) + repeats


# -- task --------------------------------------------------------------------------------------
class UnitCTCTask:
    """CTC loss of a :class:`UnitRecognizer` on a :class:`UnitCTCBatch`.

    The loss is the mean over utterances of each one's CTC loss per target
    character, so ``num_tokens`` is the number of utterances.
    """

    def compute_loss(self, model: nn.Module, batch: UnitCTCBatch) -> LossOutput:
        log_probs, out_lengths = model(batch.units, batch.lengths)  # (B, T*U, C), (B,)
        loss = ctc_loss(log_probs, out_lengths, batch.targets, batch.target_lengths)
        return LossOutput(loss=loss, num_tokens=int(batch.units.shape[0]))


# -- inference ---------------------------------------------------------------------------------
@torch.no_grad()
def frame_log_probs(
    model: UnitRecognizer, unit_sequences: Sequence[Sequence[int]], batch_size: int = 64
) -> list[torch.Tensor]:
    """Per-frame character log-probabilities of each unit sequence, in input order.

    Sequences are batched by length (padding does not change a sequence's
    outputs); the model runs in eval mode and gets its previous mode back.

    Args:
        model: a trained recogniser.
        unit_sequences: speech-tower ids of the units only (no bos/eos).
        batch_size: sequences per forward pass.

    Returns:
        One ``(len(units) * upsample, num_chars)`` float32 CPU tensor per sequence
        (``(0, num_chars)`` for an empty one).

    Raises:
        ValueError: ``batch_size <= 0``, or a sequence longer than the model's
            ``max_len`` or with ids out of range.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for i, seq in enumerate(unit_sequences):
        if len(seq) > model.config.max_len:
            raise ValueError(
                f"unit sequence {i} has {len(seq)} units, more than the recogniser's "
                f"max_len={model.config.max_len}"
            )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(unit_sequences)), key=lambda i: len(unit_sequences[i]))
    out = [torch.zeros(0, model.config.num_chars)] * len(unit_sequences)
    try:
        for start in range(0, len(order), batch_size):
            idx = [i for i in order[start : start + batch_size] if len(unit_sequences[i])]
            if not idx:
                continue
            units, lengths = _pad_with_lengths([unit_sequences[i] for i in idx])
            log_probs, out_lengths = model(units.to(device), lengths.to(device))  # (B, T*U, C)
            for row, (i, n) in enumerate(zip(idx, out_lengths.tolist())):
                out[i] = log_probs[row, :n].float().cpu()
    finally:
        model.train(was_training)
    return out


def transcribe(
    model: UnitRecognizer,
    alphabet: CharAlphabet,
    unit_sequences: Sequence[Sequence[int]],
    batch_size: int = 64,
    *,
    decoder: TextDecoder | None = None,
) -> list[str]:
    """Transcripts of unit sequences, in input order (greedy unless ``decoder`` is given).

    Args:
        model: a trained recogniser.
        alphabet: the alphabet it was trained with.
        unit_sequences: speech-tower ids of the units only, in the form the
            recogniser was trained on (no bos/eos); an empty sequence gives ``""``.
        batch_size: sequences per forward pass.
        decoder: how frames become text (``None``: greedy best path).

    Raises:
        ValueError: ``batch_size <= 0``, an alphabet that does not fit the model or
            the decoder, or a sequence longer than the model's ``max_len`` or with
            ids out of range.
    """
    if alphabet.num_classes != model.config.num_chars:
        raise ValueError(
            f"the alphabet has {alphabet.num_classes} classes but the model outputs "
            f"num_chars={model.config.num_chars}"
        )
    if decoder is not None and decoder.alphabet != alphabet:
        raise ValueError("the decoder was built for another alphabet")
    decoder = decoder or TextDecoder(alphabet)
    log_probs = frame_log_probs(model, unit_sequences, batch_size)
    return [decoder.decode(lp) if lp.shape[0] else "" for lp in log_probs]


def recognizer_eval_fn(
    alphabet: CharAlphabet, pairs: Sequence[tuple[Sequence[int], str]], batch_size: int = 64
) -> EvalFn:
    """Trainer ``eval_fn`` returning ``{"cer": ...}`` of the model on held-out ``pairs``."""
    units = [list(u) for u, _ in pairs]
    refs = [t for _, t in pairs]

    def eval_fn(model: nn.Module) -> dict[str, float]:
        hyps = transcribe(model, alphabet, units, batch_size)  # type: ignore[arg-type]
        return {"cer": character_error_rate(refs, hyps)}

    return eval_fn


# -- training, saving, loading -----------------------------------------------------------------
def train_recognizer(
    pairs: Sequence[tuple[Sequence[int], str]],
    alphabet: CharAlphabet,
    config: UnitRecognizerConfig,
    train_cfg: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    eval_pairs: Sequence[tuple[Sequence[int], str]] | None = None,
    unit_noise: float = 0.0,
    mask_prob: float = 0.0,
    mask_span: int = 3,
) -> UnitRecognizer:
    """Train a recogniser with CTC on ``pairs`` and save it into ``run_dir``.

    The weights are seeded from ``train_cfg.seed``. A run directory that already
    holds checkpoints is resumed from its newest intact one. The trained model
    is saved in ``run_dir`` (``model.safetensors``, ``config.json``,
    ``alphabet.json``); :func:`load_recognizer` reads it back.

    Pairs whose transcript needs more CTC frames than ``len(units) * upsample``
    cannot be aligned; they contribute zero loss and are counted in a warning.

    Args:
        pairs: ``(units, transcript)`` training pairs (see :class:`UnitTranscriptDataset`).
        alphabet: output characters; ``config.num_chars`` must equal its ``num_classes``.
        config: model size.
        train_cfg: optimisation and checkpointing (see :class:`TrainConfig`).
        run_dir: checkpoints, ``metrics.jsonl`` and the final model go here.
        eval_pairs: optional held-out pairs whose CER is logged as ``eval/cer``.
        unit_noise: per-unit replacement probability while training (see
            :class:`UnitTranscriptDataset`).
        mask_prob, mask_span: time masking while training (see
            :class:`UnitTranscriptDataset`; masked units take id 0).

    Returns:
        The trained model, in eval mode, on the training device.

    Raises:
        ValueError: ``config`` does not fit ``alphabet`` or the units, or bad pairs.
    """
    if config.num_chars != alphabet.num_classes:
        raise ValueError(
            f"config.num_chars={config.num_chars} must equal the alphabet's num_classes="
            f"{alphabet.num_classes} (its {len(alphabet.chars)} characters plus the blank)"
        )
    dataset = UnitTranscriptDataset(
        pairs,
        alphabet,
        unit_noise=unit_noise,
        vocab_size=config.unit_vocab_size,
        mask_prob=mask_prob,
        mask_span=mask_span,
    )
    max_unit = max((int(u.max()) for u in dataset.units if u.numel()), default=0)
    if max_unit >= config.unit_vocab_size:
        raise ValueError(
            f"the pairs hold unit id {max_unit}, outside config.unit_vocab_size="
            f"{config.unit_vocab_size}"
        )
    longest = max((u.numel() for u in dataset.units), default=0)
    if longest > config.max_len:
        raise ValueError(
            f"the longest unit sequence has {longest} units, more than max_len={config.max_len}"
        )
    unalignable = sum(
        1
        for u, t in zip(dataset.units, dataset.targets)
        if ctc_frames_needed(t.tolist()) > u.numel() * config.upsample
    )
    if unalignable:
        warnings.warn(
            f"{unalignable} of {len(dataset)} pairs have a transcript longer than CTC can emit from "
            f"their units with upsample={config.upsample}; they add nothing to the loss",
            stacklevel=2,
        )
    torch.manual_seed(train_cfg.seed)
    model = UnitRecognizer(config)
    eval_fn = None if eval_pairs is None else recognizer_eval_fn(alphabet, eval_pairs)
    trainer = Trainer(
        model, UnitCTCTask(), dataset, collate_unit_ctc, train_cfg, run_dir, eval_fn=eval_fn
    )
    trainer.resume()
    trainer.fit()
    model.eval()
    save_recognizer(model, alphabet, run_dir)
    return model


def save_recognizer(
    model: UnitRecognizer, alphabet: CharAlphabet, directory: str | os.PathLike[str]
) -> None:
    """Write the model (``save_model``) and ``alphabet.json`` into ``directory``."""
    save_model(model, directory)
    write_text_atomic(
        Path(directory) / ALPHABET_NAME, json.dumps(alphabet.to_dict(), indent=2) + "\n"
    )


def load_recognizer(
    directory: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[UnitRecognizer, CharAlphabet]:
    """Load a recogniser saved by :func:`train_recognizer` / :func:`save_recognizer`.

    Returns:
        ``(model, alphabet)``, the model in eval mode on ``device``.

    Raises:
        FileNotFoundError: ``config.json``, ``model.safetensors`` or ``alphabet.json``
            is missing.
        ValueError: ``config.json`` is not a ``UnitRecognizer``'s (its ``model_type`` is
            named), has unknown keys, or the weights or alphabet do not fit the config.
    """
    directory = Path(directory)
    model = load_pretrained(directory, UnitRecognizer)
    config = model.config
    alphabet_path = directory / ALPHABET_NAME
    if not alphabet_path.is_file():
        raise FileNotFoundError(f"no {ALPHABET_NAME} in {directory}")
    try:
        alphabet = CharAlphabet.from_dict(json.loads(alphabet_path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as err:
        raise ValueError(f"{alphabet_path} is not valid JSON: {err}") from err
    if alphabet.num_classes != config.num_chars:
        raise ValueError(
            f"{alphabet_path} has {alphabet.num_classes} classes but the model has "
            f"num_chars={config.num_chars}"
        )
    return model.to(device).eval(), alphabet


def load_scorer(
    directory: str | os.PathLike[str],
) -> tuple[UnitRecognizer, CharAlphabet, TextDecoder]:
    """The TTS scorer a run saved in ``directory``: recogniser, alphabet and decoder."""
    model, alphabet = load_recognizer(directory)
    return model, alphabet, load_decoder(directory, alphabet)
