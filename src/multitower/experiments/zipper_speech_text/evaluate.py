"""Speech recognition and synthesis evaluation for the speech-text experiment.

* ASR WER: greedy transcripts of the test speech units vs the references.
* TTS WER: speech units generated from the test texts (beam search unless the
  eval section's ``tts_beam_size`` is 1), transcribed by the fixed
  unit recogniser, vs the input texts (measures semantic unit modelling, not
  audio quality: spec "Speech and text in the paper").
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import torch
from torch import nn

from multitower.data.text import normalize_text
from multitower.data.tokenizer import TextTokenizer
from multitower.generation import generate
from multitower.interleave import Segment
from multitower.io import write_bytes_atomic, write_json_atomic, write_text_atomic


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate of normalised texts (an empty hypothesis counts as all deletions)."""
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    if any(not r for r in refs):
        raise ValueError("wer: a reference transcript is empty")
    return float(jiwer.wer(refs, hyps))


def _batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def transcribe_units(
    model: nn.Module, units: Sequence[Sequence[int]], text_tok: TextTokenizer, eval_cfg: Any
) -> list[str]:
    """Greedy ASR: speech-unit prompts -> text."""
    model.eval()
    out: list[str] = []
    for chunk in _batched(units, eval_cfg.batch_size):
        prompts = [[Segment("speech", list(u))] for u in chunk]
        gen = generate(model, prompts, ["text"], max_new_tokens=eval_cfg.max_new_text)
        out += [text_tok.decode(ex[0].tokens) for ex in gen]
    return out


@torch.no_grad()
def synthesize_units(
    model: nn.Module, texts: Sequence[Sequence[int]], eval_cfg: Any, *, seed: int = 0
) -> list[list[int]]:
    """TTS: text prompts -> speech-tower ids.

    Beam search when ``eval_cfg.tts_beam_size`` > 1 (a config without the field:
    1), else greedy or sampled by ``temperature`` / ``top_k``.
    """
    from multitower.generation.interleaved_beam import generate_beam

    model.eval()
    beams = getattr(eval_cfg, "tts_beam_size", 1)
    generator = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    for chunk in _batched(texts, eval_cfg.batch_size):
        prompts = [[Segment("text", list(t))] for t in chunk]
        if beams > 1:
            out += generate_beam(
                model,
                prompts,
                "speech",
                num_beams=beams,
                length_penalty=eval_cfg.tts_length_penalty,
                max_new_tokens=eval_cfg.max_new_speech,
            )
            continue
        gen = generate(
            model,
            prompts,
            ["speech"],
            max_new_tokens=eval_cfg.max_new_speech,
            temperature=eval_cfg.temperature,
            top_k=eval_cfg.top_k,
            generator=generator,
        )
        out += [list(ex[0].tokens) for ex in gen]
    return out


def evaluate_system(
    model: nn.Module,
    test: Sequence[tuple[Sequence[int], Sequence[int]]],
    references: Sequence[str],
    text_tok: TextTokenizer,
    recognizer: nn.Module,
    alphabet: Any,
    eval_cfg: Any,
    *,
    decoder: Any = None,
) -> dict[str, Any]:
    """ASR and TTS WER of one fine-tuned system on the test pairs.

    ``decoder`` (a recogniser ``TextDecoder``; ``None``: greedy) turns the
    recogniser's frames into the TTS transcripts.
    """
    from multitower.experiments.zipper_speech_text.recognizer import transcribe

    asr_hyps = transcribe_units(model, [u for u, _ in test], text_tok, eval_cfg)
    speech = synthesize_units(model, [t for _, t in test], eval_cfg)
    tts_hyps = transcribe(recognizer, alphabet, speech, decoder=decoder)
    return {
        **input_dependence(model, test),
        "asr_wer": wer(references, asr_hyps),
        "tts_wer": wer(references, tts_hyps),
        "tts_mean_units": sum(len(s) for s in speech) / max(1, len(speech)),
        "examples": [
            {"reference": r, "asr": a, "tts_transcript": t}
            for r, a, t in list(zip(references, asr_hyps, tts_hyps))[:5]
        ],
    }


def input_dependence(
    model: nn.Module, test: Sequence[tuple[Sequence[int], Sequence[int]]]
) -> dict[str, float]:
    """Test loss per direction with the right input and with a wrong one.

    Every speech segment is paired with the next example's transcript for the
    "mismatched" loss. A system that uses the other modality scores the matched
    pairs better; equal losses mean its gains are unimodal.
    """
    from multitower.experiments.zipper_speech_text.pairs import (
        PairedDirections,
        interleaved_collate,
        mean_loss,
    )

    collate = interleaved_collate(model.modalities)  # type: ignore[arg-type]
    units, texts = [u for u, _ in test], [t for _, t in test]
    shifted = list(zip(units[1:] + units[:1], texts))
    out = {}
    for d in ("asr", "tts"):
        out[f"{d}_loss_matched"] = mean_loss(model, PairedDirections(list(test), (d,)), collate)
        out[f"{d}_loss_mismatched"] = mean_loss(model, PairedDirections(shifted, (d,)), collate)
    return out


