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
    "mammut-detect": "multitower.cli.mammut_detect_cmd",
    "detect": "multitower.cli.detect_cmd",
    "mammut-video": "multitower.cli.mammut_video_cmd",
    "caption": "multitower.cli.caption_cmd",
    "retrieve": "multitower.cli.retrieve_cmd",
    "vqa": "multitower.cli.vqa_cmd",
    "run": "multitower.cli.run_cmd",
    "asr": "multitower.cli.asr_cmd",
    "tts": "multitower.cli.tts_cmd",
    "units-report": "multitower.cli.units_cmd",
}

# One line per command for ``multitower --help`` (written here, not read from the
# modules' docstrings, so the top-level help imports no command and no torch).
SUMMARIES: dict[str, str] = {
    "run": "run a whole experiment (the speech-text recipe) from a YAML config, resumably",
    "asr": "transcribe WAV/FLAC files with a finished speech-text run",
    "tts": "synthesise a WAV from text with a finished speech-text run",
    "units-report": "measure a speech-text run's speech units on held-out speech",
    "train": "train a recipe (toy_lm, mammut) from a YAML config",
    "mammut": "train a MaMMUT model and evaluate retrieval, captioning and VQA",
    "mammut-ablation": "MaMMUT cross-attention interval ablation: retrieval against VQA",
    "mammut-detect": "MaMMUT open-vocabulary detection: train on base classes, AP on novel ones",
    "detect": "find named objects in an image with a mammut-detect detector, draw the boxes",
    "mammut-video": "MaMMUT on video: sparse tubes against per-frame encoding, 4-16 frames",
    "caption": "caption images (or clips, with a video run) with a trained MaMMUT run",
    "retrieve": "rank a folder's images (or clips) by similarity to a text with a MaMMUT run",
    "vqa": "answer a question about an image (or a clip) with a MaMMUT run",
    "plot": "plot a run's loss and metric curves (metrics.jsonl) to PNG files",
}


# What to do after Ctrl-C, for the commands that can continue where they stopped.
RESUME_HINTS: dict[str, str] = {
    "run": "run the same command again to resume: finished stages are skipped, a "
    "training stage continues from its last checkpoint and the corpus from its last "
    "finished shard",
    "train": "run the same command with --resume to continue from the last checkpoint",
    "mammut-video": "run the same command again to resume: evaluated systems are kept and "
    "an interrupted training continues from its last checkpoint",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstrings' layout and appends ``(default: X)`` to every
    option with a help text and a default other than None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" not in text
            and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
            and action.option_strings
            and text
        ):
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from multitower import __version__

    return f"multitower {__version__}"


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {SUMMARIES[name]}" for name in SUMMARIES)
    parser = argparse.ArgumentParser(
        prog="multitower",
        usage=f"multitower {{{','.join(sorted(COMMANDS))}}} [ARGS ...]",
        description="Train and evaluate multitower models (Zipper, MaMMUT).\n\ncommands:\n"
        + listing,
        epilog="`multitower COMMAND --help` describes the arguments of one command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do (see above)")
    parser.add_argument("--version", action="version", version=_version())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser().parse_args(argv[:1])  # exits 2 on an unknown command; --version, --help
    module = importlib.import_module(COMMANDS[top.command])
    parser = argparse.ArgumentParser(
        prog=f"multitower {top.command}",
        description=module.__doc__,
        formatter_class=HelpFormatter,
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
        hint = RESUME_HINTS.get(top.command)
        print(
            f"multitower {top.command}: interrupted" + (f"; {hint}" if hint else ""),
            file=sys.stderr,
        )
        return 130
