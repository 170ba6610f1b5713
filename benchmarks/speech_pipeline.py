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

Run: ``python benchmarks/speech_pipeline.py [--n-utterances 32] [--codebook-size 256]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from multitower.data.speech import LogMel, SpeechUnitTokenizer, Synthesizer, UnitConfig, Voice
from multitower.data.text import generate_sentences

DEFAULT_VOICES = (
    Voice("en-us"),
    Voice("en-gb-x-rp", rate=150),
    Voice("en+m3", pitch=40),
    Voice("en+f2", rate=190, pitch=60),
)
SUMMARY_KEYS = ["synth_utt_per_s", "tokenize_rtf"]


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
    args = parser.parse_args()
    frames_per_unit = 100 // args.unit_rate
    config = UnitConfig(
        codebook_size=args.codebook_size, unit_rate=args.unit_rate, frames_per_unit=frames_per_unit
    )
    results = measure_data_pipeline(
        args.n_utterances, seed=args.seed, unit_config=config, repeats=args.repeats
    )
    print(format_table(results))
    print(summary_line(results))


if __name__ == "__main__":
    main()
