"""Speed of the speech data pipeline on CPU.

Measures, on a small generated set:

* espeak-ng synthesis (text -> 16 kHz audio): utterances per second and
  real-time factor (processing seconds / audio seconds);
* log-mel feature extraction: utterances per second;
* speech-unit tokenisation (features + nearest centroid): real-time factor,
  with the codebook fitted on the same audio first (fit time reported apart).

``measure_data_pipeline`` returns a flat dict so that a fuller benchmark can
merge in its own figures (e.g. ASR / TTS real-time factors) and print the same
summary line with :func:`summary_line`.

It then measures inference real-time factors (processing seconds / audio seconds)
of ``asr`` (audio -> units -> Zipper greedy transcript) and ``tts`` (text ->
Zipper speech units -> Griffin-Lim waveform), one utterance at a time as the
commands run. With ``--run-dir`` the trained models of a finished
``multitower run`` are used; without it, a freshly initialised Zipper of the full
recipe's size is used with every output pinned to the reference length (the
reference transcript's tokens for ASR, the real utterance's units for TTS), so
the work matches what a trained model does.

Finally it measures unit quality (:mod:`multitower.eval.units`) of the
default recipe's unit design (:data:`UNIT_DESIGN`) on a small generated corpus with
the recipe's 16-speaker plan: fitted on its unaligned split, scored on its
aligned split, cross-voice distances on its test sentences; printed as
``pnmi=... speaker_info=... cross_voice_distance=...`` before the summary line,
with ``scorer_floor_wer=...`` (the TTS scorer's WER on real test units, from the
run's ``stages.json``) when ``--run-dir`` names a finished run: training a scorer
on the benchmark's own few minutes of speech would measure nothing useful.
The corpus is small (a few minutes in all), so the numbers are below those of
the full recipe's corpus (see UNITS_FINDINGS.md).

Run: ``python benchmarks/speech_pipeline.py [--n-utterances 32] [--run-dir runs/zipper_speech_text]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from multitower.data.sentences import generate_sentences
from multitower.data.speech import LogMel, SpeechUnitTokenizer, Synthesizer, UnitConfig, Voice

DEFAULT_VOICES = (
    Voice("en-us"),
    Voice("en-gb-x-rp", rate=150),
    Voice("en+m3", pitch=40),
    Voice("en+f2", rate=190, pitch=60),
)
SUMMARY_KEYS = ["synth_utt_per_s", "tokenize_rtf", "asr_rtf", "tts_rtf"]
UNIT_KEYS = ["pnmi", "speaker_info", "cross_voice_distance", "scorer_floor_wer"]
# The default recipe's unit design (configs/zipper_speech_text.yaml, UNITS_FINDINGS.md).
UNIT_DESIGN = dict(
    codebook_size=512,
    unit_rate=100,
    frames_per_unit=1,
    context=2,
    features="mfcc",
    deltas=2,
    cmvn="utterance",
    vtln=True,
    run_penalty=2.0,
    dedup=True,
)


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall-clock time of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_data_pipeline(
    n_utterances: int = 32,
    *,
    seed: int = 0,
    voices: tuple[Voice, ...] = DEFAULT_VOICES,
    unit_config: UnitConfig | None = None,
    repeats: int = 3,
    keep: dict | None = None,
) -> dict[str, float]:
    """Time synthesis, features and unit tokenisation on ``n_utterances`` sentences.

    Args:
        n_utterances: generated sentences to synthesise and process.
        seed: sentence generator seed.
        voices: speakers, used in turn.
        unit_config: speech-unit settings (default ``UnitConfig()``: 256 units at 50 Hz).
        repeats: each timed pass runs this many times and the fastest counts
            (the machine may be shared; the minimum is the least disturbed run).

    Returns:
        ``{"n_utterances", "audio_seconds", "synth_utt_per_s", "synth_rtf",
        "features_utt_per_s", "features_rtf", "unit_fit_s", "tokenize_utt_per_s",
        "tokenize_rtf", "torch_threads"}``.
    """
    unit_config = unit_config or UnitConfig()
    sentences = generate_sentences(n_utterances, seed)
    with Synthesizer(unit_config.sample_rate) as synth:
        synth.synthesize("warm up", voices[0])  # worker start-up is not synthesis time
        audios: list[torch.Tensor] = []

        def run_synth() -> None:
            audios[:] = [
                synth.synthesize(s, voices[i % len(voices)]) for i, s in enumerate(sentences)
            ]

        synth_s = _best_time(run_synth, repeats)
    audio_s = sum(a.shape[0] for a in audios) / unit_config.sample_rate

    logmel = LogMel(
        unit_config.sample_rate, unit_config.n_fft, unit_config.hop_length, unit_config.n_mels
    )
    with torch.no_grad():
        logmel(audios[0])
        features_s = _best_time(lambda: [logmel(a) for a in audios], repeats)

    start = time.perf_counter()
    tokenizer = SpeechUnitTokenizer.fit(audios, unit_config)
    fit_s = time.perf_counter() - start
    tokenizer.encode(audios[0])
    tokenize_s = _best_time(lambda: [tokenizer.encode(a) for a in audios], repeats)

    if keep is not None:  # the audio and tokenizer, for the inference timings
        keep.update(audios=audios, tokenizer=tokenizer)
    return {
        "n_utterances": float(n_utterances),
        "audio_seconds": audio_s,
        "synth_utt_per_s": n_utterances / synth_s,
        "synth_rtf": synth_s / audio_s,
        "features_utt_per_s": n_utterances / features_s,
        "features_rtf": features_s / audio_s,
        "unit_fit_s": fit_s,
        "tokenize_utt_per_s": n_utterances / tokenize_s,
        "tokenize_rtf": tokenize_s / audio_s,
        "torch_threads": float(torch.get_num_threads()),
    }


def measure_inference(
    sentences: list[str],
    audios: list[torch.Tensor],
    unit_tokenizer: SpeechUnitTokenizer,
    run_dir: str | None,
    *,
    repeats: int = 1,
) -> dict[str, float]:
    """Real-time factors of the ``asr`` and ``tts`` paths, one utterance at a time."""
    from multitower.data.speech.resynth import units_to_waveform
    from multitower.data.tokenizer import TextTokenizer
    from multitower.experiments.zipper_speech_text.experiment import (
        UNIT_OFFSET,
        SpeechTextConfig,
        build_system,
        tower_config,
    )
    from multitower.generation import generate
    from multitower.interleave import Segment
    from multitower.models.decoder import DecoderTower

    pinned = run_dir is None
    if run_dir is None:
        cfg = SpeechTextConfig()
        text_tok = TextTokenizer.train_bpe(generate_sentences(3000, 1), 1000)
        text = DecoderTower(tower_config(cfg.text_tower, text_tok.vocab_size))
        speech = DecoderTower(
            tower_config(cfg.speech_tower, unit_tokenizer.vocab_size + UNIT_OFFSET)
        )
        model = build_system("zipper", text, speech, cfg.fusion, cfg.seed).eval()
    else:
        from multitower.cli.speech_cmd import load_components

        c = load_components(Path(run_dir), None)
        model, text_tok, unit_tokenizer = c.model, c.text_tokenizer, c.unit_tokenizer
    sr = unit_tokenizer.config.sample_rate
    dedup = unit_tokenizer.config.dedup

    def asr_once() -> None:
        for sentence, audio in zip(sentences, audios):
            units = [int(u) + UNIT_OFFSET for u in unit_tokenizer.encode(audio)]
            n = len(text_tok.encode(sentence)) if pinned else 96
            generate(
                model,
                [[Segment("speech", units)]],
                ["text"],
                max_new_tokens=n,
                min_new_tokens=n if pinned else 0,
            )

    tts_seconds = [0.0]

    def tts_once() -> None:
        total = 0.0
        for sentence, audio in zip(sentences, audios):
            n = len(unit_tokenizer.encode(audio)) if pinned else 400
            out = generate(
                model,
                [[Segment("text", text_tok.encode(sentence))]],
                ["speech"],
                max_new_tokens=n,
                min_new_tokens=n if pinned else 0,
            )
            units = torch.tensor([u - UNIT_OFFSET for u in out[0][0].tokens if u >= UNIT_OFFSET])
            if units.numel():
                total += units_to_waveform(units, unit_tokenizer, deduped=dedup).numel() / sr
        tts_seconds[0] = total

    audio_s = sum(a.numel() for a in audios) / sr
    asr_s = _best_time(asr_once, repeats)
    tts_s = _best_time(tts_once, repeats)
    return {
        "asr_rtf": asr_s / audio_s,
        "tts_rtf": tts_s / max(tts_seconds[0], 1e-9),
        "tts_audio_seconds": tts_seconds[0],
        "inference_pinned_lengths": float(pinned),
    }


def measure_unit_quality(
    work_dir: str | Path,
    *,
    n_unaligned: int = 600,
    n_aligned: int = 300,
    n_test: int = 12,
    seed: int = 0,
    unit_config: UnitConfig | None = None,
) -> dict[str, float]:
    """Units report of ``unit_config`` (default :data:`UNIT_DESIGN`) on a small corpus.

    Returns:
        ``{"pnmi", "phone_purity", "speaker_info", "cross_voice_distance",
        "units_per_second", "units_fit_s", "units_report_s"}``.
    """
    from multitower.data.speech.corpus import SpeechCorpusConfig, build_speech_text_corpus
    from multitower.eval.units import evaluate_unit_tokenizer

    unit_config = unit_config or UnitConfig(**UNIT_DESIGN)
    corpus = build_speech_text_corpus(
        Path(work_dir) / "corpus",
        SpeechCorpusConfig(n_unaligned=n_unaligned, n_aligned=n_aligned, n_test=n_test, seed=seed),
        quiet=True,
    )
    fit_utts = corpus.utterances("unaligned")
    start = time.perf_counter()
    tokenizer = SpeechUnitTokenizer.fit(
        [u.path for u in fit_utts], unit_config, speakers=[u.speaker for u in fit_utts]
    )
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    report = evaluate_unit_tokenizer(tokenizer, corpus, split="aligned", n_sentences=n_test)
    d = report.to_dict()
    return {
        **{k: d[k] for k in ("pnmi", "phone_purity", "speaker_info", "cross_voice_distance")},
        "units_per_second": d["units_per_second"],
        "units_fit_s": fit_s,
        "units_report_s": time.perf_counter() - start,
    }


def format_table(results: dict[str, float]) -> str:
    """Two-column text table of every figure."""
    width = max(len(k) for k in results)
    return "\n".join(f"{k:<{width}}  {v:>12.4g}" for k, v in results.items())


def summary_line(results: dict[str, float], keys: list[str] | None = None) -> str:
    """``"key=value key=value"`` for the summary keys present in ``results``."""
    return " ".join(f"{k}={results[k]:.4g}" for k in (keys or SUMMARY_KEYS) if k in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-utterances", type=int, default=32)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--unit-rate", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-dir", default=None, help="a finished speech-text run to time")
    parser.add_argument("--inference-utterances", type=int, default=8)
    parser.add_argument(
        "--units-utterances",
        type=int,
        default=600,
        help="unaligned utterances of the unit-quality corpus (aligned: half as many)",
    )
    args = parser.parse_args()
    frames_per_unit = 100 // args.unit_rate
    config = UnitConfig(
        codebook_size=args.codebook_size, unit_rate=args.unit_rate, frames_per_unit=frames_per_unit
    )
    kept: dict = {}
    results = measure_data_pipeline(
        args.n_utterances, seed=args.seed, unit_config=config, repeats=args.repeats, keep=kept
    )
    n = args.inference_utterances
    sentences = generate_sentences(args.n_utterances, args.seed)[:n]
    results.update(
        measure_inference(sentences, kept["audios"][:n], kept["tokenizer"], args.run_dir)
    )
    with tempfile.TemporaryDirectory(prefix="speech_pipeline_units_") as work:
        quality = measure_unit_quality(
            work, n_unaligned=args.units_utterances, n_aligned=args.units_utterances // 2
        )
    results.update(quality)
    if args.run_dir:  # the TTS scorer's WER on real test units, as the run measured it
        stages = json.loads((Path(args.run_dir) / "stages.json").read_text())
        floor = (stages.get("recognizer_eval") or {}).get("wer_on_real_units")
        if floor is not None:
            results["scorer_floor_wer"] = float(floor)
    print(format_table(results))
    print(summary_line(results, UNIT_KEYS))
    print(summary_line(results))


if __name__ == "__main__":
    main()
