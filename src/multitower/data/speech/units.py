"""Discrete speech units: k-means over stacked, normalised log-mel frames.

Zipper's speech tower is a decoder-only language model over discrete speech
tokens. We make them without a pre-trained speech encoder:

1. log-mel frames at ``unit_rate * frames_per_unit`` frames per second
   (:class:`~.features.LogMel`);
2. each unit covers ``frames_per_unit`` consecutive frames; its feature vector
   stacks those frames plus ``context`` neighbours on each side
   (``(frames_per_unit + 2 * context) * n_mels`` values);
3. per-dimension mean/variance normalisation, statistics from the fit data;
4. k-means (:mod:`~.kmeans`: k-means++ initialisation, seeded, batched
   distances, Lloyd iterations) with ``codebook_size`` centroids, fitted on unaligned speech only;
5. a unit is the index of the nearest centroid; optionally consecutive repeats
   are merged (``dedup``).

An utterance of ``T`` samples gives ``ceil(T * unit_rate / sample_rate)``
units (frames are padded by repeating the last one, or the trailing centred
frame is dropped, to match).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multitower.data.speech.audio import read_audio
from multitower.data.speech.features import LogMel
from multitower.data.speech.kmeans import assign, kmeans

_FORMAT = "multitower-speech-units"
_FORMAT_VERSION = 1
CONFIG_FILE = "unit_tokenizer.json"
TENSORS_FILE = "unit_tokenizer.safetensors"


@dataclass(frozen=True)
class UnitConfig:
    """Settings of a :class:`SpeechUnitTokenizer`.

    Args:
        codebook_size: number of units (k-means centroids); 256-1024 in the
            experiments, anything in [2, 4096] allowed.
        unit_rate: units per second (50 or 25 typically).
        frames_per_unit: log-mel frames per unit; the feature frame rate is
            ``unit_rate * frames_per_unit`` (50 Hz x 2 = 100 Hz, hop 160 at 16 kHz).
        context: neighbouring frames stacked on each side of a unit's frames.
        sample_rate: audio sample rate in Hz.
        n_fft: FFT size of the log-mel features.
        n_mels: mel bands.
        normalize: mean/variance-normalise each feature dimension.
        dedup: default of :meth:`SpeechUnitTokenizer.encode`'s ``dedup``.
        kmeans_iters: maximum Lloyd iterations.
        max_fit_vectors: at most this many unit vectors (sampled evenly across
            utterances) are used to fit the normalisation and k-means.
        seed: seed of the sampling and the k-means++ initialisation.
    """

    codebook_size: int = 256
    unit_rate: int = 50
    frames_per_unit: int = 2
    context: int = 1
    sample_rate: int = 16000
    n_fft: int = 400
    n_mels: int = 80
    normalize: bool = True
    dedup: bool = False
    kmeans_iters: int = 30
    max_fit_vectors: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.codebook_size <= 4096:
            raise ValueError(
                f"UnitConfig.codebook_size must be in [2, 4096], got {self.codebook_size}"
            )
        if self.unit_rate <= 0 or self.frames_per_unit <= 0:
            raise ValueError(
                f"UnitConfig.unit_rate and frames_per_unit must be positive, got {self.unit_rate}, {self.frames_per_unit}"
            )
        if self.sample_rate % (self.unit_rate * self.frames_per_unit):
            raise ValueError(
                f"UnitConfig: sample_rate={self.sample_rate} must be a multiple of unit_rate * frames_per_unit = "
                f"{self.unit_rate * self.frames_per_unit} (e.g. unit_rate 50 or 25 with frames_per_unit 2 or 4)"
            )
        if self.context < 0:
            raise ValueError(f"UnitConfig.context must be >= 0, got {self.context}")
        if self.n_fft < 2 or self.n_mels < 1:
            raise ValueError(
                f"UnitConfig.n_fft must be >= 2 and n_mels >= 1, got {self.n_fft}, {self.n_mels}"
            )
        if self.kmeans_iters < 1:
            raise ValueError(f"UnitConfig.kmeans_iters must be >= 1, got {self.kmeans_iters}")
        if self.max_fit_vectors < self.codebook_size:
            raise ValueError(
                f"UnitConfig.max_fit_vectors={self.max_fit_vectors} must be >= codebook_size={self.codebook_size}"
            )

    @property
    def hop_length(self) -> int:
        """Samples between log-mel frames."""
        return self.sample_rate // (self.unit_rate * self.frames_per_unit)

    @property
    def samples_per_unit(self) -> int:
        return self.hop_length * self.frames_per_unit

    @property
    def frames_per_vector(self) -> int:
        """Log-mel frames stacked into one unit vector."""
        return self.frames_per_unit + 2 * self.context

    @property
    def feature_dim(self) -> int:
        return self.frames_per_vector * self.n_mels

    def num_units(self, num_samples: int) -> int:
        """Units produced (before dedup) for ``num_samples`` samples."""
        return math.ceil(num_samples / self.samples_per_unit)

    @classmethod
    def from_dict(cls, d: dict) -> UnitConfig:
        """Build from a dict, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"UnitConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)


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


