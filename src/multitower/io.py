"""Atomic files: every layer (data, models, train, experiments) writes through these.

A file is written into a temporary file in the same directory, flushed and
fsynced, then moved over the target with ``os.replace`` and the directory
fsynced, so a crash leaves either the old file or the new one, never a
truncated mix.

A saved directory can carry a hash manifest (:func:`write_hashes`, ``hashes.json``:
the SHA-256 of named files) that :func:`verify_hashes` checks when the files are
read back, so flipped bytes are an error instead of a silently different model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

HASHES_NAME = "hashes.json"
_HASHES_FORMAT = "multitower.hashes"


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """An open temporary file beside ``path``, to be renamed over it: ``(fd, name)``.

    ``tempfile.mkstemp`` creates files readable by their owner only (0600); the
    file is given the mode ``open()`` would give a new file (0666 less the umask,
    0644 under the usual umask 022), so results, configs and audio can be shared.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(AttributeError, OSError):  # no fchmod (Windows): mkstemp's mode
        os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and ``os.replace``
    (mode as for a new file, see :func:`temporary_file`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(
    path: str | os.PathLike[str], payload: Any, *, indent: int | None = 1
) -> None:
    """Write ``payload`` as JSON (UTF-8, trailing newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=indent) + "\n")


def write_hashes(directory: str | os.PathLike[str], names: list[str]) -> None:
    """Write ``directory/hashes.json``: the SHA-256 of each named file in ``directory``.

    Call it after the files are written; it is written atomically, last.
    """
    directory = Path(directory)
    payload = {
        "format": _HASHES_FORMAT,
        "version": 1,
        "sha256": {name: file_sha256(directory / name) for name in names},
    }
    write_json_atomic(directory / HASHES_NAME, payload)


def verify_hashes(directory: str | os.PathLike[str], names: list[str]) -> bool:
    """Check the named files of ``directory`` against its ``hashes.json``.

    Returns:
        True when every named file matched; False when the directory has no
        manifest (saved before manifests existed) or the manifest does not list a name.

    Raises:
        ValueError: an unreadable manifest, or a file whose SHA-256 differs from the
            recorded one (the file was changed or corrupted after it was saved).
    """
    directory = Path(directory)
    path = directory / HASHES_NAME
    if not path.is_file():
        return False
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        recorded = payload["sha256"]
        if payload.get("format") != _HASHES_FORMAT or not isinstance(recorded, dict):
            raise ValueError("not a hash manifest")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable hash manifest ({err})") from err
    complete = True
    for name in names:
        if name not in recorded:
            complete = False
            continue
        actual = file_sha256(directory / name)
        if actual != recorded[name]:
            raise ValueError(
                f"{directory / name}: SHA-256 {actual[:12]}... differs from the "
                f"{recorded[name][:12]}... recorded in {HASHES_NAME} when it was saved "
                "(the file was changed or corrupted); save the model again"
            )
    return complete
