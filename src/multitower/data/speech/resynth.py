"""Speech units back to a waveform, so generated units can be listened to.

Not a vocoder: a rough, intelligible-at-best rendering.

1. each unit -> its mean log-mel frames (:meth:`SpeechUnitTokenizer.centroid_logmel`),
   ``frames_per_unit`` frames per unit; de-duplicated units are repeated for a
   fixed run length (or given per-unit run lengths);
2. mel power -> linear power by non-negative least squares against the mel
   filterbank (pseudo-inverse start, then multiplicative updates that keep
   every bin >= 0);
3. magnitude -> waveform by fast Griffin-Lim (Perraudin et al., 2013) with
   ``torch.stft`` / ``torch.istft`` and a seeded random initial phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from multitower.data.speech.audio import write_wav
from multitower.data.speech.units import SpeechUnitTokenizer


@dataclass(frozen=True)
class ResynthConfig:
    """Settings of :func:`units_to_waveform`.

    Args:
        griffin_lim_iters: phase-reconstruction iterations.
        momentum: fast Griffin-Lim momentum in [0, 1) (0 = plain Griffin-Lim).
        nnls_iters: multiplicative updates of the mel -> linear inversion.
        peak: scale the output so its largest absolute sample is this (None: no scaling).
        seed: seed of the initial random phase.
    """

    griffin_lim_iters: int = 32
    momentum: float = 0.99
    nnls_iters: int = 30
    peak: float | None = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.griffin_lim_iters < 0 or self.nnls_iters < 0:
            raise ValueError(
                f"ResynthConfig: iteration counts must be >= 0, got {self.griffin_lim_iters}, {self.nnls_iters}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"ResynthConfig.momentum must be in [0, 1), got {self.momentum}")
        if self.peak is not None and not 0 < self.peak <= 1:
            raise ValueError(f"ResynthConfig.peak must be in (0, 1] or None, got {self.peak}")


def mel_to_linear(
    mel_power: torch.Tensor, fb: torch.Tensor, *, n_iter: int = 30, eps: float = 1e-10
) -> torch.Tensor:
    """Non-negative least-squares inversion of ``mel = linear @ fb``.

    Args:
        mel_power: ``(n, M)`` mel power (not log).
        fb: ``(F, M)`` mel filterbank.
        n_iter: multiplicative NNLS updates after the clipped pseudo-inverse start.

    Returns:
        ``(n, F)`` non-negative linear power.
    """
    x = (mel_power @ torch.linalg.pinv(fb)).clamp(min=eps)  # (n, F)
    numerator = mel_power @ fb.T  # (n, F)
    gram = fb @ fb.T  # (F, F)
    for _ in range(n_iter):
        # Lee-Seung update for min |x fb - mel|^2, x >= 0: stays non-negative.
        x = x * numerator / (x @ gram + eps)  # (n, F)
    return x


def griffin_lim(
    magnitude: torch.Tensor,
    *,
    n_fft: int,
    hop_length: int,
    window: torch.Tensor,
    length: int,
    n_iter: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
) -> torch.Tensor:
    """Fast Griffin-Lim phase reconstruction.

    Args:
        magnitude: ``(F, n_frames)`` STFT magnitude, ``F = n_fft // 2 + 1``,
            centred frames as :class:`~.features.LogMel` makes them.
        n_fft, hop_length, window: the STFT that produced ``magnitude``.
        length: output samples.
        n_iter: iterations.
        momentum: fast Griffin-Lim momentum (0 = plain Griffin-Lim).
        seed: seed of the random initial phase.

    Returns:
        ``(length,)`` float32 waveform.
    """
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(magnitude.shape, generator=generator) * (2 * torch.pi)  # (F, n_frames)
    angles = torch.polar(torch.ones_like(magnitude), phase)  # (F, n_frames) complex, |.| = 1
    stft_kw = {
        "n_fft": n_fft,
        "hop_length": hop_length,
        "win_length": window.shape[0],
        "window": window,
        "center": True,
    }
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        audio = torch.istft(magnitude * angles, length=length, **stft_kw)  # (length,)
        rebuilt = torch.stft(
            audio, return_complex=True, pad_mode="reflect", **stft_kw
        )  # (F, n_frames)
        angles = rebuilt - previous * (momentum / (1 + momentum))
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(magnitude * angles, length=length, **stft_kw)  # (length,)


def units_to_logmel(
    units: torch.Tensor,
    tokenizer: SpeechUnitTokenizer,
    *,
    run_lengths: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Unit ids -> log-mel frames.

    Args:
        units: ``(n,)`` unit ids.
        tokenizer: the tokenizer that made them.
        run_lengths: for de-duplicated units, how many times each unit repeats:
            an int for all, or ``(n,)`` per unit; ``None`` means 1 (units as encoded).

    Returns:
        ``(sum(run_lengths) * frames_per_unit, n_mels)`` log-mel frames.

    Raises:
        ValueError: for ids outside the codebook or bad run lengths.
    """
    units = units.long().flatten()
    k = tokenizer.config.codebook_size
    if units.numel() == 0:
        raise ValueError("units_to_logmel: no units")
    if int(units.min()) < 0 or int(units.max()) >= k:
        raise ValueError(
            f"units_to_logmel: unit ids must be in [0, {k}), got range [{int(units.min())}, {int(units.max())}]"
        )
    if run_lengths is not None:
        repeats = (
            torch.full_like(units, run_lengths)
            if isinstance(run_lengths, int)
            else run_lengths.long().flatten()
        )
        if repeats.shape != units.shape or int(repeats.min()) < 1:
            raise ValueError(
                f"run_lengths must be >= 1 and match units {tuple(units.shape)}, got {tuple(repeats.shape)}"
            )
        units = torch.repeat_interleave(units, repeats)  # (n_total,)
    frames = tokenizer.centroid_logmel()[units]  # (n_total, fpu, M)
    return frames.reshape(-1, frames.shape[-1])  # (n_total * fpu, M)


