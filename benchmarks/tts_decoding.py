"""TTS decoding settings of a finished speech-text run: greedy against sampling, best of k.

For the first ``--n`` test sentences the chosen model synthesises speech units
greedily and by sampling (``--temperatures`` x ``--top-k``, ``--samples`` draws
each, seeded), the run's TTS scorer transcribes every synthesis, and it prints,
per setting, the WER of one sample (the mean over the draws) and the WER when
each sentence keeps its best of the draws (fewest word errors against the
sentence: the paper's "best of 3 samples" protocol, an oracle choice, so it is
labelled as such). Greedy decoding is what the run's results table reports.

Run (after ``multitower run configs/zipper_speech_text.yaml``)::

    python benchmarks/tts_decoding.py --run-dir runs/zipper_speech_text [--model zipper_1]

Last line: ``greedy_wer=<x> best_sampled_wer=<y> best_of_k_wer=<z>`` (the best
setting's one-sample WER and best-of-k WER; fractions, not percent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jiwer
import torch


def errors_per_sentence(refs: list[str], hyps: list[str]) -> list[int]:
    """Word errors (substitutions + deletions + insertions) of each pair."""
    out = []
    for ref, hyp in zip(refs, hyps, strict=True):
        if not hyp.strip():  # jiwer refuses an empty hypothesis: all deletions
            out.append(len(ref.split()))
            continue
        m = jiwer.process_words(ref, hyp)
        out.append(m.substitutions + m.deletions + m.insertions)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--model", default=None, help="default: the run's default model")
    p.add_argument("--n", type=int, default=200, help="test sentences")
    p.add_argument("--temperatures", default="0.7,1.0", help="comma-separated")
    p.add_argument("--top-k", type=int, default=0, help="0: no top-k cut")
    p.add_argument("--samples", type=int, default=3, help="draws per setting (best of k)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from multitower.cli.speech_cmd import load_components
    from multitower.data.speech.librispeech import read_librispeech
    from multitower.data.text import normalize_text
    from multitower.experiments.zipper_speech_text.evaluate import synthesize_units
    from multitower.experiments.zipper_speech_text.recognizer import load_scorer, transcribe
    from multitower.experiments.zipper_speech_text.speech_rate import (
        speech_length_cap,
        units_per_character,
    )

    run = a.run_dir
    recognizer, alphabet, decoder = load_scorer(run / "recognizer")
    texts = [normalize_text(u.transcript) for u in read_librispeech(run / "corpus" / "test")]
    texts = texts[: a.n]
    words = sum(len(t.split()) for t in texts)
    c = load_components(run, a.model)
    cap = max(speech_length_cap(t, units_per_character(run)) for t in texts)
    prompts = [c.text_tokenizer.encode(t) for t in texts]
    t0 = time.time()

    def scored(temperature: float, seed: int) -> list[int]:
        class _Eval:
            batch_size, max_new_speech = 50, cap
            top_k = a.top_k or None

        _Eval.temperature = temperature
        speech = synthesize_units(c.model, prompts, _Eval, seed=seed)
        return errors_per_sentence(texts, transcribe(recognizer, alphabet, speech, decoder=decoder))

    greedy = sum(scored(0.0, 0)) / words
    print(
        f"model {c.model_name}, {len(texts)} sentences: greedy WER {100 * greedy:.1f}", flush=True
    )
    results = []
    for temperature in [float(x) for x in a.temperatures.split(",")]:
        draws = [scored(temperature, seed) for seed in range(a.samples)]
        one = sum(sum(d) for d in draws) / (len(draws) * words)
        best = sum(min(col) for col in zip(*draws, strict=True)) / words
        results.append((one, best))
        print(
            f"temperature {temperature} top_k {a.top_k or '-'}: one sample "
            f"{100 * one:.1f} (draws {', '.join(f'{100 * sum(d) / words:.1f}' for d in draws)}), "
            f"best of {a.samples} (oracle) {100 * best:.1f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
    one, best = min(results)
    print(json.dumps({"greedy": greedy, "settings": results}))
    print(f"greedy_wer={greedy:.4f} best_sampled_wer={one:.4f} best_of_k_wer={best:.4f}")


if __name__ == "__main__":
    main()