class SpeechUnitTokenizer:
    """Waveform -> discrete speech units (see the module docstring).

    Create with :meth:`fit` or :meth:`load`. ``vocab_size == codebook_size``;
    the speech tower adds its own special tokens on top.
    """

    def __init__(
        self,
        config: UnitConfig,
        centroids: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        mean_run_length: float = 1.0,
    ) -> None:
        expected = {
            "centroids": (config.codebook_size, config.feature_dim),
            "mean": (config.feature_dim,),
            "std": (config.feature_dim,),
        }
        for name, tensor in (("centroids", centroids), ("mean", mean), ("std", std)):
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(
                    f"SpeechUnitTokenizer: {name} has shape {tuple(tensor.shape)}, expected {expected[name]} for {config}"
                )
        if not mean_run_length >= 1.0:
            raise ValueError(f"mean_run_length must be >= 1, got {mean_run_length}")
        self.config = config
        self.centroids = centroids.float().contiguous()  # (k, D), in normalised feature space
        self.mean = mean.float().contiguous()  # (D,)
        self.std = std.float().contiguous()  # (D,)
        self.mean_run_length = float(mean_run_length)
        self.logmel = LogMel(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    # -- features ----------------------------------------------------------------
    def _raw_vectors(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` waveform -> ``(n_units, feature_dim)`` stacked log-mel, not normalised."""
        cfg = self.config
        if audio.dim() != 1 or audio.numel() == 0:
            raise ValueError(f"expected a non-empty 1-D waveform, got shape {tuple(audio.shape)}")
        frames = self.logmel(audio)  # (n_frames, M)
        n_units = cfg.num_units(audio.shape[0])
        want = n_units * cfg.frames_per_unit
        if frames.shape[0] >= want:
            frames = frames[:want]  # drop the trailing centred frame
        else:
            frames = torch.cat(
                [frames, frames[-1:].expand(want - frames.shape[0], -1)]
            )  # (want, M)
        c = cfg.context
        padded = torch.cat(
            [frames[:1].expand(c, -1), frames, frames[-1:].expand(c, -1)]
        )  # (want + 2c, M)
        windows = padded.unfold(0, cfg.frames_per_vector, cfg.frames_per_unit)  # (n_units, M, fpv)
        return windows.transpose(1, 2).reshape(n_units, cfg.feature_dim)  # (n_units, fpv * M)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` waveform at ``config.sample_rate`` -> ``(n_units, feature_dim)`` normalised vectors."""
        return (self._raw_vectors(audio) - self.mean) / self.std

    # -- encoding ------------------------------------------------------------------
    def encode(self, audio: torch.Tensor, *, dedup: bool | None = None) -> torch.Tensor:
        """Units of one waveform.

        Args:
            audio: ``(T,)`` float waveform at ``config.sample_rate``.
            dedup: merge consecutive repeats (default ``config.dedup``).

        Returns:
            ``(n,)`` long tensor of unit ids in ``[0, codebook_size)``;
            ``n == config.num_units(T)`` without dedup.
        """
        with torch.no_grad():
            labels, _ = assign(self.features(audio), self.centroids)  # (n_units,)
        if self.config.dedup if dedup is None else dedup:
            labels, _ = dedup_units(labels)
        return labels

    def centroid_logmel(self) -> torch.Tensor:
        """Mean log-mel frames of each unit: ``(codebook_size, frames_per_unit, n_mels)``.

        The centroid is the mean of its members' normalised vectors, so undoing
        the (affine) normalisation gives their mean log-mel; the context frames
        are dropped.
        """
        cfg = self.config
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
        quiet: bool = True,
    ) -> SpeechUnitTokenizer:
        """Fit the normalisation and k-means codebook.

        Fit on the *unaligned* speech split only, so the units never see the
        aligned or test data.

        Args:
            audios: waveforms ``(T,)`` at ``config.sample_rate``, or audio file
                paths (read one at a time with :func:`~.audio.read_audio`).
            config: unit settings (default ``UnitConfig()``).
            quiet: when False, print progress to stderr.

        Raises:
            ValueError: if there are fewer unit vectors than ``codebook_size``.
        """
        config = config or UnitConfig()
        if len(audios) == 0:
            raise ValueError("SpeechUnitTokenizer.fit: no audio given")
        generator = torch.Generator().manual_seed(config.seed)
        shell = cls(
            config,
            torch.zeros(config.codebook_size, config.feature_dim),
            torch.zeros(config.feature_dim),
            torch.ones(config.feature_dim),
        )
        quota = math.ceil(config.max_fit_vectors / len(audios))
        chunks: list[torch.Tensor] = []
        # A few whole utterances, to measure how long units repeat.
        run_length_utts: list[torch.Tensor] = []
        start = time.monotonic()
        for i, item in enumerate(audios):
            audio = read_audio(item, config.sample_rate) if isinstance(item, (str, Path)) else item
            with torch.no_grad():
                vectors = shell._raw_vectors(audio)  # (n_units, D)
            if len(run_length_utts) < 64:
                run_length_utts.append(vectors)
            if vectors.shape[0] > quota:
                vectors = vectors[torch.randperm(vectors.shape[0], generator=generator)[:quota]]
            chunks.append(vectors)
            if not quiet and (i + 1 == len(audios) or (i + 1) % 100 == 0):
                print(
                    f"\rspeech units: features {i + 1}/{len(audios)} ({time.monotonic() - start:.0f} s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        x = torch.cat(chunks)  # (N, D)
        if x.shape[0] > config.max_fit_vectors:
            x = x[torch.randperm(x.shape[0], generator=generator)[: config.max_fit_vectors]]
        if x.shape[0] < config.codebook_size:
            raise ValueError(
                f"SpeechUnitTokenizer.fit: {x.shape[0]} unit vectors < codebook_size={config.codebook_size}; give more audio"
            )
        if config.normalize:
            mean = x.mean(dim=0)  # (D,)
            std = x.std(dim=0).clamp(min=1e-5)  # (D,)
        else:
            mean, std = torch.zeros(config.feature_dim), torch.ones(config.feature_dim)
        if not quiet:
            print(
                f"\nspeech units: k-means k={config.codebook_size} on {x.shape[0]} vectors of dim {config.feature_dim}",
                file=sys.stderr,
                flush=True,
            )
        result = kmeans(
            (x - mean) / std, config.codebook_size, n_iter=config.kmeans_iters, seed=config.seed
        )
        tok = cls(config, result.centroids, mean, std)
        runs = [
            dedup_units(assign((v - mean) / std, result.centroids)[0])[1] for v in run_length_utts
        ]
        tok.mean_run_length = float(torch.cat(runs).float().mean())
        if not quiet:
            print(
                f"speech units: done in {time.monotonic() - start:.0f} s, inertia/vector {result.inertia / x.shape[0]:.2f}, mean run length {tok.mean_run_length:.2f}",
                file=sys.stderr,
                flush=True,
            )
        return tok

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``unit_tokenizer.json`` (config) and ``unit_tokenizer.safetensors``
        (``centroids``, ``mean``, ``std``) into ``directory``, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": asdict(self.config),
            "mean_run_length": self.mean_run_length,
        }
        tensors = {"centroids": self.centroids, "mean": self.mean, "std": self.std}
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + TENSORS_FILE + ".", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, directory / TENSORS_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + CONFIG_FILE + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=2)
            os.replace(tmp, directory / CONFIG_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, directory: str | Path) -> SpeechUnitTokenizer:
        """Read a tokenizer written by :meth:`save`.

        Raises:
            FileNotFoundError: if either file is missing.
            ValueError: for a wrong format, unknown config fields, or tensors
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
            or meta.get("version") != _FORMAT_VERSION
        ):
            raise ValueError(f"{config_path}: not a {_FORMAT} v{_FORMAT_VERSION} file")
        config = UnitConfig.from_dict(meta["config"])
        try:
            tensors = load_file(str(tensors_path))
        except Exception as err:
            raise ValueError(f"{tensors_path}: not a readable safetensors file ({err})") from err
        missing = sorted({"centroids", "mean", "std"} - set(tensors))
        if missing:
            raise ValueError(f"{tensors_path}: missing tensors {missing}")
        try:
            return cls(
                config,
                tensors["centroids"],
                tensors["mean"],
                tensors["std"],
                mean_run_length=float(meta.get("mean_run_length", 1.0)),
            )
        except ValueError as err:
            raise ValueError(f"{tensors_path}: {err}") from err
