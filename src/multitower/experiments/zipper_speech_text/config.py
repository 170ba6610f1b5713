"""Configuration of the speech-text experiment (the YAML sections of ``multitower run``).

The model sections are the models' own config dataclasses, so each field has one
definition, one default and the model's own checks, and those checks run when
the config is read, before any stage::

    text_tower, speech_tower   DecoderConfig            (models/decoder.py)
    fusion                     ZipperConfig             (models/zipper.py); its towers
                                                        are the two sections above
    recognizer                 RecognizerSection: a UnitRecognizerConfig
                               (models/unit_recognizer.py) + how it is trained

Design: a section *is* the model config; the fields known only at run time (the
vocabulary sizes, from the tokenizers; the recogniser's alphabet size; the
zipper's towers; the special ids, fixed by the tokenizers' layout) are marked with
:func:`~multitower.config.run_time_keys`. The YAML may not set them, and until the
experiment fills them in with ``dataclasses.replace`` (:func:`tower_config`,
:meth:`RecognizerSection.model_config`, ``build_system``) they hold
:data:`RUN_TIME_SIZE`, the smallest size the model configs accept, so a
``__post_init__`` check that passes here passes with the real sizes too. This
was chosen over a separate "spec" class per model because such a class either
re-declares the model's fields (the duplication this replaces: the old sections
had no checks and their own defaults) or is generated at run time (no static
types). The recogniser section extends :class:`UnitRecognizerConfig` instead of
nesting it because run directories' ``config.yaml`` keep its keys flat, beside
``unit_noise`` and ``train``.

The experiment's default sections keep the recipe's values where they differ
from a model's default (towers: 1024 positions; recogniser: 3 layers); a section
given in part takes its missing keys from these defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from multitower.config import run_time_keys
from multitower.data.sentences import MAX_WORDS
from multitower.data.speech_config import SpeechCorpusConfig, UnitConfig
from multitower.models.decoder_config import DecoderConfig
from multitower.models.unit_recognizer_config import UnitRecognizerConfig
from multitower.models.zipper_config import ZipperConfig
from multitower.train.train_config import TrainConfig

SYSTEMS: dict[str, dict[str, Any]] = {
    "zipper": {"kind": "zipper", "freeze": ()},
    "zipper_frozen_speech": {"kind": "zipper", "freeze": ("speech",)},
    "zipper_frozen_text": {"kind": "zipper", "freeze": ("text",)},
    "baseline": {"kind": "baseline", "freeze": ()},
}

CROSS_ATTENTION_POSITIONS = ("none", "time")

# Stand-in for the sizes known at run time: the smallest the model configs accept
# (a tower's vocabulary must hold pad, bos and eos).
RUN_TIME_SIZE = 3
TOWER_RUN_TIME_KEYS = ("vocab_size", "pad_id", "bos_id", "eos_id")


@dataclass(frozen=True)
class CorpusSection:
    """Sizes of the generated corpus (see :class:`SpeechCorpusConfig`)."""

    n_text: int = 20000
    n_unaligned: int = 2000
    # the full recipe's; 1000 left the 1% fraction fewer examples than one fine-tuning batch
    n_aligned: int = 4000
    n_test: int = 200
    voices: tuple[str, ...] = ("en-us", "en-gb-x-rp", "en+m3", "en+f2")
    rates: tuple[int, ...] = (150, 190)
    pitches: tuple[int, ...] = (40, 60)
    dir: str | None = None  # reuse/build the speech corpus here instead of RUN_DIR/corpus
    # text-tower pre-training text: "generated", "wordnet" (Debian's wordnet-base
    # example sentences) or the path of a text file with one sentence per line
    text_source: str = "generated"
    # the grammar of every generated sentence (speech corpus and generated text):
    # the first words_per_list words of each open word class (null: all of them)
    # and the longest sentence in words
    words_per_list: int | None = None
    max_words: int = MAX_WORDS

    def __post_init__(self) -> None:
        if self.n_text < 1 or self.n_aligned < 1 or self.n_test < 1 or self.n_unaligned < 1:
            raise ValueError("n_text, n_unaligned, n_aligned and n_test must all be >= 1")
        self.speech_corpus_config(seed=0)  # the corpus builder's own checks (voices, ...)

    def speech_corpus_config(self, *, seed: int) -> SpeechCorpusConfig:
        """The speech corpus builder's config for these sizes and speakers."""
        return SpeechCorpusConfig(
            n_unaligned=self.n_unaligned,
            n_aligned=self.n_aligned,
            n_test=self.n_test,
            seed=seed,
            voices=self.voices,
            rates=self.rates,
            pitches=self.pitches,
            words_per_list=self.words_per_list,
            max_words=self.max_words,
        )


@dataclass(frozen=True)
class TextTokenizerSection:
    kind: str = "bpe"  # or "characters"
    vocab_size: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("bpe", "characters"):
            raise ValueError(f"kind must be 'bpe' or 'characters', got {self.kind!r}")
        if self.vocab_size < 5:
            raise ValueError(
                f"vocab_size must be >= 5 (3 special ids, the word-start mark and a "
                f"character), got {self.vocab_size}"
            )