def results_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per (system, fraction).

    Besides the WERs it shows each direction's test loss (nats per output token)
    with the right input and the increase with a wrong one (``+x``): at small
    budgets WER saturates near 100% while the losses still rank the systems.
    """
    lines = [
        "| system | aligned fraction | pairs | steps (kept) | ASR WER | TTS WER | ASR loss (wrong input) "
        "| TTS loss (wrong input) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def loss(r: dict[str, Any], d: str) -> str:
        if f"{d}_loss_matched" not in r:
            return "-"
        matched, wrong = r[f"{d}_loss_matched"], r[f"{d}_loss_mismatched"]
        return f"{matched:.3f} ({wrong - matched:+.3f})"

    def steps(r: dict[str, Any]) -> str:
        if "steps" not in r:
            return "-"
        kept = r.get("selected_step")
        return f"{r['steps']} ({kept})" if kept is not None else str(r["steps"])

    for r in summary["results"]:
        lines.append(
            f"| {r['system']} | {r['fraction']:.0%} | {r['pairs']} | {steps(r)} | "
            f"{100 * r['asr_wer']:.1f} | {100 * r['tts_wer']:.1f} | {loss(r, 'asr')} | "
            f"{loss(r, 'tts')} |"
        )
    lines.append("")
    lines.append(
        f"Recogniser WER on the real test units (TTS WER floor): "
        f"{100 * summary['recognizer_wer_on_real_units']:.1f}"
    )
    return "\n".join(lines) + "\n"


def write_results(summary: dict[str, Any], out_dir: Path, finetune_dir: Path | None = None) -> None:
    """``results.json``, ``results.md`` and ``wer_vs_fraction.png`` in ``out_dir``, and
    with ``finetune_dir`` (the run's ``finetune/``) ``learning_curves.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", summary, indent=1)
    write_text_atomic(out_dir / "results.md", results_table(summary))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    panels = (
        (axes[0, 0], "asr_wer", "ASR WER (%)", 100.0),
        (axes[0, 1], "tts_wer", "TTS WER (%)", 100.0),
        (axes[1, 0], "asr_loss_matched", "ASR test loss (nats/token)", 1.0),
        (axes[1, 1], "tts_loss_matched", "TTS test loss (nats/token)", 1.0),
    )
    systems = list(dict.fromkeys(r["system"] for r in summary["results"]))
    for ax, metric, title, scale in panels:
        for system in systems:
            rows = sorted(
                (r for r in summary["results"] if r["system"] == system and metric in r),
                key=lambda r: r["fraction"],
            )
            ax.plot(
                [r["fraction"] for r in rows],
                [scale * r[metric] for r in rows],
                marker="o",
                label=system,
            )
        ax.set_xscale("log")
        fractions = sorted({r["fraction"] for r in summary["results"]})
        ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("aligned data fraction")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    # one legend for the four panels, below them, so that it covers no curve
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save_png(fig, out_dir / "wer_vs_fraction.png")
    if finetune_dir is not None:
        learning_curves(summary, finetune_dir, out_dir / "learning_curves.png")


def _save_png(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())


def learning_curves(summary: dict[str, Any], finetune_dir: Path, path: Path) -> bool:
    """Loss against step of every fine-tune, one panel per aligned fraction: the
    training loss (solid) and the held-out pairs' loss (dashed, the curve the kept
    step is chosen on), from each stage's ``metrics.jsonl``. Returns False (and
    writes nothing) when no stage logged a loss."""
    import matplotlib.pyplot as plt

    from multitower.train.logger import read_metrics

    fractions = sorted({r["fraction"] for r in summary["results"]})
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.5 * len(fractions), 3.8), squeeze=False)
    systems = list(dict.fromkeys(r["system"] for r in summary["results"]))
    drawn = False
    for ax, fraction in zip(axes[0], fractions):
        for r in (r for r in summary["results"] if r["fraction"] == fraction):
            stage = finetune_dir / f"{r['system']}_{fraction:g}" / "train"
            try:
                rows = read_metrics(stage)
            except (OSError, ValueError):
                continue
            color = f"C{systems.index(r['system'])}"  # one colour per system in every panel
            for key, style in (("loss", "-o"), ("eval/valid_loss", "--")):
                pts = [(row["step"], row[key]) for row in rows if key in row]
                if pts:
                    drawn = True
                    ax.plot(*zip(*pts), style, color=color, markersize=3,
                            label=r["system"] if key == "loss" else None)  # fmt: skip
        ax.set_title(f"{fraction:.0%} of the aligned pairs")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("loss (nats / token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="solid: training, dashed: held-out", title_fontsize=8)
    if drawn:
        fig.tight_layout()
        _save_png(fig, path)
    else:
        plt.close(fig)
    return drawn
