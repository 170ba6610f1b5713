"""Shared pieces of the MaMMUT commands: training + evaluation of one run, and run loading.

A MaMMUT run directory holds::

    config.yaml         the resolved config (recipe: mammut)
    tokenizer.json      the text tokenizer
    model/              config.json + model.safetensors of the final weights
    checkpoints/        the trainer's checkpoints
    metrics.jsonl       the training log
    results.json/.md    evaluation results, plots/*.png
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multitower.config import ConfigError, dump_yaml, load_config, parse_yaml
from multitower.data.errors import BadRecordError
from multitower.data.images import ImageTransform
from multitower.data.tokenizer import TextTokenizer
from multitower.errors import UserError
from multitower.eval.mammut_eval import (
    EvalSet,
    evaluate_captioning,
    evaluate_retrieval,
    evaluate_vqa,
    question_prior_accuracy,
)
from multitower.eval.vqa import normalize_answer
from multitower.experiments.mammut.data import build_tokenizer, load_records
from multitower.experiments.mammut.task import MaMMUTComponents, MaMMUTEvalConfig, build_components
from multitower.experiments.recipes import ResolvedConfig, resolve_config
from multitower.io import write_text_atomic
from multitower.models.io import CONFIG_NAME, WEIGHTS_NAME, load_weights, save_model
from multitower.models.mammut import MaMMUT
from multitower.models.pretrained import load_pretrained
from multitower.train.checkpoint import find_latest_valid, list_checkpoints
from multitower.train.trainer import Trainer

TOKENIZER_NAME = "tokenizer.json"
MODEL_DIR = "model"


def resolve_mammut_config(path: Path, overrides: list[str]) -> ResolvedConfig:
    """Load and validate a config whose recipe must be ``mammut``.

    Raises:
        ConfigError: any config problem, or another recipe.
    """
    resolved = resolve_config(load_config(path, overrides))
    if resolved.recipe != "mammut":
        raise ConfigError(f"recipe: this command needs recipe 'mammut', got {resolved.recipe!r}")
    return resolved


@dataclass
class TrainedRun:
    """A trained model with what evaluating it needs."""

    model: MaMMUT
    components: MaMMUTComponents
    train_seconds: float
    final_metrics: dict[str, float]


def train_run(resolved: ResolvedConfig, run_dir: Path) -> TrainedRun:
    """Train one run into ``run_dir``: config, tokenizer, checkpoints, log, final model.

    Raises:
        UserError: ``run_dir`` already holds checkpoints.
    """
    if list_checkpoints(run_dir):
        raise UserError(f"{run_dir} already holds checkpoints; choose another --run-dir")
    torch.manual_seed(resolved.train.seed)
    components = build_components(resolved.sections)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_yaml(resolved.to_dict()))
    components.tokenizer.save(run_dir / TOKENIZER_NAME)
    recipe = components.recipe
    trainer = Trainer(
        recipe.model, recipe.task, recipe.dataset, recipe.collate_fn, resolved.train, run_dir
    )
    start = time.perf_counter()
    metrics = trainer.fit()
    seconds = time.perf_counter() - start
    model = trainer.module
    assert isinstance(model, MaMMUT)
    model.eval()
    save_model(model, run_dir / MODEL_DIR)
    return TrainedRun(model, components, seconds, metrics)


def chance_retrieval(eval_set: EvalSet, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Expected recall@K of a random ranking on ``eval_set`` (exact, not sampled).

    text -> image: ``K / N_images``. image -> text, for an image with ``c`` of the
    ``M`` captions: ``1 - C(M - c, K) / C(M, K)``, averaged over images.
    """
    n_images = len(eval_set)
    n_texts = sum(len(caps) for caps in eval_set.captions)
    out: dict[str, float] = {}
    for k in ks:
        misses = []
        for caps in eval_set.captions:
            miss = 1.0
            for j in range(min(k, n_texts)):
                miss *= max(n_texts - len(caps) - j, 0) / (n_texts - j)
            misses.append(miss)
        out[f"i2t_r{k}"] = 1.0 - sum(misses) / n_images
        out[f"t2i_r{k}"] = min(k, n_images) / n_images
    return out


