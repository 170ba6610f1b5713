"""Cross-voice distance of espeak-ng's own phone sequences: the floor any speech units can reach.

The units report's cross-voice distance compares the de-duplicated units of the
same sentence said by two voices. Perfect phone units would still differ where
the voices' accents give different phones; this prints that floor, computed
with the report's own :func:`~multitower.eval.units.rendering_distances` on the
phone labels of the corpus's first test sentences said by every speaker.

    python benchmarks/phone_ceiling.py --corpus runs/zipper_speech_text/corpus

Last line: ``phone_cross_voice_distance=<x> phone_different_sentence_distance=<y>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multitower.data.speech.corpus import load_speech_corpus
from multitower.data.speech.synth import Synthesizer
from multitower.eval.units import dedup, rendering_distances


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="a corpus built by the recipe")
    p.add_argument("--sentences", type=int, default=24)
    args = p.parse_args()
    corpus = load_speech_corpus(args.corpus)
    sentences = [u.transcript for u in corpus.utterances("test")[: args.sentences]]
    voices = {
        s: (v["voice"], v["rate"], v["pitch"]) for s, v in corpus.manifest["speakers"].items()
    }
    ids: dict[str, int] = {}
    renderings = {}
    with Synthesizer(corpus.config.sample_rate) as synth:
        for sentence in sentences:
            for speaker in voices:
                _, phones = synth.synthesize_with_phones(sentence, corpus.speaker_voice(speaker))
                seq = [ids.setdefault(label, len(ids)) for label in phones.labels]
                renderings[(sentence, speaker)] = dedup(seq)
    d = rendering_distances(renderings, voices)
    print(f"{len(sentences)} sentences x {len(voices)} speakers, {len(ids)} phone labels")
    print(
        f"phone_cross_voice_distance={d.cross_voice:.4f} "
        f"phone_different_sentence_distance={d.different_sentence_same_speaker:.4f}"
    )


if __name__ == "__main__":
    main()
