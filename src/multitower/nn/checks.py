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
