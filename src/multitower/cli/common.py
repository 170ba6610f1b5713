"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

from multitower.errors import UserError


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given (on a shared machine one thread can be faster).

    Raises:
        UserError: a count below 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch  # here, not at the top: a command refusing its config should not load torch

    torch.set_num_threads(threads)
