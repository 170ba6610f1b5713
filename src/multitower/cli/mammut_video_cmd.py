"""Train and evaluate MaMMUT on video: sparse tubes against per-frame encoding at several frame counts.

    multitower mammut-video CONFIG.yaml [key=value ...] [--run-dir DIR] [--beam] [--jobs N]
        [--threads N]

Trains every system of CONFIG (``recipe: mammut_video``; each of
``video.encoders`` at each of ``video.frames``, with the same model size,
steps, seed and clips), evaluates each on the held-out clips (video QA
accuracy overall and on the questions whose answer needs the frame order,
caption CIDEr-D, video-text recall@1/5/10, encoder time per clip), and writes
``results.json``, ``results.md`` and ``plots/metrics.png``,
``plots/encoder_time.png``, ``plots/training.png`` into the run directory
(default ``runs/<config name>``). ``--beam`` adds beam-search captioning.

The systems are independent: ``--jobs`` of them train at once, each in its own
process (default: one per free core). Resumable: run the same command again after an interruption; finished systems
are kept, an interrupted training continues from its last checkpoint.
Progress goes to stderr and ``RUN_DIR/run.log``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from multitower.cli.common import (
    add_config_arguments,
    add_jobs_argument,
    add_threads_argument,
    resolve_jobs,
    set_threads,
)
from multitower.experiments.mammut.run import json_safe
from multitower.experiments.mammut_video.run import load_video_config, run_experiment
from multitower.io import write_json_atomic, write_text_atomic
from multitower.progress import format_duration, log_line, run_log
from multitower.train.logger import read_metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML config with recipe: mammut_video")
    parser.add_argument("--beam", action="store_true", help="also score beam-search captions")
    add_jobs_argument(parser, "systems")
    add_threads_argument(parser)


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{100 * value:.1f}"


def results_markdown(result: dict[str, Any]) -> str:
    """The Markdown comparison table of a video run (one row per system)."""
    systems = list(result["systems"].values())
    first = systems[0]
    b = first["baselines"]
    total = sum(s["train_seconds"] + s["eval_seconds"] for s in systems)
    lines = [
        f"MaMMUT on video, {first['params_millions']:.2f}M parameters, {result['steps']} steps "
        f"(batch {result['batch_size']}) per system, {first['eval_clips']} held-out clips; "
        f"training and evaluating the {len(systems)} systems took {format_duration(total)}.",
        "",
        "| system | frames | video tokens | VQA acc (%) | order-dependent VQA (%) | "
        "same, frames shuffled (%) | other VQA (%) | CIDEr-D | v->t R@1 / 5 / 10 (%) | "
        "t->v R@1 / 5 / 10 (%) | encoder ms / clip | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in systems:
        m = s["metrics"]
        v2t = " / ".join(_pct(m[f"i2t_r{k}"]) for k in (1, 5, 10))
        t2v = " / ".join(_pct(m[f"t2i_r{k}"]) for k in (1, 5, 10))
        lines.append(
            f"| {s['encoder']} | {s['frames']} | {int(m['video_tokens'])} | "
            f"{_pct(m.get('vqa_accuracy'))} | {_pct(m.get('vqa_motion_accuracy'))} | "
            f"{_pct(m.get('vqa_motion_shuffled_accuracy'))} | {_pct(m.get('vqa_static_accuracy'))} | "
            f"{m['greedy_cider']:.3f} | {v2t} | {t2v} | {m['encoder_ms_per_clip']:.2f} | "
            f"{s['train_seconds']:.0f} |"
        )
    m = first["metrics"]
    prior = _pct(b.get("question_prior_vqa_accuracy"))
    prior_motion = _pct(b.get("question_prior_vqa_motion_accuracy"))
    chance = " / ".join(_pct(b[f"chance_i2t_r{k}"]) for k in (1, 5, 10))
    chance_t = " / ".join(_pct(b[f"chance_t2i_r{k}"]) for k in (1, 5, 10))
    lines += [
        "",
        f"References: a question-only prior (the most frequent training answer to the same "
        f"question) scores {prior}% on all questions and {prior_motion}% on the "
        f"{int(m.get('vqa_motion_questions', 0))} order-dependent ones (of "
        f"{int(m.get('vqa_questions', 0))}); a model that sees the frames but not their order "
        "can reach at most 50% on those (each clip is played backwards on a fair coin, which "
        "flips exactly these answers). Chance retrieval R@1 / 5 / 10: "
        f"v->t {chance}, t->v {chance_t}.",
    ]
    best = max(systems, key=lambda s: s["metrics"].get("vqa_motion_accuracy", 0.0))
    if best.get("vqa_samples"):
        lines += ["", f"Sample answers of {best['encoder']} at {best['frames']} frames:", ""]
        lines += [
            f"- {q['question']} -> `{q['answer']}` / `{q['predicted']}`"
            for q in best["vqa_samples"][:6]
        ]
        lines += ["", "Sample captions (reference / greedy):", ""]
        lines += [f"- `{c['reference']}` / `{c['greedy']}`" for c in best["samples"][:4]]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(result: dict[str, Any], out: Path) -> list[Path]:
    """``metrics.png`` (QA, order-dependent QA, CIDEr-D, R@1 against frames, one line per
    encoder) and ``encoder_time.png`` (encoder ms per clip against frames)."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    encoders = sorted({s["encoder"] for s in result["systems"].values()})

    def series(encoder: str, key: str, scale: float = 100.0) -> tuple[list[int], list[float]]:
        rows = sorted(
            (s["frames"], s["metrics"].get(key))
            for s in result["systems"].values()
            if s["encoder"] == encoder
        )
        return [f for f, _ in rows], [
            scale * v if isinstance(v, (int, float)) else float("nan") for _, v in rows
        ]

    panels = (
        ("vqa_accuracy", "video QA accuracy (%)", 100.0),
        ("vqa_motion_accuracy", "order-dependent QA (%)", 100.0),
        ("greedy_cider", "caption CIDEr-D", 1.0),
        ("i2t_r1", "video -> text R@1 (%)", 100.0),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (key, label, scale) in zip(axes, panels):
        for encoder in encoders:
            ax.plot(*series(encoder, key, scale), marker="o", label=encoder)
        ax.set_xlabel("frames")
        ax.set_title(label, loc="left", fontsize=10)
    axes[1].axhline(50.0, color="grey", linestyle=":", label="order-blind ceiling")
    axes[0].legend(frameon=False)
    axes[1].legend(frameon=False)
    fig.tight_layout()
    paths = [out / "metrics.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for encoder in encoders:
        ax.plot(*series(encoder, "encoder_ms_per_clip", 1.0), marker="o", label=encoder)
    ax.set_xlabel("frames")
    ax.set_ylabel("encoder ms per clip")
    ax.legend(frameon=False)
    fig.tight_layout()
    paths.append(out / "encoder_time.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def plot_training(run_dir: Path, systems: list[str], out: Path) -> Path:
    """Training loss of every system against the step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in systems:
        rows = read_metrics(run_dir / name / "train")
        pts = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
        if pts:
            ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    jobs = resolve_jobs(args.jobs)
    set_threads(args.threads)
    cfg = load_video_config(args.config, args.overrides)
    run_dir: Path = args.run_dir or Path("runs") / args.config.stem
    with run_log(run_dir / "run.log"):
        result = run_experiment(cfg, run_dir, beam=args.beam, jobs=jobs)
        log_line("mammut-video: writing results and plots")
    result.update(
        {
            "config": str(args.config),
            "overrides": list(args.overrides),
            "steps": cfg.train.max_steps,
            "batch_size": cfg.train.batch_size,
        }
    )
    write_json_atomic(run_dir / "results.json", json_safe(result), indent=2)
    table = results_markdown(result)
    write_text_atomic(run_dir / "results.md", table)
    plot_metrics(result, run_dir / "plots")
    plot_training(run_dir, list(result["systems"]), run_dir / "plots")
    print(table)
    print(f"wrote {run_dir / 'results.md'}, {run_dir / 'results.json'} and {run_dir / 'plots'}")
    return 0
