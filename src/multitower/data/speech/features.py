"""Log-mel spectrogram, MFCC, deltas and utterance CMVN in plain torch.

``LogMel`` = |STFT|^2 (Hann window, ``torch.stft`` centred with reflect padding)
-> triangular mel filterbank -> ``log(max(mel, floor))``.

The mel filterbank uses the HTK mel scale, ``mel(f) = 2595 * log10(1 + f / 700)``,
with ``n_mels`` triangles whose corners are equally spaced in mel between
``f_min`` and ``f_max``; each triangle peaks at 1 at its centre frequency and is
not area-normalised (as ``torchaudio.functional.melscale_fbanks(norm=None,
mel_scale="htk")``).

MFCC (:func:`mfcc_from_logmel`): the first ``n_mfcc`` coefficients of the
orthonormal DCT-II of the log-mel frame (natural log, no liftering);
:func:`add_deltas` appends HTK-style regression deltas, :func:`utterance_cmvn`
normalises each dimension over one utterance.
"""

from __future__ import annotations

import torch


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """HTK mel of a frequency in Hz."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


# Frequency warps tried by vocal tract length normalisation (UnitConfig.vtln).
VTLN_WARPS = tuple(round(0.80 + 0.04 * i, 2) for i in range(11))  # 0.80, 0.84, ..., 1.20


def warp_frequencies(freqs: torch.Tensor, warp: float, nyquist: float) -> torch.Tensor:
    """Piecewise-linear VTLN warp: ``f -> warp * f`` up to a knee at
    ``0.85 * nyquist * min(1, 1 / warp)``, then the straight line to ``nyquist``
    (so ``[0, nyquist]`` maps onto itself)."""
    knee = 0.85 * nyquist * min(1.0, 1.0 / warp)
    upper = warp * knee + (nyquist - warp * knee) * (freqs - knee) / (nyquist - knee)
    return torch.where(freqs <= knee, warp * freqs, upper)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    *,
    f_min: float = 0.0,
    f_max: float | None = None,
    warp: float = 1.0,
) -> torch.Tensor:
    """Triangular HTK mel filterbank.

    Args:
        n_freqs: number of STFT bins, ``n_fft // 2 + 1``; bin ``i`` is at
            ``i * sample_rate / (2 * (n_freqs - 1))`` Hz.
        n_mels: number of filters.
        sample_rate: in Hz.
        f_min, f_max: band edges in Hz (``f_max`` defaults to ``sample_rate / 2``).
        warp: VTLN factor (:func:`warp_frequencies`): the triangles are read at
            the warped bin frequencies, so ``warp > 1`` moves the speaker's
            formants up the mel axis. A narrow low filter may then cover no bin
            (its band reads the log floor); only ``warp == 1`` checks for that.

    Returns:
        ``(n_freqs, n_mels)`` float32 weights: ``mel = power @ fb``.

    Raises:
        ValueError: for bad edges, or if a filter falls between two STFT bins
            and would be all zero (too many mels for this ``n_fft``).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}"
        )
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(
            f"need n_freqs >= 2 and n_mels >= 1, got n_freqs={n_freqs}, n_mels={n_mels}"
        )
    if not 0.5 <= warp <= 2.0:
        raise ValueError(f"mel_filterbank: warp must be in [0.5, 2], got {warp}")
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (F,)
    if warp != 1.0:
        freqs = warp_frequencies(freqs, warp, sample_rate / 2)
    corners = mel_to_hz(
        torch.linspace(
            float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64
        )
    )  # (M + 2,)
    lo, centre, hi = corners[:-2], corners[1:-1], corners[2:]  # (M,) each
    rising = (freqs[:, None] - lo[None, :]) / (centre - lo)[None, :]  # (F, M)
    falling = (hi[None, :] - freqs[:, None]) / (hi - centre)[None, :]  # (F, M)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (F, M)
    empty = (fb.max(dim=0).values == 0).nonzero().flatten().tolist()
    if empty and warp == 1.0:
        raise ValueError(
            f"mel filters {empty} cover no STFT bin: lower n_mels={n_mels} or raise n_fft (n_freqs={n_freqs})"
        )
    return fb.to(torch.float32)