def evaluate_run(
    model: MaMMUT,
    components: MaMMUTComponents,
    cfg: MaMMUTEvalConfig,
    *,
    beam: bool = True,
) -> dict[str, Any]:
    """Retrieval, greedy (and beam) captioning and VQA on the run's evaluation set.

    Returns:
        ``{"metrics": {...}, "baselines": {...}, "samples": [...], "eval_seconds": s}``.

    Raises:
        UserError: the config has no evaluation set.
    """
    data, tokenizer = components.eval_set, components.tokenizer
    if data is None:
        raise UserError("the config defines no evaluation set (data.eval_*)")
    start = time.perf_counter()
    model.eval()
    metrics: dict[str, float] = {}
    with torch.no_grad():
        metrics.update(evaluate_retrieval(model, data, tokenizer, batch_size=cfg.batch_size))
        greedy, greedy_caps = evaluate_captioning(
            model, data, tokenizer, max_new_tokens=cfg.max_caption_tokens, batch_size=cfg.batch_size
        )
        metrics.update({f"greedy_{k}": v for k, v in greedy.items()})
        beam_caps: list[str] = []
        if beam:
            beamed, beam_caps = evaluate_captioning(
                model,
                data,
                tokenizer,
                method="beam",
                beam_size=cfg.beam_size,
                length_penalty=cfg.length_penalty,
                max_new_tokens=cfg.max_caption_tokens,
                batch_size=cfg.batch_size,
            )
            metrics.update({f"beam_{k}": v for k, v in beamed.items()})
        triples: list[tuple[str, str, str]] = []
        baselines: dict[str, float] = {f"chance_{k}": v for k, v in chance_retrieval(data).items()}
        if any(data.qa):
            vqa, triples = evaluate_vqa(
                model,
                data,
                tokenizer,
                max_new_tokens=cfg.max_answer_tokens,
                batch_size=cfg.batch_size,
            )
            metrics.update(vqa)
            train_qa = [pair for r in components.train_records for pair in r.qa]
            if train_qa:
                eval_qa = [pair for pairs in data.qa for pair in pairs]
                baselines["question_prior_vqa_accuracy"] = question_prior_accuracy(
                    train_qa, eval_qa
                )
    samples = []
    for i in range(min(8, len(data))):
        sample: dict[str, Any] = {
            "key": data.keys[i],
            "reference": data.captions[i][0],
            "greedy": greedy_caps[i],
        }
        if beam_caps:
            sample["beam"] = beam_caps[i]
        samples.append(sample)
    vqa_samples = [{"question": q, "answer": a, "predicted": p} for q, a, p in triples[:10]]
    by_start: dict[str, list[bool]] = {}
    for q, a, p in triples:  # accuracy per question type, named by its first two words
        by_start.setdefault(" ".join(q.split()[:2]), []).append(
            normalize_answer(p) == normalize_answer(a)
        )
    vqa_by_question = {
        start: {"questions": len(hits), "accuracy": sum(hits) / len(hits)}
        for start, hits in sorted(by_start.items(), key=lambda kv: -len(kv[1]))
    }
    return {
        "metrics": metrics,
        "baselines": baselines,
        "samples": samples,
        "vqa_samples": vqa_samples,
        "vqa_by_question": vqa_by_question,
        "eval_images": len(data),
        "eval_seconds": time.perf_counter() - start,
    }


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as strings, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- loading a trained run ---------------------------------------------------------------------
@dataclass
class LoadedRun:
    """A trained MaMMUT run, ready for inference."""

    model: MaMMUT
    tokenizer: TextTokenizer
    transform: ImageTransform
    eval_cfg: MaMMUTEvalConfig


def _weights_path(run_dir: Path) -> Path:
    final = run_dir / MODEL_DIR / WEIGHTS_NAME
    if final.is_file():
        return final
    latest = find_latest_valid(run_dir)
    if latest is None:
        raise UserError(
            f"{run_dir} holds no trained MaMMUT weights ({MODEL_DIR}/{WEIGHTS_NAME} or a checkpoint)"
        )
    return latest / WEIGHTS_NAME


def load_run(run_dir: Path, *, device: str = "cpu") -> LoadedRun:
    """Load model, tokenizer and image transform of a run directory.

    The tokenizer is read from ``tokenizer.json``; a run trained with
    ``multitower train`` has none, and its tokenizer is rebuilt from the
    training data named in ``config.yaml`` (deterministic).

    Raises:
        UserError: not a MaMMUT run directory, or weights that do not fit the config.
    """
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    raw = parse_yaml(config_path.read_text(encoding="utf-8"), source=str(config_path)) or {}
    if isinstance(raw, dict) and "experiment" in raw:  # written by `multitower run`
        raise UserError(
            f"{run_dir} is a {raw['experiment']!r} experiment run (multitower run), not a "
            "MaMMUT run; for a speech-text run use `multitower asr` or `multitower tts`"
        )
    resolved = resolve_config(raw)
    if resolved.recipe != "mammut":
        raise UserError(f"{run_dir} is a {resolved.recipe!r} run, not a MaMMUT run")
    model_dir = run_dir / MODEL_DIR
    try:
        if (model_dir / CONFIG_NAME).is_file() and (model_dir / WEIGHTS_NAME).is_file():
            model = load_pretrained(model_dir, MaMMUT)
        else:
            model = MaMMUT(resolved.sections["model"])
            load_weights(model, _weights_path(run_dir))
    except ValueError as err:
        raise UserError(str(err)) from err
    model_cfg = model.config
    model.to(device).eval()
    tokenizer_path = run_dir / TOKENIZER_NAME
    if tokenizer_path.is_file():
        try:
            tokenizer = TextTokenizer.load(tokenizer_path)
        except ValueError as err:  # changed or corrupted (names the file)
            raise UserError(f"cannot load the tokenizer: {err}") from err
    else:
        data_cfg = resolved.sections["data"]
        tokenizer = build_tokenizer(
            load_records(data_cfg, "train"), data_cfg.tokenizer, model_cfg.vocab_size
        )
    transform = ImageTransform(image_size=model_cfg.vision.image_size)
    return LoadedRun(model, tokenizer, transform, resolved.sections["eval"])


def load_image_or_fail(transform: ImageTransform, path: Path) -> torch.Tensor:
    """Transform one image file, turning every problem into a :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        return transform(path)
    except BadRecordError as err:
        raise UserError(str(err)) from err
