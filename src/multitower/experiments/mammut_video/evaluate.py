"""Evaluation of one video system: retrieval, captioning, video QA (overall and order-dependent),
and the encoder's time per clip.

Everything goes through the image evaluation code
(:mod:`multitower.eval.mammut_eval`) with ``encode=model.video_tokens``:

* video-text retrieval, recall@1/5/10 both ways (video embedding = mean of the
  video tokens, projected);
* captioning, greedy (and beam), BLEU-4 and CIDEr-D against every reference;
* open-ended video QA, exact match; reported overall, on the questions whose
  answer needs the frame order (``motion``) and on the others (``static``).
  With ``shuffled_control`` the order-dependent questions are asked again on
  the same clips with their frames in a random order: a model that reads the
  order falls towards chance there, one that ignores it does not move;
* encoder time per clip: the video encoder alone on the evaluation clips,
  batched, best of three passes.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from multitower.data.tokenizer import TextTokenizer
from multitower.eval.mammut_eval import (
    EvalSet,
    evaluate_captioning,
    evaluate_retrieval,
    evaluate_vqa,
    question_prior_accuracy,
)
from multitower.eval.vqa import normalize_answer
from multitower.experiments.mammut.run import chance_retrieval
from multitower.experiments.mammut.task import MaMMUTEvalConfig
from multitower.experiments.mammut_video.data import VideoEvalSet
from multitower.models.video import MaMMUTVideo


def _accuracy(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else float("nan")


@torch.no_grad()
def encoder_seconds_per_clip(model: MaMMUTVideo, clips: torch.Tensor, batch_size: int) -> float:
    """Seconds the video encoder takes per clip on ``clips`` (batched; best of three passes)."""
    model.eval()
    model.video_tokens(clips[:batch_size])  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(0, clips.shape[0], batch_size):
            model.video_tokens(clips[i : i + batch_size])
        best = min(best, time.perf_counter() - start)
    return best / clips.shape[0]


def shuffled_frames(clips: torch.Tensor, seed: int) -> torch.Tensor:
    """``clips`` ``(N, F, ...)`` with each clip's frames in its own random order (never the
    original order when ``F > 1``)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(clips)
    n_frames = clips.shape[1]
    for i in range(clips.shape[0]):
        order = torch.randperm(n_frames, generator=g)
        while n_frames > 1 and torch.equal(order, torch.arange(n_frames)):
            order = torch.randperm(n_frames, generator=g)
        out[i] = clips[i, order]
    return out


def _motion_subset(evalset: VideoEvalSet, clips: torch.Tensor) -> EvalSet | None:
    data = evalset.data
    qa = [
        [pair for pair, flag in zip(pairs, flags) if flag]
        for pairs, flags in zip(data.qa, evalset.needs_order)
    ]
    if not any(qa):
        return None
    return EvalSet(clips, data.captions, qa, data.keys)


def evaluate_system(
    model: MaMMUTVideo,
    evalset: VideoEvalSet,
    tokenizer: TextTokenizer,
    cfg: MaMMUTEvalConfig,
    *,
    train_qa: list[tuple[str, str, bool | None]],
    beam: bool = False,
    shuffled_control: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of the module docstring for one trained system.

    Args:
        train_qa: the training ``(question, answer, needs_order)`` triples, for
            the question-only prior baselines.

    Returns:
        ``{"metrics", "baselines", "samples", "vqa_samples", "eval_clips", "eval_seconds"}``.
    """
    start = time.perf_counter()
    model.eval()
    data, mammut, encode = evalset.data, model.mammut, model.video_tokens
    bs = cfg.batch_size
    metrics: dict[str, float] = {}
    baselines: dict[str, float] = {f"chance_{k}": v for k, v in chance_retrieval(data).items()}
    with torch.no_grad():
        metrics.update(evaluate_retrieval(mammut, data, tokenizer, batch_size=bs, encode=encode))
        greedy, greedy_caps = evaluate_captioning(
            mammut, data, tokenizer, max_new_tokens=cfg.max_caption_tokens, batch_size=bs,
            encode=encode,
        )  # fmt: skip
        metrics.update({f"greedy_{k}": v for k, v in greedy.items()})
        if beam:
            beamed, _ = evaluate_captioning(
                mammut, data, tokenizer, method="beam", beam_size=cfg.beam_size,
                length_penalty=cfg.length_penalty, max_new_tokens=cfg.max_caption_tokens,
                batch_size=bs, encode=encode,
            )  # fmt: skip
            metrics.update({f"beam_{k}": v for k, v in beamed.items()})
        triples: list[tuple[str, str, str]] = []
        if any(data.qa):
            vqa, triples = evaluate_vqa(
                mammut, data, tokenizer, max_new_tokens=cfg.max_answer_tokens, batch_size=bs,
                encode=encode,
            )  # fmt: skip
            metrics.update(vqa)
            flags = [f for per_clip in evalset.needs_order for f in per_clip]
            hits = [normalize_answer(p) == normalize_answer(a) for _, a, p in triples]
            motion = [h for h, f in zip(hits, flags) if f is True]
            static = [h for h, f in zip(hits, flags) if f is False]
            metrics["vqa_motion_accuracy"] = _accuracy(motion)
            metrics["vqa_motion_questions"] = float(len(motion))
            metrics["vqa_static_accuracy"] = _accuracy(static)
            metrics["vqa_static_questions"] = float(len(static))
            subset = _motion_subset(evalset, shuffled_frames(data.images, seed))
            if shuffled_control and subset is not None:
                shuffled, _ = evaluate_vqa(
                    mammut, subset, tokenizer, max_new_tokens=cfg.max_answer_tokens,
                    batch_size=bs, encode=encode,
                )  # fmt: skip
                metrics["vqa_motion_shuffled_accuracy"] = shuffled["vqa_accuracy"]
            if train_qa:
                eval_triples = [
                    (q, a, f)
                    for pairs, fl in zip(data.qa, evalset.needs_order)
                    for (q, a), f in zip(pairs, fl)
                ]
                pairs = [(q, a) for q, a, _ in train_qa]
                baselines["question_prior_vqa_accuracy"] = question_prior_accuracy(
                    pairs, [(q, a) for q, a, _ in eval_triples]
                )
                moving = [(q, a) for q, a, f in eval_triples if f is True]
                if moving:
                    baselines["question_prior_vqa_motion_accuracy"] = question_prior_accuracy(
                        pairs, moving
                    )
    metrics["encoder_ms_per_clip"] = 1000 * encoder_seconds_per_clip(model, data.images, bs)
    metrics["video_tokens"] = float(model.num_tokens)
    samples = [
        {"key": data.keys[i], "reference": data.captions[i][0], "greedy": greedy_caps[i]}
        for i in range(min(6, len(data)))
    ]
    vqa_samples = [{"question": q, "answer": a, "predicted": p} for q, a, p in triples[:8]]
    return {
        "metrics": metrics,
        "baselines": baselines,
        "samples": samples,
        "vqa_samples": vqa_samples,
        "eval_clips": len(data),
        "eval_seconds": time.perf_counter() - start,
    }
