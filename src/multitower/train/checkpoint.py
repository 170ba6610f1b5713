"""Training checkpoints: atomic step directories, hash verification, RNG capture.

Layout: ``run_dir/checkpoints/step_000123/`` holds

* ``model.safetensors``: the full (unsharded) model weights;
* ``train_state.pt``: optimizer, schedule, RNG states and data position, only
  tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
  reads it;
* ``meta.json``: model config and type, step, data position, train config and the
  SHA-256 of the two files above.

A checkpoint is written into ``.tmp_step_000123.<pid>/``, every file fsynced, and
the directory renamed to its final name, so a crash never leaves a half-written
``step_*`` directory. Resuming takes the newest checkpoint whose hashes match
and warns about every newer one that does not (truncated or corrupted).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multitower.io import file_sha256, fsync_dir
from multitower.models.io import WEIGHTS_NAME, load_safetensors, save_safetensors_atomic

CHECKPOINTS_DIR = "checkpoints"
TRAIN_STATE_NAME = "train_state.pt"
META_NAME = "meta.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_*`` directory, oldest first (temporary dirs ignored)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


# -- RNG state as plain tensors ----------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Torch CPU/CUDA, Python ``random`` and NumPy RNG states as tensors, ints and floats."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": [] if gauss is None else [float(gauss)],
        },
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    gauss = py["gauss"][0] if py["gauss"] else None
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), gauss))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- writing -----------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep_last``.

    Args:
        run_dir: the run directory.
        step: optimizer steps done.
        model_state: full model state dict (CPU or device tensors).
        train_state: optimizer/schedule/RNG/data state (plain types only).
        meta: JSON-serialisable description; ``step`` and ``files`` (hashes) are added.
        keep_last: number of checkpoints to keep (0 keeps all).

    Returns:
        The final checkpoint directory.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{step_dir_name(step)}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_safetensors_atomic(tmp / WEIGHTS_NAME, model_state)
    torch.save(train_state, tmp / TRAIN_STATE_NAME)
    _fsync_file(tmp / TRAIN_STATE_NAME)
    files = {name: file_sha256(tmp / name) for name in (WEIGHTS_NAME, TRAIN_STATE_NAME)}
    meta_text = json.dumps(
        {**meta, "step": step, "files": files}, indent=2, sort_keys=True, default=str
    )
    (tmp / META_NAME).write_text(meta_text + "\n", encoding="utf-8")
    _fsync_file(tmp / META_NAME)
    fsync_dir(tmp)
    if final.exists():  # e.g. a corrupted checkpoint of this step from before a resume
        stale = root / f".stale_{step_dir_name(step)}.{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(root)
    if keep_last > 0:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_temporary(run_dir: str | os.PathLike[str]) -> None:
    """Delete leftovers of checkpoints interrupted before their rename."""
    root = checkpoint_root(run_dir)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".tmp_", ".stale_")):
                shutil.rmtree(path, ignore_errors=True)


# -- reading -----------------------------------------------------------------------------------
def verify_checkpoint(path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` is complete and every file matches its hash, else the reason."""
    path = Path(path)
    meta_path = path / META_NAME
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{meta_path} is missing or unreadable ({type(err).__name__}: {err})"
    for name in (WEIGHTS_NAME, TRAIN_STATE_NAME):
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if name not in files or file_sha256(file) != files[name]:
            return f"{file} does not match its SHA-256 in {META_NAME} (truncated or corrupted)"
    return None


def find_latest_valid(run_dir: str | os.PathLike[str]) -> Path | None:
    """Newest checkpoint of ``run_dir`` that verifies; warns about each newer broken one."""
    for step, path in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        warnings.warn(
            f"skipping checkpoint step {step}: {problem}; falling back to an earlier checkpoint",
            stacklevel=2,
        )
    return None


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read ``(model_state, train_state, meta)`` of a checkpoint directory (onto CPU)."""
    path = Path(path)
    model_state, _ = load_safetensors(path / WEIGHTS_NAME)
    train_state = torch.load(path / TRAIN_STATE_NAME, map_location="cpu", weights_only=True)
    meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    return model_state, train_state, meta
