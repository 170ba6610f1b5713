"""Round trip of synthesis: text -> units -> audio -> units -> text.

For the first ``--n`` test sentences of a finished speech-text run, the chosen
model synthesises speech units (beam search with ``--beams``, default 4 as the
run's evaluation; 1: greedy; stopping at the speech tower's end token or the
run's length cap), the units are rendered to audio exactly as
``multitower tts`` writes it (centroid log-mel frames + Griffin-Lim), the audio
is encoded again by the run's unit tokenizer, and the run's TTS scorer (the unit
recogniser and its beam + lexicon + LM decoder) transcribes it. It prints three
WERs against the sentences:

* ``direct_wer``: the scorer on the generated units themselves (the run's TTS WER);
* ``roundtrip_wer``: on the units re-encoded from the written audio;
* ``gold_direct_wer`` / ``gold_roundtrip_wer``: the scorer on the *real* test
  units, and on them rendered to audio and encoded again: the floor of the
  audio path (what the resynthesis alone loses). ``--gold-only`` measures just
  these two, without a fine-tuned model.

Run (after ``multitower run configs/zipper_speech_text.yaml``)::

    python benchmarks/tts_roundtrip.py --run-dir runs/zipper_speech_text [--model zipper_1]

Last line: ``direct_wer=<x> roundtrip_wer=<y> gold_direct_wer=<g> gold_roundtrip_wer=<z> ended=<k>/<n>``
(``ended``: syntheses that stopped at the end token before the cap).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--model", default=None, help="default: the run's default model")
    p.add_argument("--n", type=int, default=50, help="test sentences")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beams", type=int, default=4, help="synthesis beams (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument(
        "--gold-only",
        action="store_true",
        help="only the round trip of the real test units (needs no fine-tuned model)",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from multitower.cli.speech_cmd import load_components
    from multitower.data.speech.librispeech import read_librispeech
    from multitower.data.speech.resynth import units_to_waveform
    from multitower.data.speech.units import SpeechUnitTokenizer
    from multitower.data.text import normalize_text
    from multitower.experiments.zipper_speech_text.evaluate import synthesize_units, wer
    from multitower.experiments.zipper_speech_text.experiment import UNIT_OFFSET, speech_ids
    from multitower.experiments.zipper_speech_text.recognizer import load_scorer, transcribe
    from multitower.experiments.zipper_speech_text.speech_rate import (
        speech_length_cap,
        units_per_character,
    )

    run = a.run_dir
    recognizer, alphabet, decoder = load_scorer(run / "recognizer")
    texts = [normalize_text(u.transcript) for u in read_librispeech(run / "corpus" / "test")]
    texts = texts[: a.n]
    gold = json.loads((run / "units" / "encoded.json").read_text())["test"][: a.n]
    tok = SpeechUnitTokenizer.load(run / "units" / "tokenizer")
    t0 = time.time()

    def round_trip(ids: list[int]) -> list[int]:
        units = torch.tensor([u - UNIT_OFFSET for u in ids if u >= UNIT_OFFSET])
        if units.numel() == 0:
            return []
        audio = units_to_waveform(units, tok, deduped=tok.config.dedup)
        return speech_ids(tok, audio)

    gold_direct = transcribe(recognizer, alphabet, gold, decoder=decoder)
    gold_trip = transcribe(recognizer, alphabet, [round_trip(g) for g in gold], decoder=decoder)
    gold_line = (
        f"gold_direct_wer={wer(texts, gold_direct):.4f} "
        f"gold_roundtrip_wer={wer(texts, gold_trip):.4f}"
    )
    if a.gold_only:
        for ref, r in list(zip(texts, gold_trip))[:3]:
            print(f"  text:       {ref}\n  from audio: {r}")
        print(f"{len(texts)} test utterances, {time.time() - t0:.0f} s")
        print(gold_line)
        return
    c = load_components(run, a.model)
    rate = units_per_character(run)
    cap = max(speech_length_cap(t, rate) for t in texts)

    class _Eval:  # synthesize_units' settings, batches of 25
        batch_size, max_new_speech, temperature, top_k = 25, cap, 0.0, None
        tts_beam_size, tts_length_penalty = a.beams, a.length_penalty

    speech = synthesize_units(c.model, [c.text_tokenizer.encode(t) for t in texts], _Eval)
    ended = sum(len(s) < cap for s in speech)
    direct = transcribe(recognizer, alphabet, speech, decoder=decoder)
    trip = transcribe(recognizer, alphabet, [round_trip(s) for s in speech], decoder=decoder)
    for ref, d, r in list(zip(texts, direct, trip))[:3]:
        print(f"  text:       {ref}\n  units:      {d}\n  from audio: {r}")
    print(f"model {c.model_name}, {len(texts)} sentences, {time.time() - t0:.0f} s")
    print(
        f"direct_wer={wer(texts, direct):.4f} roundtrip_wer={wer(texts, trip):.4f} "
        f"{gold_line} ended={ended}/{len(texts)}"
    )


if __name__ == "__main__":
    main()