class LogMel(torch.nn.Module):
    """Log-mel spectrogram.

    Frames are centred: frame ``t`` covers samples around ``t * hop_length``,
    so a waveform of ``T`` samples gives ``1 + T // hop_length`` frames.

    Args:
        sample_rate: in Hz.
        n_fft: FFT size (window length unless ``win_length`` is given).
        hop_length: samples between frames; pick it from the frame rate you
            need (``sample_rate / hop_length`` frames per second; 160 -> 100 Hz,
            320 -> 50 Hz at 16 kHz).
        n_mels: number of mel bands.
        win_length: Hann window length (default ``n_fft``).
        f_min, f_max: mel band edges in Hz.
        log_floor: power floor before the natural log (1e-5 sits above 16-bit
            quantisation noise, so digital silence and hiss get the same value).
    """

    window: torch.Tensor
    fb: torch.Tensor

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        *,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-5,
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in (0, n_fft={n_fft}], got {win_length}")
        if hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {hop_length}")
        if log_floor <= 0:
            raise ValueError(f"log_floor must be positive, got {log_floor}")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = (
            sample_rate,
            n_fft,
            hop_length,
            n_mels,
        )
        self.win_length, self.log_floor = win_length, log_floor
        self.register_buffer(
            "window", torch.hann_window(win_length, periodic=True), persistent=False
        )
        self.register_buffer(
            "fb",
            mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min=f_min, f_max=f_max),
            persistent=False,
        )

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        return 1 + num_samples // self.hop_length

    def power_spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` -> ``(..., n_frames, n_fft // 2 + 1)`` power spectrum."""
        if audio.shape[-1] == 0:
            raise ValueError("LogMel: empty waveform")
        lead = audio.shape[:-1]
        x = audio.reshape(-1, audio.shape[-1]).float()  # (B, T)
        if x.shape[-1] <= self.n_fft // 2:
            # Reflect padding needs more samples than the pad; pad tiny inputs with silence.
            x = torch.nn.functional.pad(x, (0, self.n_fft // 2 + 1 - x.shape[-1]))
        spec = torch.stft(
            x,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, F, n_frames)
        n_frames = self.num_frames(audio.shape[-1])
        power = spec.abs().pow(2).transpose(1, 2)[:, :n_frames]  # (B, n_frames, F)
        return power.reshape(*lead, n_frames, power.shape[-1])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` waveform -> ``(..., n_frames, n_mels)`` natural-log mel power."""
        mel = self.power_spectrogram(audio) @ self.fb  # (..., n_frames, n_mels)
        return torch.log(torch.clamp(mel, min=self.log_floor))


def frame_rate_hop(sample_rate: int, frame_rate: int) -> int:
    """Hop length for ``frame_rate`` frames per second.

    Raises:
        ValueError: if ``sample_rate`` is not a multiple of ``frame_rate``.
    """
    if frame_rate <= 0 or sample_rate % frame_rate:
        raise ValueError(
            f"sample_rate={sample_rate} must be a positive multiple of frame_rate={frame_rate}"
        )
    return sample_rate // frame_rate


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II basis: ``(n_in, n_out)``, so ``coeffs = x @ dct_matrix(...)``.

    ``D[m, k] = sqrt(2 / n_in) * cos(pi * k * (m + 0.5) / n_in)``, column 0 scaled
    by ``1 / sqrt(2)`` (as ``scipy.fft.dct(x, norm="ortho")``).

    Raises:
        ValueError: unless ``1 <= n_out <= n_in``.
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"need 1 <= n_out <= n_in, got n_in={n_in}, n_out={n_out}")
    m = torch.arange(n_in, dtype=torch.float64)[:, None]  # (n_in, 1)
    k = torch.arange(n_out, dtype=torch.float64)[None, :]  # (1, n_out)
    basis = torch.cos(torch.pi * k * (m + 0.5) / n_in) * (2.0 / n_in) ** 0.5  # (n_in, n_out)
    basis[:, 0] /= 2**0.5
    return basis.to(torch.float32)


def mfcc_from_logmel(logmel: torch.Tensor, n_mfcc: int) -> torch.Tensor:
    """``(..., n_frames, n_mels)`` log-mel -> ``(..., n_frames, n_mfcc)`` cepstra (DCT-II, orthonormal)."""
    return logmel @ dct_matrix(logmel.shape[-1], n_mfcc).to(logmel.dtype)


def add_deltas(frames: torch.Tensor, order: int, *, width: int = 2) -> torch.Tensor:
    """Append delta (and delta-delta) features along the last dimension.

    ``delta[t] = sum_{n=1..width} n * (x[t + n] - x[t - n]) / (2 * sum_{n} n^2)``,
    with the first and last frames repeated at the edges (HTK's regression
    formula); delta-deltas are the deltas of the deltas.

    Args:
        frames: ``(n_frames, D)``.
        order: 0 (unchanged), 1 (+ deltas) or 2 (+ deltas + delta-deltas).
        width: regression half-window in frames.

    Returns:
        ``(n_frames, D * (1 + order))``.
    """
    if order not in (0, 1, 2):
        raise ValueError(f"delta order must be 0, 1 or 2, got {order}")
    out, current = [frames], frames
    denom = 2.0 * sum(n * n for n in range(1, width + 1))
    for _ in range(order):
        padded = torch.cat(
            [current[:1].expand(width, -1), current, current[-1:].expand(width, -1)]
        )  # (n_frames + 2 * width, D)
        t = current.shape[0]
        current = (
            sum(
                n * (padded[width + n : width + n + t] - padded[width - n : width - n + t])
                for n in range(1, width + 1)
            )
            / denom
        )  # (n_frames, D)
        out.append(current)
    return torch.cat(out, dim=-1)


def utterance_cmvn(frames: torch.Tensor, *, floor: float = 1e-5) -> torch.Tensor:
    """Per-utterance mean and variance normalisation of ``(n_frames, D)`` features.

    Each dimension gets zero mean and unit variance over the utterance's frames
    (a constant dimension is only centred). Removes a fixed channel or vocal
    tract colouring of the whole utterance, i.e. much of what differs between
    speakers.
    """
    mean = frames.mean(dim=0, keepdim=True)  # (1, D)
    std = frames.std(dim=0, unbiased=False, keepdim=True).clamp(min=floor)  # (1, D)
    return (frames - mean) / std