@dataclass(frozen=True)
class RecognizerSection(UnitRecognizerConfig):
    """The unit recogniser's model config plus how it is trained.

    ``unit_vocab_size`` and ``num_chars`` are set at run time (see the module docstring).
    """

    unit_noise: float = 0.1  # augmentation: share of units replaced at random per read
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=1000, batch_size=32, lr=1e-3, warmup_steps=50)
    )
    # -- the TTS scorer's decoding (README "The TTS scorer"; benchmarks/SCORER_FINDINGS.md) --
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
        super().__post_init__()
        if not 0.0 <= self.unit_noise < 1.0:
            raise ValueError(f"unit_noise must lie in [0, 1), got {self.unit_noise}")
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

    def model_config(self, *, unit_vocab_size: int, num_chars: int) -> UnitRecognizerConfig:
        """The recogniser's :class:`UnitRecognizerConfig` with its run-time sizes."""
        model_fields = {f.name: getattr(self, f.name) for f in fields(UnitRecognizerConfig)}
        model_fields |= {"unit_vocab_size": unit_vocab_size, "num_chars": num_chars}
        return UnitRecognizerConfig(**model_fields)


@dataclass(frozen=True)
class EvalSection:
    max_test: int = 200
    batch_size: int = 50
    max_new_text: int = 96
    max_new_speech: int = 400
    temperature: float = 0.0
    top_k: int | None = None
    # synthesis by beam search (1: greedy); finished beams rank by
    # log-probability / length ** tts_length_penalty (README: TTS WER 45.0 -> 34.8)
    tts_beam_size: int = 4
    tts_length_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_test", "batch_size", "max_new_text", "max_new_speech", "tts_beam_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or null, got {self.top_k}")
        if self.tts_length_penalty < 0:
            raise ValueError(f"tts_length_penalty must be >= 0, got {self.tts_length_penalty}")
        if self.tts_beam_size > 1 and (self.temperature > 0 or self.top_k is not None):
            raise ValueError(
                "tts_beam_size > 1 is beam search: it takes no temperature or top_k "
                "(set tts_beam_size: 1 to sample)"
            )


def tower_config(section: DecoderConfig, vocab_size: int) -> DecoderConfig:
    """A tower's decoder config: its section with the tokenizer's vocabulary size.

    Both tokenizers put pad, bos and eos at ids 0, 1 and 2, the config's defaults.
    """
    return replace(section, vocab_size=vocab_size)


def _tower() -> DecoderConfig:
    return DecoderConfig(
        vocab_size=RUN_TIME_SIZE, d_model=128, num_layers=4, num_heads=4, max_seq_len=1024
    )


