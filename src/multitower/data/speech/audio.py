"""Audio input/output and resampling.

:func:`load_audio` reads WAV or FLAC (via ``soundfile``), mixes to mono and
resamples to the target rate with ``soxr`` (a maintained high-quality resampler),
and says which conversions it made (:attr:`LoadedAudio.conversions`, for commands
to print); :func:`read_audio` returns only the waveform. Every way a file can be
unusable (missing, a directory, empty, not audio, non-finite samples) raises
:class:`BadRecordError` naming the path.
:func:`write_audio` writes atomically (temporary file + ``os.replace``) so a
crash never leaves a truncated file under the final name.

:func:`resample` is a polyphase windowed-sinc resampler in plain torch (the corpus
synthesiser's, kept so the corpus stays bit-identical): for a rate ratio
``new/orig = L/M`` (reduced fraction) it builds ``L`` filters, one per output
phase, from a Kaiser-windowed sinc low-pass at ``rolloff * min(orig, new) / 2``,
and applies them as one matrix product over strided input frames.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from multitower.data.errors import BadRecordError
from multitower.io import temporary_file

_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


@lru_cache(maxsize=16)
def _sinc_kernel(
    orig: int, new: int, zero_crossings: int, rolloff: float, beta: float
) -> tuple[torch.Tensor, int]:
    """Polyphase filters for resampling by ``new/orig`` (already reduced).

    Returns:
        ``(kernels, width)``: kernels of shape ``(new, 1, 2 * width + orig)``,
        float64, and the one-sided filter half-width ``width`` in input samples.
    """
    cutoff = min(orig, new) * rolloff  # in units of "input samples per output phase"
    width = math.ceil(zero_crossings * orig / cutoff)
    # Input sample offsets covered by one output frame, in input-sample units.
    idx = torch.arange(-width, width + orig, dtype=torch.float64) / orig  # (K,)
    # Output phase j sits at time j / new; t is the distance to each input sample.
    phase = -torch.arange(new, dtype=torch.float64)[:, None] / new  # (new, 1)
    t = (phase + idx[None, :]) * cutoff  # (new, K), in zero-crossing units
    t = t.clamp(-zero_crossings, zero_crossings)
    window = torch.special.i0(beta * torch.sqrt(1 - (t / zero_crossings) ** 2)) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64)
    )
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))
    kernels = sinc * window * (cutoff / orig)  # DC gain 1 per phase
    return kernels[:, None, :], width  # (new, 1, K)


def resample(
    audio: torch.Tensor,
    orig_sr: int,
    new_sr: int,
    *,
    zero_crossings: int = 16,
    rolloff: float = 0.945,
    beta: float = 8.555,
) -> torch.Tensor:
    """Resample with a Kaiser-windowed sinc polyphase filter.

    Args:
        audio: ``(T,)`` or ``(B, T)`` float waveform.
        orig_sr: sample rate of ``audio``.
        new_sr: wanted sample rate.
        zero_crossings: sinc zero crossings on each side of the filter centre.
        rolloff: low-pass cutoff as a fraction of the lower Nyquist frequency.
        beta: Kaiser window shape (8.555: about 80 dB stop-band attenuation).

    Returns:
        ``(ceil(T * new_sr / orig_sr),)`` or ``(B, that)``, same dtype as ``audio``.

    Raises:
        ValueError: for non-positive rates or a non-floating tensor.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, new_sr={new_sr}")
    if not audio.is_floating_point():
        raise ValueError(f"resample expects a floating-point waveform, got {audio.dtype}")
    if orig_sr == new_sr:
        return audio.clone()
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernels, width = _sinc_kernel(orig, new, zero_crossings, rolloff, beta)
    squeeze = audio.dim() == 1
    x = audio[None] if squeeze else audio  # (B, T)
    n_in = x.shape[-1]
    n_out = math.ceil(n_in * new / orig)
    x = torch.nn.functional.pad(x, (width, width + orig))  # (B, T + 2W + M)
    # Each block of M input samples yields L outputs, one per filter phase; a
    # strided view + matmul is this convolution and much faster than conv1d here.
    frames = x.unfold(-1, kernels.shape[-1], orig)  # (B, n_frames, K)
    y = frames @ kernels[:, 0, :].to(x.dtype).T  # (B, n_frames, L)
    y = y.reshape(x.shape[0], -1)[:, :n_out]  # (B, n_out)
    return y[0] if squeeze else y


