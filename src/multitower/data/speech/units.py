"""Discrete speech units: k-means over stacked, normalised log-mel or MFCC frames.

Zipper's speech tower is a decoder-only language model over discrete speech
tokens. We make them without a pre-trained speech encoder:

1. log-mel frames at ``unit_rate * frames_per_unit`` frames per second
   (:class:`~.features.LogMel`); with ``features="mfcc"`` their first
   ``n_mfcc`` cepstra instead; ``deltas`` appends deltas (and delta-deltas);
   ``cmvn="utterance"`` normalises each dimension over the utterance
   (:mod:`~.features`), ``cmvn="speaker"`` over the speaker's fit speech;
2. each unit covers ``frames_per_unit`` consecutive frames; its feature vector
   stacks those frames plus ``context`` neighbours on each side
   (``(frames_per_unit + 2 * context) * n_mels`` values);
3. per-dimension mean/variance normalisation, statistics from the fit data;
4. k-means (:mod:`~.kmeans`: k-means++ initialisation, seeded, batched
   distances, Lloyd iterations) with ``codebook_size`` centroids, fitted on unaligned speech only;
5. a unit is the index of the nearest centroid (with ``run_penalty`` > 0: the
   sequence minimising the distances plus a cost per change of unit,
   :func:`~.kmeans.penalised_assign`); runs shorter than ``min_run``
   units are absorbed by the run before them (the first run by the one after);
   optionally consecutive repeats are then merged (``dedup``).

With ``vtln`` the mel filterbank of each utterance is warped
(:func:`~.features.warp_frequencies`) by the factor of
:data:`~.features.VTLN_WARPS` that brings its vectors closest to the codebook:
vocal tract length normalisation without transcripts; fitting alternates the
warp choice and k-means (``vtln_iters`` rounds after a first unwarped fit).

Saved format (:meth:`SpeechUnitTokenizer.save`): version 2 adds the feature
fields to the config and, when the features are not plain log-mel, a
``unit_logmel`` tensor (each unit's mean log-mel frames, for resynthesis);
version 1 files (plain log-mel) still load.

An utterance of ``T`` samples gives ``ceil(T * unit_rate / sample_rate)``
units (frames are padded by repeating the last one, or the trailing centred
frame is dropped, to match).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from multitower.data.speech.audio import read_audio
from multitower.data.speech.features import (
    VTLN_WARPS,
    LogMel,
    add_deltas,
    mel_filterbank,
    mfcc_from_logmel,
    utterance_cmvn,
)
from multitower.data.speech.kmeans import assign, kmeans, penalised_assign
from multitower.data.speech_config import UnitConfig
from multitower.io import file_sha256, write_bytes_atomic, write_text_atomic
from multitower.progress import Progress, log_line

_FORMAT = "multitower-speech-units"
_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
CONFIG_FILE = "unit_tokenizer.json"
TENSORS_FILE = "unit_tokenizer.safetensors"


# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------
def dedup_units(units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge runs of repeated units.

    Args:
        units: ``(n,)`` long.

    Returns:
        ``(units, run_lengths)``, both ``(n_runs,)``; ``run_lengths.sum() == n``.
    """
    if units.numel() == 0:
        return units.clone(), torch.zeros(0, dtype=torch.long)
    values, counts = torch.unique_consecutive(units, return_counts=True)
    return values, counts


def smooth_runs(units: torch.Tensor, min_run: int) -> torch.Tensor:
    """Absorb runs shorter than ``min_run`` into the run before them.

    Runs are read left to right: a short run takes the unit of the (already
    smoothed) run before it; a short first run takes the unit of the first
    long-enough run after it. The length is unchanged, so units stay aligned
    with time. With no run of ``min_run`` units at all, ``units`` is returned.

    Args:
        units: ``(n,)`` long.
        min_run: 1 leaves ``units`` unchanged.
    """
    if min_run <= 1 or units.numel() == 0:
        return units.clone()
    values, counts = dedup_units(units)
    long_runs = (counts >= min_run).nonzero().flatten()
    if long_runs.numel() == 0:
        return units.clone()
    out = values.clone()
    previous = int(values[long_runs[0]])  # the first run's stand-in
    for i in range(len(values)):
        if counts[i] >= min_run:
            previous = int(values[i])
        else:
            out[i] = previous
    return torch.repeat_interleave(out, counts)


