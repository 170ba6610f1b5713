"""The systems the speech-text experiment compares, and how each is set up.

:func:`build_system` builds one (Zipper, its frozen variants, the
vocabulary-expansion baseline) from the pre-trained towers;
:func:`finetune_config` gives its fine-tuning settings; :func:`time_scales`
places text on the speech's time axis (``cross_attention_positions: time``);
:func:`evaluation_pairs` lists the test utterances every system is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from multitower.data.tokenizer import TextTokenizer
from multitower.experiments.zipper_speech_text.config import SYSTEMS
from multitower.models.baseline import expand_vocabulary
from multitower.models.decoder import DecoderTower
from multitower.models.hf_tower import HFTower
from multitower.models.zipper import Zipper, ZipperConfig
from multitower.train.trainer import TrainConfig


def build_system(
    system: str,
    text: DecoderTower | HFTower,
    speech: DecoderTower,
    fusion: ZipperConfig,
    seed: int,
) -> nn.Module:
    """A system to fine-tune, initialised from the pre-trained towers (see :data:`SYSTEMS`).

    ``fusion`` gives the Zipper's fusion settings; its towers are replaced by the
    pre-trained towers' configs.
    """
    spec = SYSTEMS[system]
    if spec["kind"] == "baseline":
        generator = torch.Generator().manual_seed(seed)
        return expand_vocabulary(
            text, "text", {"speech": speech.config.vocab_size}, generator=generator
        )
    zcfg = replace(fusion, towers={"speech": speech.config, "text": text.config})
    torch.manual_seed(seed)
    model = Zipper(zcfg)
    model.load_tower("text", text)
    model.load_tower("speech", speech)
    model.freeze_towers(spec["freeze"])
    return model


def time_scales(pairs: Sequence[tuple[list[int], list[int]]]) -> dict[str, float]:
    """``fusion.position_scales`` that put both towers on the speech's time axis:
    speech 1, text the mean number of speech ids per text id of ``pairs``
    (``(speech ids, text ids)``, bos and eos counted in both)."""
    speech = sum(len(u) + 2 for u, _ in pairs)
    text = sum(len(t) + 2 for _, t in pairs)
    return {"speech": 1.0, "text": speech / text}


def evaluation_pairs(
    splits: dict[str, list[tuple[str, str, Path]]],
    units: dict[str, list[list[int]]],
    text_tok: TextTokenizer,
    max_test: int,
) -> tuple[list[tuple[list[int], list[int]]], list[str]]:
    """The evaluated test utterances: ``(speech ids, text ids)`` pairs and their transcripts.

    Args:
        splits: :meth:`SpeechTextExperiment.corpus`.
        units: speech-tower ids per split (:meth:`SpeechTextExperiment.encode_units`).
        text_tok: the text tokenizer.
        max_test: the first this many test utterances are evaluated.
    """
    items = splits["test"][:max_test]
    pairs = [(u, text_tok.encode(t)) for u, (_, t, _) in zip(units["test"], items)]
    return pairs, [t for _, t, _ in items]


def finetune_config(system: str, cfg: TrainConfig) -> TrainConfig:
    """Fine-tuning settings of one system.

    The baseline has no fusion parameters: what Zipper learns in its fusion layers
    (at ``fusion_lr``) the baseline must learn in its shared tower and new
    embedding rows, so it trains every parameter at ``fusion_lr`` (when set).
    """
    if SYSTEMS[system]["kind"] == "baseline" and cfg.fusion_lr is not None:
        return replace(cfg, lr=cfg.fusion_lr, fusion_lr=None, gate_lr=None)
    return cfg
