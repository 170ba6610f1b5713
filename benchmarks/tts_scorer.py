"""How good can the TTS scorer be? Scorer variants on a speech-text run's data.

The speech-text experiment scores TTS by transcribing generated speech units with
a fixed CTC unit-to-character recogniser; its WER on the *real* test units is the
floor of every TTS WER. This benchmark trains recogniser variants on a run
directory's aligned pairs (minus the experiment's held-out validation pairs) and
prints, for each, the WER / CER on the real test units and on the validation
pairs with

* greedy (best-path) decoding,
* prefix beam search (no LM),
* beam search constrained to the lexicon of the text tower's corpus,
* the same plus a word n-gram LM (Kneser-Ney, trained on that corpus, which
  excludes the test sentences), its weight and word bonus tuned on the
  validation pairs only.

Data: a run directory whose corpus and unit stages are done, e.g. from
``multitower run configs/zipper_speech_text.yaml --run-dir RUN`` stopped once the
log says ``pretrain``, or ``--prepare`` here, which runs only those stages
(corpus, text corpus, unit tokenizer, unit encoding) of the full recipe.

Run::

    python benchmarks/tts_scorer.py --run-dir RUN --prepare          # data only
    python benchmarks/tts_scorer.py --run-dir RUN --variant current --variant unaligned --beam 64
    python benchmarks/tts_scorer.py --run-dir RUN --list

Trained variants are kept in ``RUN/scorer_bench/<variant>`` and reused; results are
appended to ``RUN/scorer_bench/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from multitower.config import build_dataclass, load_config
from multitower.data.charset import CharAlphabet
from multitower.data.ngram_lm import NgramLM
from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
from multitower.experiments.zipper_speech_text.evaluate import wer
from multitower.experiments.zipper_speech_text.experiment import UNIT_OFFSET, SpeechTextExperiment
from multitower.experiments.zipper_speech_text.recognizer import (
    frame_log_probs,
    load_recognizer,
    train_recognizer,
)
from multitower.experiments.zipper_speech_text.text_decoder import (
    TextDecoder,
    character_error_rate,
    tune_decoder,
)
from multitower.models.io import load_weights
from multitower.models.unit_recognizer import UnitRecognizer, UnitRecognizerConfig
from multitower.train.checkpoint import step_dir_name
from multitower.train.trainer import TrainConfig

LM_WEIGHTS = (0.5, 0.8)  # the recipe's default grid (recognizer.lm_weights)
WORD_BONUSES = (0.5, 1.5)
PRUNE = -8.0
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "zipper_speech_text.yaml"


@dataclass(frozen=True)
class Variant:
    """One scorer design: model size, training and augmentation."""

    d_model: int = 128
    num_layers: int = 3
    num_heads: int = 4
    upsample: int = 2
    unit_noise: float = 0.1
    mask_prob: float = 0.0
    mask_span: int = 3
    # also train on the unaligned split's pairs (a free stand-in for a separately
    # synthesised scorer corpus: same grammar and speakers, no test sentence)
    extra_unaligned: bool = False
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=1500, batch_size=32, lr=1e-3, warmup_steps=50, ckpt_every=500
        )
    )


def _steps(n: int, **kw: Any) -> TrainConfig:
    return TrainConfig(max_steps=n, batch_size=32, lr=1e-3, warmup_steps=50, ckpt_every=500, **kw)


VARIANTS: dict[str, Variant] = {
    "current": Variant(),  # the recipe's recogniser before this benchmark
    "steps3k": Variant(train=_steps(3000)),
    "mask": Variant(mask_prob=0.2),
    "mask_steps3k": Variant(mask_prob=0.2, train=_steps(3000)),
    "d192": Variant(d_model=192, num_heads=4),
    "l4": Variant(num_layers=4),
    "nonoise": Variant(unit_noise=0.0),
    "unaligned": Variant(extra_unaligned=True),
    "unaligned_mask": Variant(extra_unaligned=True, mask_prob=0.2),
}


def load_data(run_dir: Path, overrides: list[str], prepare: bool) -> dict[str, Any]:
    """Splits, units, text corpus and the validation split of a run directory."""
    raw = load_config(RECIPE, overrides)
    raw.pop("experiment", None)
    cfg = build_dataclass(SpeechTextConfig, raw, "")
    exp = SpeechTextExperiment(cfg, run_dir, quiet=True)
    if not prepare and not exp.stages.get("encode_units"):
        raise SystemExit(f"{run_dir} has no encoded units: run with --prepare first")
    splits = exp.corpus()
    sentences = exp.text_corpus({t for _, t, _ in splits["test"]})
    tok = exp.unit_tokenizer(splits["unaligned"])
    units = exp.encode_units(tok, splits)
    aligned = list(zip(units["aligned"], [t for _, t, _ in splits["aligned"]]))
    test = list(zip(units["test"], [t for _, t, _ in splits["test"]]))
    unaligned = list(zip(units["unaligned"], [t for _, t, _ in splits["unaligned"]]))
    assert not {t for _, t in unaligned} & {t for _, t in test}
    # the experiment's held-out pairs: the last valid_pairs of its seeded permutation
    order = torch.randperm(len(aligned), generator=torch.Generator().manual_seed(cfg.seed))
    valid_idx = set(order[len(order) - cfg.valid_pairs :].tolist())
    return {
        "train": [p for i, p in enumerate(aligned) if i not in valid_idx],
        "valid": [p for i, p in enumerate(aligned) if i in valid_idx],
        "test": test,
        "unaligned": unaligned,
        "sentences": sentences,
        "speech_vocab": tok.vocab_size + UNIT_OFFSET,
    }


def train_variant(name: str, v: Variant, data: dict[str, Any], out: Path) -> float:
    """Train (or reuse) a variant; returns the training seconds."""
    directory = out / name
    meta = directory / "train_seconds.json"
    if meta.is_file():
        return json.loads(meta.read_text())["seconds"]
    alphabet = CharAlphabet.from_transcripts([t for _, t in data["train"] + data["unaligned"]])
    config = UnitRecognizerConfig(
        unit_vocab_size=data["speech_vocab"],
        num_chars=alphabet.num_classes,
        d_model=v.d_model,
        num_layers=v.num_layers,
        num_heads=v.num_heads,
        upsample=v.upsample,
    )
    pairs = data["train"] + (data["unaligned"] if v.extra_unaligned else [])
    t0 = time.time()
    train_recognizer(
        pairs,
        alphabet,
        config,
        replace(v.train, progress="off", eval_every=500),
        directory,
        eval_pairs=data["valid"],
        unit_noise=v.unit_noise,
        mask_prob=v.mask_prob,
        mask_span=v.mask_span,
    )
    seconds = time.time() - t0
    curve = [
        (r["step"], round(100 * r["eval/cer"], 1))
        for r in map(json.loads, (directory / "metrics.jsonl").read_text().splitlines())
        if "eval/cer" in r
    ]
    print(f"  valid greedy CER by step: {curve}")
    meta.write_text(json.dumps({"seconds": seconds}))
    return seconds


def _score(decoder: TextDecoder, log_probs: list[torch.Tensor], refs: list[str]) -> dict:
    t0 = time.time()
    hyps = [decoder.decode(lp) for lp in log_probs]
    return {
        "wer": wer(refs, hyps),
        "cer": character_error_rate(refs, hyps),
        "seconds": time.time() - t0,
    }


def load_at_step(directory: Path, step: int | None) -> tuple[UnitRecognizer, CharAlphabet]:
    """The trained variant, or its weights at checkpoint ``step`` of the same run."""
    model, alphabet = load_recognizer(directory)
    if step is not None:
        load_weights(model, directory / "checkpoints" / step_dir_name(step))
    return model.eval(), alphabet


def evaluate_variant(
    directory: Path,
    data: dict[str, Any],
    lm: NgramLM,
    lexicon: list[str],
    beam: int,
    step: int | None = None,
    *,
    which: str = "all",
) -> list[dict[str, Any]]:
    """Rows (decoder, valid WER/CER, test WER/CER) for one trained recogniser."""
    model, alphabet = load_at_step(directory, step)
    split_lp = {s: frame_log_probs(model, [u for u, _ in data[s]]) for s in ("valid", "test")}
    refs = {s: [t for _, t in data[s]] for s in ("valid", "test")}
    rows = []

    def add(decoder: TextDecoder) -> dict:
        row = {"decoder": decoder.describe()}
        for s in ("valid", "test"):
            for k, val in _score(decoder, split_lp[s], refs[s]).items():
                row[f"{s}_{k}"] = val
        rows.append(row)
        print(
            f"  {row['decoder']:<44} valid WER {100 * row['valid_wer']:5.1f} CER "
            f"{100 * row['valid_cer']:5.1f} | test WER {100 * row['test_wer']:5.1f} CER "
            f"{100 * row['test_cer']:5.1f} ({row['test_seconds']:.1f} s)",
            flush=True,
        )
        return row

    if which != "lm":
        add(TextDecoder(alphabet))
    if which == "greedy":
        return rows
    if which == "all":
        add(TextDecoder(alphabet, beam_size=beam, prune_log_prob=PRUNE))
        add(TextDecoder(alphabet, beam_size=beam, lexicon=lexicon, prune_log_prob=PRUNE))
    # LM weight and word bonus: grid search on the validation pairs only
    base = TextDecoder(alphabet, beam_size=beam, lexicon=lexicon, lm=lm, prune_log_prob=PRUNE)
    tuned, grid = tune_decoder(
        base,
        split_lp["valid"],
        refs["valid"],
        lm_weights=LM_WEIGHTS,
        word_bonuses=WORD_BONUSES,
    )
    print(
        "  grid (valid WER): "
        + ", ".join(f"{g['lm_weight']:g}/{g['word_bonus']:g}: {100 * g['wer']:.1f}" for g in grid)
    )
    add(tuned)
    if which != "all":
        return rows
    wide = TextDecoder(
        alphabet, beam_size=2 * beam, lexicon=lexicon, lm=lm, prune_log_prob=PRUNE
    ).with_weights(tuned.lm_weight, tuned.word_bonus)
    add(wide)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--prepare", action="store_true", help="build the data stages only")
    parser.add_argument("--beam", type=int, default=64)
    parser.add_argument("--lm-order", type=int, default=3)
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--at-step",
        type=int,
        action="append",
        default=[],
        help="also evaluate the run's checkpoint at this step (every 500 are kept)",
    )
    parser.add_argument(
        "--decoders",
        default="all",
        choices=("all", "greedy", "lm"),
        help="greedy: only greedy decoding (fast); lm: only the tuned beam + LM",
    )
    parser.add_argument(
        "overrides", nargs="*", help="recipe overrides, e.g. units.codebook_size=1024"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.list:
        for name, v in VARIANTS.items():
            print(name, v)
        return
    data = load_data(args.run_dir, args.overrides, args.prepare)
    print(
        f"data: {len(data['train'])} train, {len(data['valid'])} valid, {len(data['test'])} "
        f"test pairs; {len(data['sentences'])} LM sentences"
    )
    if args.prepare:
        return
    t0 = time.time()
    lm = NgramLM(data["sentences"], args.lm_order)
    lexicon = sorted({w for s in data["sentences"] for w in s.split()})
    test_words = [w for _, t in data["test"] for w in t.split()]
    oov = sum(w not in set(lexicon) for w in test_words) / len(test_words)
    print(
        f"LM: order {args.lm_order}, {len(lm.vocab)} words, fit {time.time() - t0:.1f} s; "
        f"test perplexity {lm.perplexity([t for _, t in data['test']]):.1f}, "
        f"test OOV {100 * oov:.1f}%"
    )
    out = args.run_dir / "scorer_bench"
    out.mkdir(exist_ok=True)
    for name in args.variant:
        print(f"variant {name}: {VARIANTS[name]}", flush=True)
        seconds = train_variant(name, VARIANTS[name], data, out)
        print(f"  trained in {seconds:.0f} s")
        for step in [*args.at_step, None]:
            at = step or VARIANTS[name].train.max_steps
            print(f"  at step {at}, beam {args.beam}:", flush=True)
            rows = evaluate_variant(
                out / name, data, lm, lexicon, args.beam, step, which=args.decoders
            )
            with open(out / "results.jsonl", "a") as f:
                for row in rows:
                    record = {"variant": name, "step": at, "train_seconds": seconds, **row}
                    f.write(json.dumps({**record, "overrides": args.overrides}) + "\n")


if __name__ == "__main__":
    main()