def units_to_waveform(
    units: torch.Tensor,
    tokenizer: SpeechUnitTokenizer,
    *,
    deduped: bool = False,
    run_length: int | torch.Tensor | None = None,
    config: ResynthConfig | None = None,
) -> torch.Tensor:
    """Render speech units as audio.

    Args:
        units: ``(n,)`` unit ids.
        tokenizer: the tokenizer that made them.
        deduped: the units had consecutive repeats merged; each is then held for
            ``run_length`` units (default: the mean run length measured when the
            tokenizer was fitted, rounded, at least 1).
        run_length: an int, or ``(n,)`` per-unit run lengths; implies repetition
            even when ``deduped`` is False.
        config: resynthesis settings.

    Returns:
        ``(n_total * samples_per_unit,)`` float32 waveform at the tokenizer's
        sample rate, where ``n_total`` counts units after repetition.
    """
    config = config or ResynthConfig()
    cfg = tokenizer.config
    if deduped and run_length is None:
        run_length = max(1, round(tokenizer.mean_run_length))
    logmel = units_to_logmel(units, tokenizer, run_lengths=run_length)  # (n_frames, M)
    n_frames = logmel.shape[0]
    mel_power = logmel.exp()  # (n_frames, M)
    mel = tokenizer.logmel
    power = mel_to_linear(mel_power, mel.fb, n_iter=config.nnls_iters)  # (n_frames, F)
    # Centred STFT of n_frames * hop samples has one more frame: repeat the last.
    power = torch.cat([power, power[-1:]])  # (n_frames + 1, F)
    magnitude = power.sqrt().T.contiguous()  # (F, n_frames + 1)
    length = n_frames * cfg.hop_length
    audio = griffin_lim(
        magnitude,
        n_fft=mel.n_fft,
        hop_length=mel.hop_length,
        window=mel.window,
        length=length,
        n_iter=config.griffin_lim_iters,
        momentum=config.momentum,
        seed=config.seed,
    )
    if config.peak is not None:
        top = float(audio.abs().max())
        if top > 0:
            audio = audio * (config.peak / top)
    return audio.float()


def units_to_wav(
    path: str | Path,
    units: torch.Tensor,
    tokenizer: SpeechUnitTokenizer,
    *,
    deduped: bool = False,
    run_length: int | torch.Tensor | None = None,
    config: ResynthConfig | None = None,
) -> torch.Tensor:
    """:func:`units_to_waveform`, written to ``path`` as a WAV file; returns the audio."""
    audio = units_to_waveform(
        units, tokenizer, deduped=deduped, run_length=run_length, config=config
    )
    write_wav(path, audio, tokenizer.config.sample_rate)
    return audio
