"""Speech synthesis with espeak-ng (the library shipped by ``espeakng-loader``).

espeak-ng is a small formant synthesiser; its English voices, variants
(``+m3``, ``+f2``, ...), speaking rates and pitches give the many "speakers" of
the generated speech corpus. It is called through ``ctypes`` on the shared
library (``espeak_Initialize`` in synchronous mode, a synth callback collecting
the int16 samples, ``espeak_SetVoiceByName``, ``espeak_SetParameter`` for rate
and pitch, ``espeak_Synth``); output is resampled from espeak's native 22050 Hz
to ``sample_rate`` (16 kHz by default) with :func:`~.audio.resample`.
:meth:`Synthesizer.synthesize_with_phones` also returns where each phoneme
starts, from espeak-ng's phoneme events (:mod:`.phones`).

Determinism: espeak-ng keeps synthesis state in static variables that no API
resets (pitch flutter phase, wave generator buffers), so in one process the
same text comes out slightly differently depending on what was said before.
:class:`Synthesizer` therefore runs the library in a small worker process
(``_espeak_worker.py``) that initialises espeak once and forks a fresh child per
utterance, seeding espeak's noise generator each time. The samples depend only
on ``(text, voice, rate, pitch, seed)`` and the espeak-ng build, not on the
order of requests, so a corpus is reproducible however it is built.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from multitower.data.speech.audio import resample
from multitower.data.speech.phones import PhoneAlignment, phones_from_events
from multitower.data.speech_config import Voice

ESPEAK_NATIVE_SAMPLE_RATE = 22050
_WORKER = Path(__file__).with_name("_espeak_worker.py")


def espeak_paths() -> tuple[str, str]:
    """``(library_path, data_dir)`` of the espeak-ng shipped by ``espeakng-loader``.

    Raises:
        RuntimeError: if the package or its files are missing.
    """
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            "speech synthesis needs the 'espeakng-loader' package (pip install espeakng-loader)"
        ) from err
    library, data_dir = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    if not Path(library).is_file():
        raise RuntimeError(f"espeak-ng library not found at {library}")
    return library, data_dir


@lru_cache(maxsize=1)
def available_voices() -> dict[str, tuple[str, ...]]:
    """The espeak-ng languages and voice variants on this machine.

    Returns:
        ``{"languages": (...), "variants": (...)}``. A voice name is a language,
        optionally followed by ``+variant`` (``"en-gb-x-rp+f2"``). Only English
        languages (``en*``) are listed; names are lower case.
    """
    _, data_dir = espeak_paths()
    lang_dir = Path(data_dir) / "lang"
    languages = sorted(
        {
            p.name.lower()
            for p in lang_dir.rglob("*")
            if p.is_file() and p.name.lower().startswith("en")
        }
    )
    variants = sorted(p.name for p in (Path(data_dir) / "voices" / "!v").iterdir() if p.is_file())
    return {"languages": tuple(languages), "variants": tuple(variants)}


class Synthesizer:
    """Text to 16 kHz speech with espeak-ng; deterministic per request.

    The worker process starts on the first :meth:`synthesize` call and stops on
    :meth:`close` (or when the object is garbage collected, or the interpreter
    exits). Safe to share between threads (calls are serialised); a forked
    copy of the object starts its own worker.

    Args:
        sample_rate: output sample rate in Hz.
        seed: seed of espeak's noise generator (breathy voices), set before
            every utterance.
    """

    def __init__(self, sample_rate: int = 16000, *, seed: int = 0) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.seed = seed
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._lock = threading.Lock()
        self._native_rate = ESPEAK_NATIVE_SAMPLE_RATE
        self._version = ""
        self._owner_pid = os.getpid()

    # -- worker lifecycle -----------------------------------------------------
    def _start(self) -> subprocess.Popen[bytes]:
        library, data_dir = espeak_paths()
        # Kept open for the worker's lifetime and closed in close().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-S", str(_WORKER), library, data_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        hello = self._read_header(proc)
        if not hello.get("ok"):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"espeak-ng worker failed to start: {hello.get('error')}")
        self._native_rate = int(hello["sample_rate"])
        self._version = str(hello["version"])
        self._proc = proc
        self._owner_pid = os.getpid()
        return proc

    def _worker_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode(errors="replace")

    def _read_header(self, proc: subprocess.Popen[bytes]) -> dict:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"espeak-ng worker exited unexpectedly; its stderr:\n{self._worker_stderr()}"
            )
        return json.loads(line)

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def espeak_version(self) -> str:
        """espeak-ng version string (starts the worker if needed)."""
        with self._lock:
            if self._proc is None:
                self._start()
        return self._version

    # -- synthesis --------------------------------------------------------------
    def synthesize_native(self, text: str, voice: Voice | None = None) -> tuple[np.ndarray, int]:
        """Synthesise at espeak's own rate.

        Returns:
            ``(samples, sample_rate)``: int16 array ``(T,)`` and its rate (22050).

        Raises:
            ValueError: for empty text or a voice espeak-ng does not have.
            RuntimeError: if the worker dies.
        """
        samples, native_rate, _ = self._request(text, voice)
        return samples, native_rate

    def _request(
        self, text: str, voice: Voice | None
    ) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
        """One worker round trip: native samples, their rate, phoneme events."""
        voice = voice or Voice()
        if not text.strip():
            raise ValueError("synthesize: text is empty")
        if "+" in voice.name:
            variant = voice.name.split("+", 1)[1]
            variants = available_voices()["variants"]
            if variant not in variants:
                raise ValueError(
                    f"espeak-ng has no voice variant {variant!r}; available: {', '.join(variants)}"
                )
        request = {
            "text": text,
            "voice": voice.name,
            "rate": voice.rate,
            "pitch": voice.pitch,
            "seed": self.seed,
        }
        with self._lock:
            if self._owner_pid != os.getpid():
                # A forked copy (e.g. a data-loader worker) must not share the
                # parent's pipes: forget them and start a worker of its own.
                self._proc, self._stderr = None, None
            proc = (
                self._proc
                if self._proc is not None and self._proc.poll() is None
                else self._start()
            )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError as err:
                self._proc = None
                raise RuntimeError(
                    f"espeak-ng worker died; its stderr:\n{self._worker_stderr()}"
                ) from err
            reply = self._read_header(proc)
            if not reply["ok"]:
                if "has no voice" in reply["error"]:
                    raise ValueError(
                        f"{reply['error']}; languages: {', '.join(available_voices()['languages'])}"
                    )
                raise RuntimeError(reply["error"])
            n_bytes = 2 * reply["n_samples"]
            data = proc.stdout.read(n_bytes)
            if len(data) != n_bytes:
                self._proc = None
                raise RuntimeError(
                    f"espeak-ng worker sent {len(data)} of {n_bytes} bytes; its stderr:\n{self._worker_stderr()}"
                )
        events = [(int(start), str(name)) for start, name in reply.get("phones", [])]
        return np.frombuffer(data, dtype="<i2").copy(), self._native_rate, events

    def synthesize(self, text: str, voice: Voice | None = None) -> torch.Tensor:
        """Speak ``text`` with ``voice`` (default ``Voice()``: en-us, 175 wpm, pitch 50).

        Returns:
            ``(T,)`` float32 waveform in ``[-1, 1]`` at :attr:`sample_rate`.

        Raises:
            ValueError: for empty text or an unknown voice.
            RuntimeError: if espeak-ng produces no audio or the worker dies.
        """
        return self.synthesize_with_phones(text, voice)[0]

    def synthesize_with_phones(
        self, text: str, voice: Voice | None = None
    ) -> tuple[torch.Tensor, PhoneAlignment]:
        """:meth:`synthesize`, plus the phones espeak-ng spoke and where.

        Returns:
            ``(audio, phones)``: the ``(T,)`` waveform at :attr:`sample_rate`
            and its :class:`~.phones.PhoneAlignment` (espeak-ng's phoneme
            events moved to :attr:`sample_rate`, cleaned as described in :mod:`.phones`).

        Raises:
            ValueError: for empty text or an unknown voice.
            RuntimeError: if espeak-ng produces no audio or the worker dies.
        """
        samples, native_rate, events = self._request(text, voice)
        if samples.size == 0:
            raise RuntimeError(f"espeak-ng produced no audio for {text[:60]!r}")
        audio = torch.from_numpy(samples.astype(np.float32) / 32768.0)  # (T_native,)
        if native_rate != self.sample_rate:
            audio = resample(audio, native_rate, self.sample_rate)  # (T,)
        phones = phones_from_events(events, native_rate, self.sample_rate, audio.shape[0])
        return audio, phones
