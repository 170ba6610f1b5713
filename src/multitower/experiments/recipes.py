"""Recipes: named builders turning config sections into what the Trainer needs.

A recipe is registered with :func:`register_recipe` and, optionally, a schema of
its config sections (section name -> dataclass). The CLI then validates every
section up front, together with ``train``, and calls the builder with the built
dataclasses; without a schema the builder receives the raw dicts.

To add a recipe in another module::

    @register_recipe("zipper_asr", sections={"model": ZipperConfig, "data": AsrDataConfig})
    def build_zipper_asr(sections: dict[str, Any]) -> Recipe:
        ...

and add ``"zipper_asr": "multitower.train.zipper_recipes"`` to :data:`RECIPE_MODULES`
so the module is imported when the recipe is first asked for.

Built-in: ``toy_lm``, a :class:`~multitower.models.decoder.DecoderTower` learning
a synthetic language with a fixed bigram rule (see :class:`ToyLMDataset`).
"""

from __future__ import annotations

import dataclasses
import importlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from multitower.config import ConfigError, build_dataclass, build_sections, to_plain
from multitower.data.padding import pad_right
from multitower.losses import next_token_loss
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.train.task import NextTokenTask, Task
from multitower.train.train_config import TrainConfig

EvalFn = Callable[[nn.Module], dict[str, float]]


class Recipe(NamedTuple):
    """What a recipe builds. ``eval_fn(model) -> {name: value}`` is optional."""

    model: nn.Module
    task: Task
    dataset: Any
    collate_fn: Callable[[list[Any]], Any]
    eval_fn: EvalFn | None = None


RecipeBuilder = Callable[[dict[str, Any]], Recipe]


@dataclasses.dataclass(frozen=True)
class RecipeEntry:
    builder: RecipeBuilder
    sections: Mapping[str, type] | None


_REGISTRY: dict[str, RecipeEntry] = {}

# Recipe name -> module that registers it; imported the first time the recipe is needed.
RECIPE_MODULES: dict[str, str] = {
    "toy_lm": "multitower.experiments.recipes",
    "mammut": "multitower.experiments.mammut.task",
}


def register_recipe(
    name: str, *, sections: Mapping[str, type] | None = None
) -> Callable[[RecipeBuilder], RecipeBuilder]:
    """Decorator registering ``builder(sections) -> Recipe`` under ``name``.

    Args:
        name: the value of ``recipe:`` in a config.
        sections: section name -> dataclass; when given, the builder receives built
            dataclasses and unknown sections are config errors.

    Raises:
        ValueError: ``name`` is already registered to another builder.
    """

    def decorator(builder: RecipeBuilder) -> RecipeBuilder:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.builder.__qualname__ != builder.__qualname__:
            raise ValueError(f"recipe {name!r} is already registered")
        _REGISTRY[name] = RecipeEntry(builder, None if sections is None else dict(sections))
        return builder

    return decorator


def available_recipes() -> list[str]:
    return sorted(set(_REGISTRY) | set(RECIPE_MODULES))


def get_recipe(name: str) -> RecipeEntry:
    """The registered recipe ``name``, importing its module if needed.

    Raises:
        ConfigError: unknown recipe (the message lists the available ones).
    """
    if name not in _REGISTRY and name in RECIPE_MODULES:
        importlib.import_module(RECIPE_MODULES[name])
    if name not in _REGISTRY:
        raise ConfigError(
            f"recipe: unknown recipe {name!r}; available: {', '.join(available_recipes())}"
        )
    return _REGISTRY[name]


