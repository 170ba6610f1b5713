"""``multitower`` command line: ``multitower COMMAND [args]``.

Each command lives in its own module, imported only when that command runs.
A command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; to
add one, write the module and add a line to :data:`COMMANDS`.

Exit codes: 0 success, 1 a user-facing error (:class:`~multitower.errors.UserError`, missing file),
2 a bad command line or config (:class:`~multitower.config.ConfigError`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from multitower.config import ConfigError
from multitower.errors import UserError

COMMANDS: dict[str, str] = {
    "train": "multitower.cli.train_cmd",
    "plot": "multitower.cli.plot_cmd",
    "mammut": "multitower.cli.mammut_cmd",
    "mammut-ablation": "multitower.cli.mammut_ablation_cmd",
    "caption": "multitower.cli.caption_cmd",
    "retrieve": "multitower.cli.retrieve_cmd",
    "vqa": "multitower.cli.vqa_cmd",
    "run": "multitower.cli.run_cmd",
    "asr": "multitower.cli.asr_cmd",
    "tts": "multitower.cli.tts_cmd",
    "units-report": "multitower.cli.units_cmd",
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multitower",
        usage=f"multitower {{{','.join(sorted(COMMANDS))}}} [ARGS ...]",
        description="Train and evaluate multitower models (Zipper, MaMMUT).",
        epilog="`multitower COMMAND --help` describes the arguments of one command.",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser().parse_args(argv[:1])  # exits 2 on an unknown command
    module = importlib.import_module(COMMANDS[top.command])
    parser = argparse.ArgumentParser(
        prog=f"multitower {top.command}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(argv[1:])
    try:
        return int(module.run(args))
    except ConfigError as err:
        print(f"multitower {top.command}: config error:", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (UserError, FileNotFoundError) as err:
        print(f"multitower {top.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"multitower {top.command}: interrupted", file=sys.stderr)
        return 130
