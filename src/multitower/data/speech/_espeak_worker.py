"""Speech synthesis worker: espeak-ng through ctypes, one forked child per request.

Run as a script (``python _espeak_worker.py LIBRARY DATA_DIR``) by
:class:`multitower.data.speech.synth.Synthesizer`; it imports nothing from
``multitower`` so that it starts fast and carries no torch state.

Why a separate process that forks: espeak-ng keeps synthesis state in static
variables that no API call resets (the pitch "flutter" table index, echo and
resonator buffers of the wave generator), so the same request gives slightly
different samples depending on what was synthesised before it in the same
process. This worker initialises the library once and then forks a child for
every request: each child starts from the identical just-initialised state,
seeds the library's random generator (used for breath noise), synthesises, and
exits. The samples therefore depend only on the request.

Protocol, over stdin/stdout:

* on start the worker writes one JSON line ``{"ok": true, "sample_rate": int,
  "version": str}`` (or ``{"ok": false, "error": str}`` and exits);
* each request is one JSON line ``{"text", "voice", "rate", "pitch", "seed"}``;
* each reply is one JSON line ``{"ok": true, "n_samples": n, "phones": [[start, name], ...]}``
  followed by ``2 * n`` bytes of little-endian int16 samples, or
  ``{"ok": false, "error": str}``. ``phones`` are espeak-ng's phoneme events
  (``espeakEVENT_PHONEME``) in order: ``start`` is the event's ``sample`` field,
  the phoneme's first sample at the native rate, and ``name`` its mnemonic as
  espeak-ng writes it (stress marks included; the caller cleans them).

The worker exits when stdin closes.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_PHONEME_EVENTS = 0x0001
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
ESPEAK_RATE, ESPEAK_PITCH = 1, 3
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1


class _EventId(ctypes.Union):
    # The mnemonic is read from the raw bytes: a c_char array field would stop at the first NUL.
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_void_p), ("raw", ctypes.c_ubyte * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of ``speak_lib.h``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


def _load(library: str, data_dir: str) -> tuple[ctypes.CDLL, int]:
    lib = ctypes.CDLL(library)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    sample_rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS,
        0,
        data_dir.encode(),
        ESPEAK_INITIALIZE_PHONEME_EVENTS | ESPEAK_INITIALIZE_DONT_EXIT,
    )
    return lib, sample_rate


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _synthesize(lib: ctypes.CDLL, request: dict) -> bytes:
    """Synthesise one request in this (child) process; returns a full reply."""
    chunks: list[bytes] = []
    phones: list[list] = []

    def on_samples(wav, n_samples, events):
        if n_samples > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while events and events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == EVENT_PHONEME:
                name = bytes(event.id.raw).split(b"\0", 1)[0].decode("utf-8", errors="replace")
                phones.append([int(event.sample), name])
            i += 1
        return 0

    callback = _SYNTH_CALLBACK(on_samples)
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_ng_SetRandSeed(int(request["seed"]))
    status = lib.espeak_SetVoiceByName(request["voice"].encode())
    if status != 0:
        return _error(f"espeak-ng has no voice {request['voice']!r} (status {status})")
    for param, value in ((ESPEAK_RATE, request["rate"]), (ESPEAK_PITCH, request["pitch"])):
        status = lib.espeak_SetParameter(param, int(value), 0)
        if status != 0:
            return _error(f"espeak_SetParameter({param}, {value}) failed (status {status})")
    text = request["text"].encode("utf-8") + b"\0"
    status = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
    if status != 0:
        return _error(f"espeak_Synth failed (status {status})")
    lib.espeak_Synchronize()
    samples = b"".join(chunks)
    return (
        json.dumps({"ok": True, "n_samples": len(samples) // 2, "phones": phones}).encode()
        + b"\n"
        + samples
    )


def _error(message: str) -> bytes:
    return json.dumps({"ok": False, "error": message}).encode() + b"\n"


def _serve_one(lib: ctypes.CDLL, request: dict) -> bytes:
    if not hasattr(os, "fork"):
        # No fork on this platform: samples then depend on the request order.
        return _synthesize(lib, request)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            _write_all(write_fd, _synthesize(lib, request))
        finally:
            os._exit(0)
    os.close(write_fd)
    parts = []
    while True:
        part = os.read(read_fd, 1 << 16)
        if not part:
            break
        parts.append(part)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    reply = b"".join(parts)
    header, _, samples = reply.partition(b"\n")
    try:
        meta = json.loads(header)
        complete = not meta["ok"] or len(samples) == 2 * meta["n_samples"]
    except (json.JSONDecodeError, KeyError):
        complete = False
    if not complete or status != 0:
        return _error(f"espeak-ng synthesis process failed (wait status {status})")
    return reply


def main() -> None:
    library, data_dir = sys.argv[1], sys.argv[2]
    out = sys.stdout.buffer
    try:
        lib, sample_rate = _load(library, data_dir)
    except (OSError, AttributeError) as err:
        out.write(_error(f"cannot load espeak-ng from {library}: {err}"))
        out.flush()
        return
    if sample_rate <= 0:
        out.write(
            _error(f"espeak_Initialize failed for data path {data_dir} (returned {sample_rate})")
        )
        out.flush()
        return
    version = lib.espeak_Info(None).decode()
    out.write(
        json.dumps({"ok": True, "sample_rate": sample_rate, "version": version}).encode() + b"\n"
    )
    out.flush()
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as err:
            out.write(_error(f"bad request line: {err}"))
        else:
            out.write(_serve_one(lib, request))
        out.flush()


if __name__ == "__main__":
    main()
