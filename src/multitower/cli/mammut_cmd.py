"""Train a MaMMUT model and evaluate it: retrieval, captioning and VQA.

    multitower mammut CONFIG.yaml [key=value ...] [--run-dir DIR] [--no-beam] [--threads N]

Trains the ``mammut`` recipe of CONFIG (overrides as in ``multitower train``),
saves the final model and tokenizer, then evaluates on the config's evaluation
set: zero-shot image->text and text->image recall@1/5/10, greedy and beam
captioning (BLEU-4, CIDEr-D) and open-ended VQA accuracy, next to chance-level
retrieval and a question-only VQA baseline. Writes ``results.json``,
``results.md`` and ``plots/training.png`` / ``plots/evaluation.png`` into the
run directory (default ``runs/<config name>``). Training progress (a bar on a
terminal, a plain line every 30 s in a log file) is also appended to
``RUN_DIR/run.log``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from multitower.cli.common import add_config_arguments, add_threads_argument, set_threads
from multitower.experiments.mammut.run import (
    evaluate_run,
    json_safe,
    resolve_mammut_config,
    train_run,
)
from multitower.io import write_json_atomic, write_text_atomic
from multitower.progress import log_line, run_log
from multitower.train.logger import read_metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML config with recipe: mammut")
    parser.add_argument(
        "--no-beam", action="store_true", help="evaluate greedy captioning only (faster)"
    )
    add_threads_argument(parser)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def results_markdown(result: dict[str, Any]) -> str:
    """The Markdown results table of one run."""
    m, b = result["metrics"], result["baselines"]
    lines = [
        f"MaMMUT, {result['params_millions']:.2f}M parameters, {result['steps']} steps "
        f"(batch {result['batch_size']}), trained in {result['train_seconds']:.0f} s; "
        f"evaluated on {result['eval_images']} held-out images in {result['eval_seconds']:.0f} s.",
        "",
        "| task | metric | MaMMUT | reference |",
        "|---|---|---|---|",
    ]
    for direction, name in (("i2t", "image -> text"), ("t2i", "text -> image")):
        ours = " / ".join(_pct(m[f"{direction}_r{k}"]) for k in (1, 5, 10))
        chance = " / ".join(_pct(b[f"chance_{direction}_r{k}"]) for k in (1, 5, 10))
        lines.append(f"| retrieval {name} | R@1 / R@5 / R@10 (%) | {ours} | {chance} (chance) |")
    lines.append(
        f"| captioning, greedy | BLEU-4 / CIDEr-D | {m['greedy_bleu4']:.3f} / {m['greedy_cider']:.3f} | |"
    )
    if "beam_bleu4" in m:
        lines.append(
            f"| captioning, beam {result['beam_size']} | BLEU-4 / CIDEr-D | "
            f"{m['beam_bleu4']:.3f} / {m['beam_cider']:.3f} | |"
        )
    if "vqa_accuracy" in m:
        prior = b.get("question_prior_vqa_accuracy")
        reference = f"{_pct(prior)} (question-only prior)" if prior is not None else ""
        lines.append(
            f"| VQA ({int(m['vqa_questions'])} questions) | accuracy (%) | "
            f"{_pct(m['vqa_accuracy'])} | {reference} |"
        )
    if result.get("vqa_by_question"):
        parts = [
            f"{start}... {_pct(v['accuracy'])}% ({v['questions']})"
            for start, v in result["vqa_by_question"].items()
        ]
        lines += ["", "VQA accuracy by question start (questions): " + "; ".join(parts) + "."]
    lines += ["", "Sample captions (reference / greedy / beam):", ""]
    for s in result["samples"][:5]:
        lines.append(f"- `{s['reference']}` / `{s['greedy']}` / `{s.get('beam', '')}`")
    if result.get("vqa_samples"):
        lines += ["", "Sample answers (question -> reference / predicted):", ""]
        for s in result["vqa_samples"][:6]:
            lines.append(f"- {s['question']} -> `{s['answer']}` / `{s['predicted']}`")
    return "\n".join(lines) + "\n"


def plot_training(run_dir: Path, out: Path) -> Path:
    """Loss curves (total, caption, contrastive) and the logit scale over training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("loss", "caption_loss", "contrastive_loss"):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            axes[0].plot(*zip(*pts), label=key)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    pts = [(r["step"], r["logit_scale"]) for r in rows if "logit_scale" in r]
    if pts:
        axes[1].plot(*zip(*pts))
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("logit scale (1 / temperature)")
    fig.tight_layout()
    path = out / "training.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_evaluation(result: dict[str, Any], out: Path) -> Path:
    """Bars of the evaluation metrics next to their chance / prior references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, b = result["metrics"], result["baselines"]
    names, ours, refs = [], [], []
    for direction in ("i2t", "t2i"):
        for k in (1, 5, 10):
            names.append(f"{direction} R@{k}")
            ours.append(100 * m[f"{direction}_r{k}"])
            refs.append(100 * b[f"chance_{direction}_r{k}"])
    if "vqa_accuracy" in m:
        names.append("VQA acc")
        ours.append(100 * m["vqa_accuracy"])
        refs.append(100 * b.get("question_prior_vqa_accuracy", 0.0))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], ours, width=0.4, label="MaMMUT")
    axes[0].bar([i + 0.2 for i in x], refs, width=0.4, label="chance / question-only prior")
    axes[0].set_xticks(list(x), names, rotation=30)
    axes[0].set_ylabel("%")
    # above the panel, so that it never covers a bar
    axes[0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=2, frameon=False)
    cap = [
        (label, k) for label, k in (("greedy", "greedy_cider"), ("beam", "beam_cider")) if k in m
    ]
    axes[1].bar([label for label, _ in cap], [m[k] for _, k in cap])
    axes[1].set_ylabel("CIDEr-D")
    axes[1].set_title("captioning", loc="left")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "evaluation.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    resolved = resolve_mammut_config(args.config, args.overrides)
    run_dir: Path = args.run_dir or Path("runs") / args.config.stem
    with run_log(run_dir / "run.log"):  # created on its first line: after the checks
        trained = train_run(resolved, run_dir)
        eval_cfg = resolved.sections["eval"]
        log_line("mammut: evaluating (retrieval, captioning, VQA)")
        result = evaluate_run(trained.model, trained.components, eval_cfg, beam=not args.no_beam)
    result.update(
        {
            "config": str(args.config),
            "overrides": list(args.overrides),
            "steps": resolved.train.max_steps,
            "batch_size": resolved.train.batch_size,
            "beam_size": eval_cfg.beam_size,
            "cross_layers": list(trained.model.config.cross_layers),
            "params_millions": sum(p.numel() for p in trained.model.parameters()) / 1e6,
            "train_seconds": trained.train_seconds,
            "final_train_metrics": trained.final_metrics,
        }
    )
    write_json_atomic(run_dir / "results.json", json_safe(result), indent=2)
    table = results_markdown(result)
    write_text_atomic(run_dir / "results.md", table)
    plot_training(run_dir, run_dir / "plots")
    plot_evaluation(result, run_dir / "plots")
    print(table)
    print(f"wrote {run_dir / 'results.md'}, {run_dir / 'results.json'} and {run_dir / 'plots'}")
    return 0
