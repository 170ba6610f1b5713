"""Names and checks shared by the blocks and the model configs, without torch.

The model configs validate their fields against these in ``__post_init__``; this
module imports nothing, so a config can be checked (``multitower run`` refusing a
bad value) without loading torch.
"""

from __future__ import annotations

NORM_KINDS = ("rms", "layer")


def check_heads(d_model: int, num_heads: int) -> int:
    """Return ``head_dim`` or raise when ``d_model`` is not divisible by ``num_heads``."""
    if num_heads <= 0:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    if d_model % num_heads != 0:
        raise ValueError(
            f"d_model ({d_model}) must be divisible by num_heads ({num_heads}); "
            f"allowed num_heads are divisors of {d_model}"
        )
    return d_model // num_heads


def check_numbers(
    config: object, *, ints: tuple[str, ...] = (), floats: tuple[str, ...] = ()
) -> None:
    """Raise when a field of the config dataclass ``config`` named in ``ints`` is not an
    int or one named in ``floats`` is not a number (an int is one); a bool is neither.

    A config built in Python gets the same type check as one read from a file (where
    :func:`multitower.config.build_dataclass` does it), before any comparison could
    fail with a bare ``'<=' not supported`` or a bool pass as ``1``.

    Raises:
        ValueError: naming the class, the field and the value, e.g.
            ``DecoderConfig.d_model must be an int, got '128' (str)``.
    """
    kinds = [(name, int, "an int") for name in ints] + [
        (name, (int, float), "a number") for name in floats
    ]
    for name, allowed, what in kinds:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise ValueError(
                f"{type(config).__name__}.{name} must be {what}, got {value!r} "
                f"({type(value).__name__})"
            )
