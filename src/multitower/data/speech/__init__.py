"""Speech data for the Zipper speech-text experiment.

* :mod:`.audio`: read/write WAV and FLAC, polyphase sinc resampling.
* :mod:`.synth`: espeak-ng speech synthesis, deterministic per utterance.
* :mod:`.librispeech`: the LibriSpeech folder layout, writer and reader.
* :mod:`.corpus`: the generated unaligned / aligned / test corpus.
* :mod:`.phones`: phone labels from espeak-ng phoneme events (for measuring units).
* :mod:`.features`: log-mel spectrogram.
* :mod:`.units`: k-means speech units (the speech tower's tokens).
* :mod:`.resynth`: units back to audio (Griffin-Lim) for listening.
"""

from multitower.data.speech.audio import read_audio, resample, write_audio, write_wav
from multitower.data.speech.corpus import (
    SPLITS,
    SpeechCorpus,
    SpeechCorpusConfig,
    build_speech_text_corpus,
    plan_corpus,
)
from multitower.data.speech.features import LogMel, mel_filterbank
from multitower.data.speech.kmeans import kmeans
from multitower.data.speech.librispeech import LibriSpeechWriter, Utterance, read_librispeech
from multitower.data.speech.resynth import (
    ResynthConfig,
    units_to_logmel,
    units_to_wav,
    units_to_waveform,
)
from multitower.data.speech.synth import Synthesizer, Voice, available_voices
from multitower.data.speech.units import SpeechUnitTokenizer, UnitConfig, dedup_units

__all__ = [
    "SPLITS",
    "LibriSpeechWriter",
    "LogMel",
    "ResynthConfig",
    "SpeechCorpus",
    "SpeechCorpusConfig",
    "SpeechUnitTokenizer",
    "Synthesizer",
    "UnitConfig",
    "Utterance",
    "Voice",
    "available_voices",
    "build_speech_text_corpus",
    "dedup_units",
    "kmeans",
    "mel_filterbank",
    "plan_corpus",
    "read_audio",
    "read_librispeech",
    "resample",
    "units_to_logmel",
    "units_to_wav",
    "units_to_waveform",
    "write_audio",
    "write_wav",
]