RESERVED_SECTIONS = ("recipe", "train")


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated run config."""

    recipe: str
    entry: RecipeEntry
    train: TrainConfig
    sections: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "train": to_plain(self.train), **to_plain(self.sections)}


def resolve_config(config: dict[str, Any]) -> ResolvedConfig:
    """Validate every section of ``config`` and report all problems at once.

    Raises:
        ConfigError: every problem found (recipe, ``train`` and recipe sections).
    """
    problems: list[str] = []
    name = config.get("recipe")
    entry = None
    if not isinstance(name, str):
        problems.append(
            f"recipe: expected the name of a recipe ({', '.join(available_recipes())}), got {name!r}"
        )
    else:
        try:
            entry = get_recipe(name)
        except ConfigError as err:
            problems += err.problems
    train = None
    try:
        train = build_dataclass(TrainConfig, config.get("train") or {}, "train")
    except ConfigError as err:
        problems += err.problems
    sections: dict[str, Any] = {k: v for k, v in config.items() if k not in RESERVED_SECTIONS}
    if entry is not None and entry.sections is not None:
        try:
            sections = build_sections(config, entry.sections, ignore=RESERVED_SECTIONS)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    assert entry is not None and train is not None and isinstance(name, str)
    return ResolvedConfig(name, entry, train, sections)


# -- toy_lm ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ToyLMDataConfig:
    """Synthetic data of the ``toy_lm`` recipe.

    Args:
        num_sequences: training sequences (one epoch).
        seq_len: tokens per sequence, bos and key included.
        seed: seed of the rule and of the start tokens.
        eval_sequences: sequences after the training ones scored by the eval function
            (0: no eval).
    """

    num_sequences: int = 4096
    seq_len: int = 32
    seed: int = 0
    eval_sequences: int = 64

    def __post_init__(self) -> None:
        if self.num_sequences <= 0:
            raise ValueError(f"num_sequences must be positive, got {self.num_sequences}")
        if self.seq_len < 3:
            raise ValueError(
                f"seq_len must be >= 3 (bos, start, one more token), got {self.seq_len}"
            )
        if self.eval_sequences < 0:
            raise ValueError(f"eval_sequences must be >= 0, got {self.eval_sequences}")


class ToyLMDataset:
    """Deterministic sequences that follow a fixed bigram rule: ``[bos, x, f(x), f(f(x)), ...]``.

    ``f`` is a permutation of the ``C = vocab_size - 3`` content ids (ids 0-2 are
    pad/bos/eos) drawn from ``seed``; sequence ``i`` starts at an id drawn from
    ``(seed, offset + i)``. Every token after the first content id is predictable,
    so the loss of a model that learns ``f`` falls towards zero.
    """

    def __init__(
        self,
        num_sequences: int,
        seq_len: int,
        *,
        vocab_size: int,
        bos_id: int,
        seed: int,
        offset: int = 0,
    ) -> None:
        if vocab_size < 5:
            raise ValueError(f"ToyLMDataset needs vocab_size >= 5, got {vocab_size}")
        self.num_sequences = num_sequences
        self.seq_len = seq_len
        self.bos_id = bos_id
        self.seed = seed
        self.offset = offset
        content = vocab_size - 3
        gen = torch.Generator().manual_seed(seed)
        self.rule = (torch.randperm(content, generator=gen) + 3).tolist()  # f(3 + j) = rule[j]

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"index {index} outside [0, {self.num_sequences})")
        rng = random.Random(self.seed * 1_000_003 + self.offset + index)
        tokens = [self.bos_id, 3 + rng.randrange(len(self.rule))]
        while len(tokens) < self.seq_len:
            tokens.append(self.rule[tokens[-1] - 3])
        return torch.tensor(tokens, dtype=torch.long)  # (seq_len,)


def stack_tokens(items: list[torch.Tensor]) -> torch.Tensor:
    """Collate the toy sequences (all ``seq_len`` long, so never padded) into ``(B, T)``."""
    return pad_right(items, 0)


def _toy_eval_fn(dataset: ToyLMDataset) -> EvalFn:
    tokens = stack_tokens([dataset[i] for i in range(len(dataset))])  # (N, T)

    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        batch = tokens.to(device)
        logits = model(batch[:, :-1])  # (N, T-1, V)
        targets = batch[:, 1:]
        # targets[:, 0] is the random start: score only the predictable tokens after it.
        loss = next_token_loss(logits[:, 1:], targets[:, 1:])
        accuracy = (logits[:, 1:].argmax(-1) == targets[:, 1:]).float().mean()
        return {"loss": float(loss), "accuracy": float(accuracy)}

    return evaluate


@register_recipe("toy_lm", sections={"model": DecoderConfig, "data": ToyLMDataConfig})
def build_toy_lm(sections: dict[str, Any]) -> Recipe:
    """DecoderTower + next-token task on :class:`ToyLMDataset`."""
    model_cfg: DecoderConfig = sections["model"]
    data_cfg: ToyLMDataConfig = sections["data"]
    if data_cfg.seq_len - 1 > model_cfg.max_seq_len:
        raise ConfigError(
            f"data.seq_len={data_cfg.seq_len}: the model reads seq_len - 1 tokens, more than "
            f"model.max_seq_len={model_cfg.max_seq_len}"
        )
    if model_cfg.vocab_size < 5:
        raise ConfigError(f"model.vocab_size={model_cfg.vocab_size}: toy_lm needs at least 5")
    make = dict(vocab_size=model_cfg.vocab_size, bos_id=model_cfg.bos_id)
    dataset = ToyLMDataset(data_cfg.num_sequences, data_cfg.seq_len, seed=data_cfg.seed, **make)
    eval_fn = None
    if data_cfg.eval_sequences:
        held_out = ToyLMDataset(
            data_cfg.eval_sequences,
            data_cfg.seq_len,
            seed=data_cfg.seed,
            offset=data_cfg.num_sequences,
            **make,
        )
        eval_fn = _toy_eval_fn(held_out)
    model = DecoderTower(model_cfg)
    return Recipe(model, NextTokenTask(pad_id=None), dataset, stack_tokens, eval_fn)