class SpeechUnitTokenizer:
    """Waveform -> discrete speech units (see the module docstring).

    Create with :meth:`fit` or :meth:`load`. ``vocab_size == codebook_size``;
    the speech tower adds its own special tokens on top.

    Args:
        config: the settings.
        centroids: ``(codebook_size, feature_dim)``, in normalised feature space.
        mean, std: ``(feature_dim,)`` normalisation of the stacked vectors.
        mean_run_length: mean run of identical units on fit data.
        unit_logmel: ``(codebook_size, frames_per_unit, n_mels)`` mean log-mel
            of each unit's members; needed unless the features are plain log-mel
            (then derived from the centroids).
        speaker_stats: ``{speaker: (mean, std)}`` frame statistics, each
            ``(frame_dim,)``, for ``cmvn="speaker"``.
        switch_cost: cost per change of unit (``config.run_penalty`` times the
            fit data's mean squared distance; 0: nearest centroid).
    """

    def __init__(
        self,
        config: UnitConfig,
        centroids: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        mean_run_length: float = 1.0,
        unit_logmel: torch.Tensor | None = None,
        speaker_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        switch_cost: float = 0.0,
    ) -> None:
        expected = {
            "centroids": (config.codebook_size, config.feature_dim),
            "mean": (config.feature_dim,),
            "std": (config.feature_dim,),
            "unit_logmel": (config.codebook_size, config.frames_per_unit, config.n_mels),
        }
        named = [("centroids", centroids), ("mean", mean), ("std", std)]
        if unit_logmel is not None:
            named.append(("unit_logmel", unit_logmel))
        for name, tensor in named:
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(
                    f"SpeechUnitTokenizer: {name} has shape {tuple(tensor.shape)}, expected {expected[name]} for {config}"
                )
        for speaker, stats in (speaker_stats or {}).items():
            if any(tuple(t.shape) != (config.frame_dim,) for t in stats):
                raise ValueError(
                    f"SpeechUnitTokenizer: statistics of speaker {speaker!r} must be two ({config.frame_dim},) tensors"
                )
        if not mean_run_length >= 1.0:
            raise ValueError(f"mean_run_length must be >= 1, got {mean_run_length}")
        if not (math.isfinite(switch_cost) and switch_cost >= 0):
            raise ValueError(f"switch_cost must be a finite number >= 0, got {switch_cost}")
        self.config = config
        self.centroids = centroids.float().contiguous()  # (k, D), in normalised feature space
        self.mean = mean.float().contiguous()  # (D,)
        self.std = std.float().contiguous()  # (D,)
        self.mean_run_length = float(mean_run_length)
        self.unit_logmel = None if unit_logmel is None else unit_logmel.float().contiguous()
        self.speaker_stats = {
            str(k): (m.float(), s.float()) for k, (m, s) in (speaker_stats or {}).items()
        }
        self.switch_cost = float(switch_cost)
        self.logmel = LogMel(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
        self.warps = VTLN_WARPS if config.vtln else (1.0,)
        self.warp_fbs = {
            w: self.logmel.fb
            if w == 1.0
            else mel_filterbank(config.n_fft // 2 + 1, config.n_mels, config.sample_rate, warp=w)
            for w in self.warps
        }  # (F, M) each

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    # -- features ----------------------------------------------------------------
    def _power(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` waveform -> ``(n_units * frames_per_unit, n_fft // 2 + 1)`` power frames."""
        cfg = self.config
        if audio.dim() != 1 or audio.numel() == 0:
            raise ValueError(f"expected a non-empty 1-D waveform, got shape {tuple(audio.shape)}")
        power = self.logmel.power_spectrogram(audio)  # (n_frames, F)
        want = cfg.num_units(audio.shape[0]) * cfg.frames_per_unit
        if power.shape[0] >= want:
            return power[:want]  # drop the trailing centred frame
        return torch.cat([power, power[-1:].expand(want - power.shape[0], -1)])  # (want, F)

    def _log_mel(self, power: torch.Tensor, warp: float) -> torch.Tensor:
        """Power frames -> ``(n, n_mels)`` log-mel frames through the ``warp`` filterbank."""
        return torch.log(torch.clamp(power @ self.warp_fbs[warp], min=self.logmel.log_floor))

    def _frames_at(self, power: torch.Tensor, warp: float) -> torch.Tensor:
        """Power frames -> ``(n, frame_dim)`` feature frames (before any CMVN) with the
        filterbank warped by ``warp``."""
        cfg = self.config
        logmel = self._log_mel(power, warp)  # (n, M)
        frames = mfcc_from_logmel(logmel, cfg.n_mfcc) if cfg.features == "mfcc" else logmel
        return add_deltas(frames, cfg.deltas)

    def _stack(self, frames: torch.Tensor) -> torch.Tensor:
        """``(n_units * fpu, F)`` frames -> ``(n_units, fpv * F)`` vectors with context."""
        cfg = self.config
        c = cfg.context
        n_units = frames.shape[0] // cfg.frames_per_unit
        padded = torch.cat(
            [frames[:1].expand(c, -1), frames, frames[-1:].expand(c, -1)]
        )  # (want + 2c, F)
        windows = padded.unfold(0, cfg.frames_per_vector, cfg.frames_per_unit)  # (n_units, F, fpv)
        return windows.transpose(1, 2).reshape(n_units, -1)  # (n_units, fpv * F)

    def _cmvn(self, frames: torch.Tensor, speaker: str | None) -> torch.Tensor:
        cmvn = self.config.cmvn
        if cmvn == "utterance":
            return utterance_cmvn(frames)
        if cmvn == "speaker":
            if speaker is None:
                raise ValueError("this unit tokenizer uses cmvn='speaker': pass speaker=...")
            if speaker not in self.speaker_stats:
                raise ValueError(
                    f"no CMVN statistics for speaker {speaker!r} (known: {sorted(self.speaker_stats)[:8]}...); "
                    "add them with add_speaker(speaker, audios)"
                )
            mean, std = self.speaker_stats[speaker]
            return (frames - mean) / std
        return frames

    def _vectors_at(self, power: torch.Tensor, warp: float, speaker: str | None) -> torch.Tensor:
        """Power frames -> ``(n_units, feature_dim)`` normalised vectors at one warp."""
        frames = self._frames_at(power, warp)
        return (self._stack(self._cmvn(frames, speaker)) - self.mean) / self.std

    def _best_warp(self, power: torch.Tensor, speaker: str | None) -> float:
        """The warp whose vectors lie closest to the codebook (mean squared distance)."""
        if len(self.warps) == 1:
            return self.warps[0]
        scores = [
            float(assign(self._vectors_at(power, w, speaker), self.centroids)[1].mean())
            for w in self.warps
        ]
        return self.warps[min(range(len(scores)), key=scores.__getitem__)]

    def warp(self, audio: torch.Tensor, *, speaker: str | None = None) -> float:
        """The VTLN factor chosen for a waveform (1.0 without ``config.vtln``)."""
        return self._best_warp(self._power(audio), speaker)

    def features(self, audio: torch.Tensor, *, speaker: str | None = None) -> torch.Tensor:
        """``(T,)`` waveform at ``config.sample_rate`` -> ``(n_units, feature_dim)`` normalised vectors
        (at the chosen warp with ``config.vtln``).

        Args:
            speaker: the speaker id; required with ``cmvn="speaker"``, ignored otherwise.
        """
        power = self._power(audio)
        return self._vectors_at(power, self._best_warp(power, speaker), speaker)

    def _labels(self, vectors: torch.Tensor) -> torch.Tensor:
        """Normalised vectors -> units, before ``min_run`` smoothing and dedup."""
        if self.switch_cost > 0:
            return penalised_assign(vectors, self.centroids, self.switch_cost)
        return assign(vectors, self.centroids)[0]

    def add_speaker(self, speaker: str, audios: Sequence[torch.Tensor | str | Path]) -> None:
        """Measure one speaker's frame statistics (for ``cmvn="speaker"``) from
        untranscribed audio of that speaker; replaces earlier statistics."""
        self.speaker_stats[str(speaker)] = self._speaker_stats(audios)

    def _speaker_stats(
        self, audios: Sequence[torch.Tensor | str | Path]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(audios) == 0:
            raise ValueError("speaker statistics need at least one utterance")
        total, total_sq, n = 0.0, 0.0, 0
        for item in audios:
            audio = (
                read_audio(item, self.config.sample_rate) if isinstance(item, (str, Path)) else item
            )
            frames = self._frames_at(self._power(audio), 1.0).double()  # (n, F), unwarped
            total = total + frames.sum(dim=0)
            total_sq = total_sq + frames.pow(2).sum(dim=0)
            n += frames.shape[0]
        mean = total / n
        std = (total_sq / n - mean.pow(2)).clamp(min=1e-10).sqrt().clamp(min=1e-5)
        return mean.float(), std.float()

    # -- encoding ------------------------------------------------------------------
    def encode(
        self, audio: torch.Tensor, *, dedup: bool | None = None, speaker: str | None = None
    ) -> torch.Tensor:
        """Units of one waveform.

        Args:
            audio: ``(T,)`` float waveform at ``config.sample_rate``.
            dedup: merge consecutive repeats (default ``config.dedup``).
            speaker: the speaker id; required with ``cmvn="speaker"``.

        Returns:
            ``(n,)`` long tensor of unit ids in ``[0, codebook_size)``;
            ``n == config.num_units(T)`` without dedup (after ``min_run`` smoothing).
        """
        with torch.no_grad():
            labels = self._labels(self.features(audio, speaker=speaker))  # (n_units,)
        labels = smooth_runs(labels, self.config.min_run)
        if self.config.dedup if dedup is None else dedup:
            labels, _ = dedup_units(labels)
        return labels

    def centroid_logmel(self) -> torch.Tensor:
        """Mean log-mel frames of each unit: ``(codebook_size, frames_per_unit, n_mels)``.

        With plain log-mel features the centroid is the mean of its members'
        normalised vectors, so undoing the (affine) normalisation gives their
        mean log-mel (the context frames are dropped); otherwise the means
        measured at fit time (``unit_logmel``).
        """
        cfg = self.config
        if self.unit_logmel is not None:
            return self.unit_logmel
        if not cfg.plain_logmel:
            raise ValueError(
                "this unit tokenizer has no unit_logmel tensor and its features are not plain log-mel"
            )
        raw = self.centroids * self.std + self.mean  # (k, D)
        frames = raw.reshape(cfg.codebook_size, cfg.frames_per_vector, cfg.n_mels)  # (k, fpv, M)
        return frames[:, cfg.context : cfg.context + cfg.frames_per_unit]  # (k, fpu, M)

    # -- fitting ---------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        audios: Sequence[torch.Tensor | str | Path],
        config: UnitConfig | None = None,
        *,
        speakers: Sequence[str] | None = None,
        quiet: bool = True,
    ) -> SpeechUnitTokenizer:
        """Fit the normalisation and k-means codebook.

        Fit on the *unaligned* speech split only, so the units never see the
        aligned or test data.

        Args:
            audios: waveforms ``(T,)`` at ``config.sample_rate``, or audio file
                paths (read one at a time with :func:`~.audio.read_audio`).
            config: unit settings (default ``UnitConfig()``).
            speakers: the speaker id of each audio; required with
                ``cmvn="speaker"`` (each speaker's statistics come from its
                utterances here), ignored otherwise.
            quiet: when False, print progress to stderr.

        Raises:
            ValueError: if there are fewer unit vectors than ``codebook_size``,
                or ``cmvn="speaker"`` without one speaker per audio.
        """
        config = config or UnitConfig()
        if len(audios) == 0:
            raise ValueError("SpeechUnitTokenizer.fit: no audio given")
        if config.cmvn == "speaker" and (speakers is None or len(speakers) != len(audios)):
            raise ValueError(
                "SpeechUnitTokenizer.fit: cmvn='speaker' needs speakers=, one speaker id per audio"
            )
        generator = torch.Generator().manual_seed(config.seed)
        shell = cls(
            config,
            torch.zeros(config.codebook_size, config.feature_dim),
            torch.zeros(config.feature_dim),
            torch.ones(config.feature_dim),
        )
        if config.cmvn == "speaker":
            assert speakers is not None
            by_speaker: dict[str, list[torch.Tensor | str | Path]] = {}
            for item, spk in zip(audios, speakers):
                by_speaker.setdefault(str(spk), []).append(item)
            for spk, items in by_speaker.items():
                shell.add_speaker(spk, items)
        quota = math.ceil(config.max_fit_vectors / len(audios))
        start = time.monotonic()
        warps = [1.0] * len(audios)
        n_passes = 1 + (config.vtln_iters if config.vtln else 0)
        current: SpeechUnitTokenizer | None = None  # the previous pass's codebook
        for pass_index in range(n_passes):
            # The same rows are sampled in every pass (the generator restarts).
            generator = torch.Generator().manual_seed(config.seed)
            chunks: list[torch.Tensor] = []
            logmel_chunks: list[torch.Tensor] = []
            # A few whole utterances, to measure how long units repeat.
            run_length_utts: list[torch.Tensor] = []
            label = "speech units: features" + (
                f" (pass {pass_index + 1}/{n_passes})" if n_passes > 1 else ""
            )
            progress = Progress(len(audios), label, unit="utts", mode="off" if quiet else "auto")
            for i, item in enumerate(audios):
                audio = (
                    read_audio(item, config.sample_rate) if isinstance(item, (str, Path)) else item
                )
                speaker = None if speakers is None else str(speakers[i])
                with torch.no_grad():
                    power = shell._power(audio)
                    if current is not None:
                        warps[i] = current._best_warp(power, speaker)
                    frames = shell._frames_at(power, warps[i])
                    vectors = shell._stack(shell._cmvn(frames, speaker))  # (n_units, D)
                    # The speech's own (unwarped) log-mel, for resynthesis.
                    logmel = shell._log_mel(power, 1.0)  # (n_units * fpu, M)
                    unit_logmel = logmel.reshape(vectors.shape[0], config.frames_per_unit, -1)
                if len(run_length_utts) < 64:
                    run_length_utts.append(vectors)
                if vectors.shape[0] > quota:
                    keep = torch.randperm(vectors.shape[0], generator=generator)[:quota]
                    vectors, unit_logmel = vectors[keep], unit_logmel[keep]
                chunks.append(vectors)
                if not config.plain_logmel:
                    logmel_chunks.append(unit_logmel)
                progress.update(i + 1)
            progress.close()
            x = torch.cat(chunks)  # (N, D)
            x_logmel = torch.cat(logmel_chunks) if logmel_chunks else None  # (N, fpu, M)
            if x.shape[0] > config.max_fit_vectors:
                keep = torch.randperm(x.shape[0], generator=generator)[: config.max_fit_vectors]
                x = x[keep]
                x_logmel = None if x_logmel is None else x_logmel[keep]
            if x.shape[0] < config.codebook_size:
                raise ValueError(
                    f"SpeechUnitTokenizer.fit: {x.shape[0]} unit vectors < codebook_size={config.codebook_size}; give more audio"
                )
            if config.normalize:
                mean = x.mean(dim=0)  # (D,)
                std = x.std(dim=0).clamp(min=1e-5)  # (D,)
            else:
                mean, std = torch.zeros(config.feature_dim), torch.ones(config.feature_dim)
            log_line(
                f"speech units: k-means k={config.codebook_size} on {x.shape[0]} vectors of dim {config.feature_dim}"
                + (f", mean warp {sum(warps) / len(warps):.3f}" if config.vtln else ""),
                stderr=not quiet,
            )
            result = kmeans(
                (x - mean) / std, config.codebook_size, n_iter=config.kmeans_iters, seed=config.seed
            )
            if pass_index + 1 < n_passes:  # the next pass chooses warps against this codebook
                current = cls(config, result.centroids, mean, std)
        unit_logmel_means = None
        if x_logmel is not None:
            labels, _ = assign((x - mean) / std, result.centroids)  # (N,)
            sums = torch.zeros(config.codebook_size, *x_logmel.shape[1:]).index_add_(
                0, labels, x_logmel
            )  # (k, fpu, M)
            counts = torch.bincount(labels, minlength=config.codebook_size).clamp(min=1)
            unit_logmel_means = sums / counts[:, None, None]
        tok = cls(
            config,
            result.centroids,
            mean,
            std,
            unit_logmel=unit_logmel_means,
            speaker_stats=shell.speaker_stats,
            switch_cost=config.run_penalty * result.inertia / x.shape[0],
        )
        runs = [
            dedup_units(smooth_runs(tok._labels((v - mean) / std), config.min_run))[1]
            for v in run_length_utts
        ]
        tok.mean_run_length = float(torch.cat(runs).float().mean())
        log_line(
            f"speech units: done in {time.monotonic() - start:.0f} s, inertia/vector {result.inertia / x.shape[0]:.2f}, mean run length {tok.mean_run_length:.2f}",
            stderr=not quiet,
        )
        return tok

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``unit_tokenizer.json`` (config) and ``unit_tokenizer.safetensors``
        (``centroids``, ``mean``, ``std``, and ``unit_logmel`` / ``speaker_mean``
        / ``speaker_std`` when present) into ``directory``, each atomically; the
        config records the tensors file's SHA-256, checked by :meth:`load`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        speakers = sorted(self.speaker_stats)
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": asdict(self.config),
            "mean_run_length": self.mean_run_length,
            "switch_cost": self.switch_cost,
            "speakers": speakers,
        }
        tensors = {"centroids": self.centroids, "mean": self.mean, "std": self.std}
        if self.unit_logmel is not None:
            tensors["unit_logmel"] = self.unit_logmel
        if speakers:
            tensors["speaker_mean"] = torch.stack([self.speaker_stats[s][0] for s in speakers])
            tensors["speaker_std"] = torch.stack([self.speaker_stats[s][1] for s in speakers])
        data = save_tensors(tensors)
        write_bytes_atomic(directory / TENSORS_FILE, data)
        # The config, written last, records the tensors' hash; load checks it.
        meta["tensors_sha256"] = hashlib.sha256(data).hexdigest()
        write_text_atomic(directory / CONFIG_FILE, json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> SpeechUnitTokenizer:
        """Read a tokenizer written by :meth:`save` (format version 1 or 2).

        Raises:
            FileNotFoundError: if either file is missing.
            ValueError: for a tensors file whose SHA-256 differs from the recorded one, a wrong format, unknown config fields, or tensors
                whose shapes do not match the config (names the file and tensor).
        """
        directory = Path(directory)
        config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
        for p in (config_path, tensors_path):
            if not p.is_file():
                raise FileNotFoundError(f"speech unit tokenizer file not found: {p}")
        try:
            meta = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{config_path}: not a JSON file ({err})") from err
        if (
            not isinstance(meta, dict)
            or meta.get("format") != _FORMAT
            or meta.get("version") not in _READABLE_VERSIONS
        ):
            raise ValueError(
                f"{config_path}: not a {_FORMAT} file of version {' or '.join(map(str, _READABLE_VERSIONS))}"
            )
        config = UnitConfig.from_dict(meta["config"])
        recorded = meta.get("tensors_sha256")  # absent in files saved before hashes
        if recorded is not None and file_sha256(tensors_path) != recorded:
            raise ValueError(
                f"{tensors_path}: SHA-256 differs from the one recorded in {config_path} "
                "(the file was changed or corrupted after it was saved)"
            )
        try:
            tensors = load_file(str(tensors_path))
        except Exception as err:
            raise ValueError(f"{tensors_path}: not a readable safetensors file ({err})") from err
        missing = sorted({"centroids", "mean", "std"} - set(tensors))
        speakers = [str(s) for s in meta.get("speakers", [])]
        if speakers:
            missing += sorted({"speaker_mean", "speaker_std"} - set(tensors))
        if missing:
            raise ValueError(f"{tensors_path}: missing tensors {missing}")
        try:
            stats = {}
            if speakers:
                means, stds = tensors["speaker_mean"], tensors["speaker_std"]
                if means.shape[0] != len(speakers) or stds.shape[0] != len(speakers):
                    raise ValueError(
                        f"speaker_mean / speaker_std have {means.shape[0]} / {stds.shape[0]} rows for {len(speakers)} speakers"
                    )
                stats = {s: (means[i], stds[i]) for i, s in enumerate(speakers)}
            return cls(
                config,
                tensors["centroids"],
                tensors["mean"],
                tensors["std"],
                mean_run_length=float(meta.get("mean_run_length", 1.0)),
                unit_logmel=tensors.get("unit_logmel"),
                speaker_stats=stats,
                switch_cost=float(meta.get("switch_cost", 0.0)),
            )
        except ValueError as err:
            raise ValueError(f"{tensors_path}: {err}") from err
