"""The Zipper speech-text experiment (spec: Zipper section 4): ASR and TTS against the vocabulary-expansion baseline."""
