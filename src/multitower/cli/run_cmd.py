"""Run a whole experiment from a YAML config.

    multitower run configs/zipper_speech_text.yaml [key=value ...] [--run-dir DIR] [--quiet]
        [--jobs N] [--threads N]

The config's ``experiment:`` key picks the experiment (``zipper_speech_text``).
Every stage is resumable: run the same command again after an interruption and
finished stages are skipped, an interrupted training continues from its last
checkpoint. The resolved config is written to ``RUN_DIR/config.yaml``; a run
directory holding another config is refused. The fine-tunes (one per system and
aligned fraction) are independent: ``--jobs`` of them run at once, each in its own
process (default: one per free core), which on a small machine uses the cores far
better than more threads in one process.

Progress: a bar per loop on a terminal; in a log file (stderr not a terminal) a
plain line every 30 s with the count, loss, throughput, ETA and "stage k of n".
The same lines (and every stage message) are appended to ``RUN_DIR/run.log``,
also with --quiet, which only silences stderr.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from multitower.cli.common import add_jobs_argument, add_threads_argument, resolve_jobs, set_threads
from multitower.config import ConfigError, build_dataclass, dump_yaml, load_config, to_plain
from multitower.errors import UserError
from multitower.io import write_text_atomic
from multitower.progress import run_log

EXPERIMENTS = ("zipper_speech_text",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML experiment config")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. finetune.max_steps=100",
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_jobs_argument(parser, "fine-tunes")
    add_threads_argument(parser)


def _saved_config(path: Path) -> object:
    """The config a run directory was started with (new fields take their defaults)."""
    from multitower.experiments.zipper_speech_text.config import SpeechTextConfig

    raw = load_config(path)
    raw.pop("experiment", None)
    try:
        return build_dataclass(SpeechTextConfig, raw, "")
    except ConfigError:
        return None


def run(args: argparse.Namespace) -> int:
    from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
    from multitower.experiments.zipper_speech_text.hf_text_tower import check_text_tower_source

    raw = load_config(args.config, args.overrides)
    experiment = raw.pop("experiment", None)
    if experiment not in EXPERIMENTS:
        raise ConfigError([f"experiment: got {experiment!r}; allowed: {list(EXPERIMENTS)}"])
    # The whole config, model configs included, is checked before anything else is loaded.
    config = build_dataclass(SpeechTextConfig, raw, "")
    check_text_tower_source(config)  # an HF text tower's folder, files, tokenizer and ids
    jobs = resolve_jobs(args.jobs)
    set_threads(args.threads)  # imports torch: after the check, so a refused config is quick
    from multitower.experiments.zipper_speech_text.experiment import SpeechTextExperiment

    run_dir = args.run_dir or Path("runs") / args.config.stem
    resolved = dump_yaml({"experiment": experiment, **to_plain(config)})
    saved = run_dir / "config.yaml"
    if saved.is_file() and _saved_config(saved) != config:
        raise UserError(
            f"{run_dir} holds a run with another config ({saved}); use a new --run-dir "
            "or delete the old one"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, resolved)
    if args.quiet:  # how progress is shown is not part of the experiment: not saved
        off = {
            name: replace(getattr(config, name), progress="off")
            for name in ("pretrain_text", "pretrain_speech", "finetune")
        }
        recognizer = replace(
            config.recognizer, train=replace(config.recognizer.train, progress="off")
        )
        config = replace(config, recognizer=recognizer, **off)
    with run_log(run_dir / "run.log"):
        summary = SpeechTextExperiment(config, run_dir, quiet=args.quiet).run(jobs=jobs)
    print((run_dir / "results" / "results.md").read_text(), end="")
    print(f"run directory: {run_dir} ({summary['seconds'] / 60:.1f} min)")
    return 0
