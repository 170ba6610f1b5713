"""Configuration of the speech-text experiment (the YAML sections of ``multitower run``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multitower.data.speech.units import UnitConfig
from multitower.train.trainer import TrainConfig

SYSTEMS: dict[str, dict[str, Any]] = {
    "zipper": {"kind": "zipper", "freeze": ()},
    "zipper_frozen_speech": {"kind": "zipper", "freeze": ("speech",)},
    "zipper_frozen_text": {"kind": "zipper", "freeze": ("text",)},
    "baseline": {"kind": "baseline", "freeze": ()},
}


@dataclass(frozen=True)
class CorpusSection:
    """Sizes of the generated corpus (see :class:`SpeechCorpusConfig`)."""

    n_text: int = 20000
    n_unaligned: int = 2000
    n_aligned: int = 1000
    n_test: int = 200
    voices: tuple[str, ...] = ("en-us", "en-gb-x-rp", "en+m3", "en+f2")
    rates: tuple[int, ...] = (150, 190)
    pitches: tuple[int, ...] = (40, 60)
    dir: str | None = None  # reuse/build the speech corpus here instead of RUN_DIR/corpus
    # text-tower pre-training text: "generated", "wordnet" (Debian's wordnet-base
    # example sentences) or the path of a text file with one sentence per line
    text_source: str = "generated"

    def __post_init__(self) -> None:
        if self.n_text < 1 or self.n_aligned < 1 or self.n_test < 1 or self.n_unaligned < 1:
            raise ValueError("n_text, n_unaligned, n_aligned and n_test must all be >= 1")


@dataclass(frozen=True)
class TextTokenizerSection:
    kind: str = "bpe"  # or "characters"
    vocab_size: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("bpe", "characters"):
            raise ValueError(f"kind must be 'bpe' or 'characters', got {self.kind!r}")


@dataclass(frozen=True)
class TowerSection:
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    max_seq_len: int = 1024


@dataclass(frozen=True)
class FusionSection:
    cross_attention_every: int = 2
    input_projection: str = "paper"
    fusion_mlp_ratio: float = 1.0


@dataclass(frozen=True)
class RecognizerSection:
    d_model: int = 128
    num_layers: int = 3
    num_heads: int = 4
    upsample: int = 2
    unit_noise: float = 0.1  # augmentation: share of units replaced at random per read
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=1000, batch_size=32, lr=1e-3, warmup_steps=50)
    )
    # -- the TTS scorer's decoding (README "The TTS scorer"; SCORER_FINDINGS.md) --
    # time masking while training: about mask_prob of the units hidden, in spans
    mask_prob: float = 0.0
    mask_span: int = 3
    # train on the aligned pairs minus the experiment's valid_pairs, which tune the
    # decoder below (false: on every aligned pair, and a fixed decoder)
    hold_out_valid: bool = True
    # utterances of a separate synthesised scorer corpus added to the recogniser's
    # training pairs (same grammar and speakers, another seed; sentences of the
    # test and held-out pairs removed); 0: the aligned pairs only
    scorer_corpus: int = 0
    beam_size: int = 64  # CTC prefix beam search; 0: greedy best path (no lexicon, no LM)
    lexicon: bool = True  # only words of the text tower's corpus
    lm_order: int = 3  # Kneser-Ney word n-gram on the text tower's corpus; 0: none
    # grids searched on the held-out pairs (one value each: fixed); never the test set
    lm_weights: tuple[float, ...] = (0.5, 0.8)
    word_bonuses: tuple[float, ...] = (0.5, 1.5)

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_prob < 1.0 or self.mask_span < 1:
            raise ValueError(
                f"mask_prob must lie in [0, 1) and mask_span be >= 1, got "
                f"{self.mask_prob}, {self.mask_span}"
            )
        if self.scorer_corpus < 0:
            raise ValueError(f"scorer_corpus must be >= 0, got {self.scorer_corpus}")
        if self.beam_size < 0 or self.lm_order < 0:
            raise ValueError(
                f"beam_size and lm_order must be >= 0, got {self.beam_size}, {self.lm_order}"
            )
        if self.beam_size == 0 and (self.lexicon or self.lm_order):
            raise ValueError("beam_size: 0 (greedy) needs lexicon: false and lm_order: 0")
        if not self.lm_weights or not self.word_bonuses:
            raise ValueError("lm_weights and word_bonuses need at least one value each")


@dataclass(frozen=True)
class EvalSection:
    max_test: int = 200
    batch_size: int = 50
    max_new_text: int = 96
    max_new_speech: int = 400
    temperature: float = 0.0
    top_k: int | None = None


@dataclass(frozen=True)
class SpeechTextConfig:
    """The whole experiment (YAML sections map to these fields)."""

    seed: int = 0
    corpus: CorpusSection = field(default_factory=CorpusSection)
    text_tokenizer: TextTokenizerSection = field(default_factory=TextTokenizerSection)
    units: UnitConfig = field(
        default_factory=lambda: UnitConfig(
            codebook_size=256, unit_rate=25, frames_per_unit=4, dedup=True
        )
    )
    text_tower: TowerSection = field(default_factory=TowerSection)
    speech_tower: TowerSection = field(default_factory=TowerSection)
    fusion: FusionSection = field(default_factory=FusionSection)
    pretrain_text: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=1500, batch_size=64, lr=1e-3)
    )
    pretrain_speech: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=1500, batch_size=32, lr=1e-3)
    )
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=600, batch_size=32, lr=3e-4, fusion_lr=1e-3)
    )
    recognizer: RecognizerSection = field(default_factory=RecognizerSection)
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    # aligned pairs held out of every fraction; their loss is scored every
    # finetune.eval_every steps and at the end, and the best step is kept (0: the last)
    valid_pairs: int = 200
    # fine-tuning steps per fraction (same order as ``fractions``); None: finetune.max_steps
    finetune_steps: tuple[int, ...] | None = None
    systems: tuple[str, ...] = tuple(SYSTEMS)
    # restrict a system to some of the fractions, e.g. {zipper_frozen_text: [0.1]}
    system_fractions: dict[str, tuple[float, ...]] = field(default_factory=dict)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        for f in self.fractions:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"fractions must lie in (0, 1], got {f}")
        for s in self.systems:
            if s not in SYSTEMS:
                raise ValueError(f"systems: unknown system {s!r}; allowed: {list(SYSTEMS)}")
        if self.valid_pairs < 0:
            raise ValueError(f"valid_pairs must be >= 0, got {self.valid_pairs}")
        if self.finetune_steps is not None:
            if len(self.finetune_steps) != len(self.fractions):
                raise ValueError(
                    f"finetune_steps needs one entry per fraction {list(self.fractions)}, "
                    f"got {list(self.finetune_steps)}"
                )
            if any(n < 1 for n in self.finetune_steps):
                raise ValueError(f"finetune_steps must be >= 1, got {list(self.finetune_steps)}")
        for s, fracs in self.system_fractions.items():
            if s not in self.systems:
                raise ValueError(
                    f"system_fractions: {s!r} is not one of the systems {list(self.systems)}"
                )
            unknown = [f for f in fracs if f not in self.fractions]
            if unknown or not fracs:
                raise ValueError(
                    f"system_fractions[{s}]: {list(fracs)} must be a non-empty subset of "
                    f"fractions {list(self.fractions)}"
                )

    def runs(self, fraction: float) -> list[str]:
        """The systems fine-tuned at ``fraction``, in ``systems`` order."""
        return [s for s in self.systems if fraction in self.system_fractions.get(s, self.fractions)]

    def steps(self, fraction: float) -> int:
        """Fine-tuning steps at ``fraction``."""
        if self.finetune_steps is None:
            return self.finetune.max_steps
        return self.finetune_steps[self.fractions.index(fraction)]