def audio_info(path: str | Path) -> tuple[int, int]:
    """``(num_frames, sample_rate)`` of an audio file without decoding it.

    Raises:
        BadRecordError: if the file is missing or not readable audio.
    """
    path = Path(path)
    if path.is_dir():
        raise BadRecordError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        raise BadRecordError(f"{path}: audio file does not exist")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise BadRecordError(f"{path}: not a readable audio file ({err})") from err
    return int(info.frames), int(info.samplerate)


@dataclass(frozen=True)
class LoadedAudio:
    """A file read by :func:`load_audio`.

    Attributes:
        audio: ``(T,)`` mono float32 at the wanted rate.
        file_rate: the file's sample rate in Hz.
        channels: the file's channel count.
        sample_rate: the rate of ``audio``.
    """

    audio: torch.Tensor
    file_rate: int
    channels: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.audio.numel() / self.sample_rate

    @property
    def conversions(self) -> list[str]:
        """What was done to the file's samples, e.g. ``["down-mixed 2 channels to mono"]``."""
        done = []
        if self.channels > 1:
            done.append(f"down-mixed {self.channels} channels to mono")
        if self.file_rate != self.sample_rate:
            done.append(f"resampled {self.file_rate} Hz to {self.sample_rate} Hz")
        return done


def load_audio(path: str | Path, target_sr: int = 16000) -> LoadedAudio:
    """Read a WAV or FLAC file as mono float32 in ``[-1, 1]`` at ``target_sr``.

    Multi-channel audio is averaged to mono; other rates are resampled with
    ``soxr`` (its "VHQ" quality).

    Raises:
        BadRecordError: if the file does not exist, is a directory, is empty, is not
            audio that ``soundfile`` can decode, or holds non-finite samples.
    """
    path = Path(path)
    if path.is_dir():
        raise BadRecordError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        raise BadRecordError(f"{path}: audio file does not exist")
    if path.stat().st_size == 0:
        raise BadRecordError(f"{path}: audio file is empty (0 bytes)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise BadRecordError(f"{path}: not a readable audio file ({err})") from err
    if data.shape[0] == 0:
        raise BadRecordError(f"{path}: audio file has no samples")
    if not np.isfinite(data).all():
        raise BadRecordError(f"{path}: audio contains NaN or infinite samples")
    mono = np.ascontiguousarray(data.mean(axis=1))  # (T,)
    if sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="VHQ").astype(np.float32)
    return LoadedAudio(torch.from_numpy(mono), int(sr), int(data.shape[1]), target_sr)


def read_audio(path: str | Path, target_sr: int = 16000) -> torch.Tensor:
    """The ``(T,)`` float32 mono waveform of :func:`load_audio`.

    Raises:
        BadRecordError: as :func:`load_audio`.
    """
    return load_audio(path, target_sr).audio


def write_audio(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono audio as 16-bit PCM WAV or FLAC (chosen by the suffix), atomically.

    Samples are clipped to ``[-1, 1]``. The file is first written under a
    temporary name in the same folder and then renamed over ``path``.

    Args:
        path: destination ending in ``.wav`` or ``.flac``.
        audio: ``(T,)`` float waveform.
        sample_rate: in Hz.

    Raises:
        ValueError: for an unknown suffix, a non-1-D or empty waveform, or non-finite samples.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: audio suffix must be one of {sorted(_FORMATS)}, got {path.suffix!r}"
        )
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if data.ndim != 1 or data.shape[0] == 0:
        raise ValueError(
            f"{path}: expected a non-empty 1-D waveform, got shape {tuple(data.shape)}"
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: waveform contains NaN or infinite samples")
    if sample_rate <= 0:
        raise ValueError(f"{path}: sample_rate must be positive, got {sample_rate}")
    data = np.clip(data.astype(np.float32), -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)  # mode 0644 under umask 022, not mkstemp's 0600
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, format=fmt, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_wav(path: str | Path, audio: torch.Tensor | np.ndarray, sr: int) -> None:
    """Write a 16-bit PCM WAV file atomically (see :func:`write_audio`).

    Raises:
        ValueError: if ``path`` does not end in ``.wav``, or as :func:`write_audio`.
    """
    if Path(path).suffix.lower() != ".wav":
        raise ValueError(f"write_wav: {path} must end in .wav (use write_audio for FLAC)")
    write_audio(path, audio, sr)