def _recognizer() -> RecognizerSection:
    return RecognizerSection(
        unit_vocab_size=RUN_TIME_SIZE, num_chars=RUN_TIME_SIZE, d_model=128, num_layers=3
    )


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
    text_tower: DecoderConfig = field(
        default_factory=_tower, metadata=run_time_keys(*TOWER_RUN_TIME_KEYS)
    )
    speech_tower: DecoderConfig = field(
        default_factory=_tower, metadata=run_time_keys(*TOWER_RUN_TIME_KEYS)
    )
    fusion: ZipperConfig = field(
        default_factory=lambda: ZipperConfig({"speech": _tower(), "text": _tower()}),
        metadata=run_time_keys(towers={"speech": "speech_tower", "text": "text_tower"}),
    )
    pretrain_text: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=1500, batch_size=64, lr=1e-3)
    )
    pretrain_speech: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=1500, batch_size=32, lr=1e-3)
    )
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=600, batch_size=32, lr=3e-4, fusion_lr=1e-3)
    )
    recognizer: RecognizerSection = field(
        default_factory=_recognizer, metadata=run_time_keys("unit_vocab_size", "num_chars")
    )
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
    # "time": Zipper's cross-attention rotates queries and keys by their place on a
    # shared time axis (fusion.position_scales: speech 1, text = units per text
    # token of the pairs fine-tuned on); "none": position-free (the paper's)
    cross_attention_positions: str = "none"
    # each direction's share of every fine-tuning batch's loss ({asr: 0.5, tts: 0.5}):
    # each direction's target tokens are averaged on their own, then mixed by these
    # shares; null weighs every target token the same, which gives ASR (14 text tokens
    # per utterance) about a fifth of the gradient against TTS (61 units)
    direction_shares: dict[str, float] | None = None
    # fine-tuning only: each output-modality token, as the input that predicts the next
    # one, is replaced by a random token of its modality with this probability (the
    # targets stay real; InterleavedLMTask): the model must read the other modality
    # rather than continue its own history
    input_noise: float = 0.0
    # A local Hugging Face causal LM folder (config.json, *.safetensors, tokenizer.json)
    # used as the text tower instead of pre-training one (hf_text_tower.py): its
    # tokenizer.json replaces text_tokenizer; text_tower and pretrain_text are unused.
    text_tower_source: str | None = None
    # its pad_id / bos_id / eos_id where they should not be config.json's *_token_id
    text_tower_special_ids: dict[str, int] = field(default_factory=dict)

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
        if self.cross_attention_positions not in CROSS_ATTENTION_POSITIONS:
            raise ValueError(
                f"cross_attention_positions={self.cross_attention_positions!r}; allowed: "
                f"{list(CROSS_ATTENTION_POSITIONS)}"
            )
        if self.cross_attention_positions == "time" and self.fusion.position_scales:
            raise ValueError(
                "fusion.position_scales and cross_attention_positions=time both place the "
                "tokens in time: set one of them"
            )
        if (
            self.fusion.cross_distance_bias
            and self.cross_attention_positions == "none"
            and not self.fusion.position_scales
        ):
            raise ValueError(
                "fusion.cross_distance_bias measures distances in time: it needs "
                "cross_attention_positions: time (or fusion.position_scales)"
            )
        if self.direction_shares is not None:
            shares = self.direction_shares
            if (
                set(shares) != {"asr", "tts"}
                or not all(isinstance(v, (int, float)) and v >= 0 for v in shares.values())
                or sum(shares.values()) <= 0
            ):
                raise ValueError(
                    f"direction_shares must give asr and tts numbers >= 0 with a positive "
                    f"sum (e.g. {{asr: 0.5, tts: 0.5}}) or be null, got {shares}"
                )
        if not 0.0 <= self.input_noise < 1.0:
            raise ValueError(f"input_noise must be in [0, 1), got {self.input_noise}")
        if self.text_tower_source is not None and not self.text_tower_source.strip():
            raise ValueError("text_tower_source must be a folder path or null, got ''")
        unknown = sorted(set(self.text_tower_special_ids) - {"pad_id", "bos_id", "eos_id"})
        if unknown:
            raise ValueError(
                f"text_tower_special_ids: unknown key(s) {unknown}; allowed: pad_id, bos_id, eos_id"
            )
        if self.text_tower_special_ids and self.text_tower_source is None:
            raise ValueError("text_tower_special_ids needs text_tower_source (an HF model folder)")
        towers = {"speech": self.speech_tower, "text": self.text_tower}
        if self.fusion.towers != towers:  # built in Python with other towers: check against them
            try:
                object.__setattr__(self, "fusion", replace(self.fusion, towers=towers))
            except ValueError as err:
                raise ValueError(f"fusion: {err}") from err
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Values each section accepts alone but that cannot work together."""
        for name in ("text_tower", "speech_tower"):
            if getattr(self, name).max_seq_len < 3:
                raise ValueError(
                    f"{name}.max_seq_len={getattr(self, name).max_seq_len}: a pre-training "
                    "sequence needs bos, one id and eos (at least 3)"
                )
        if self.eval.max_new_speech > self.recognizer.max_len:
            raise ValueError(
                f"eval.max_new_speech={self.eval.max_new_speech} exceeds recognizer.max_len="
                f"{self.recognizer.max_len}: the recogniser could not read the generated speech"
            )
        pool = self.corpus.n_aligned - self.valid_pairs
        if pool < 1:
            raise ValueError(
                f"valid_pairs={self.valid_pairs} leaves no aligned pair for fine-tuning "
                f"(corpus.n_aligned={self.corpus.n_aligned})"
            )
        # examples per training stage, both directions for fine-tuning
        smallest = min(2 * max(1, math.ceil(f * pool)) for f in self.fractions)
        for stage, examples, what in (
            ("pretrain_speech", self.corpus.n_unaligned, "corpus.n_unaligned"),
            ("recognizer.train", self.corpus.n_aligned, "corpus.n_aligned"),
            ("finetune", smallest, "2 x the aligned pairs of the smallest fraction"),
        ):
            batch = self.recognizer.train if stage == "recognizer.train" else getattr(self, stage)
            if batch.batch_size > examples:
                raise ValueError(
                    f"{stage}.batch_size={batch.batch_size} exceeds the {examples} training "
                    f"examples ({what}): not one batch"
                )

    def runs(self, fraction: float) -> list[str]:
        """The systems fine-tuned at ``fraction``, in ``systems`` order."""
        return [s for s in self.systems if fraction in self.system_fractions.get(s, self.fractions)]

    def loss_shares(self) -> dict[str, float] | None:
        """``direction_shares`` keyed by output modality (ASR outputs text, TTS speech)."""
        if self.direction_shares is None:
            return None
        return {"text": self.direction_shares["asr"], "speech": self.direction_shares["tts"]}

    def steps(self, fraction: float) -> int:
        """Fine-tuning steps at ``fraction``."""
        if self.finetune_steps is None:
            return self.finetune.max_steps
        return self.finetune_steps[self.fractions.index(fraction)]
