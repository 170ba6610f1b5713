"""``multitower units-report RUN_DIR``: how good are a speech-text run's speech units?

Loads the run's unit tokenizer (``RUN_DIR/units/tokenizer``) and corpus
(``corpus.dir`` of ``RUN_DIR/config.yaml``, else ``RUN_DIR/corpus``), measures
on held-out speech the tokenizer never saw (the ``aligned`` split by default):

* pnmi: held-out phone-normalised mutual information (lower bound);
* speaker_info: how much a unit tells about the speaker beyond the phone;
* cross_voice_distance: normalised edit distance between the units of the
  same sentence spoken by two voices (test sentences, synthesised here);
* phone_purity and units per second, for reference.

Definitions: :mod:`multitower.eval.units`. Prints the numbers and writes them
to ``RUN_DIR/results/units_report.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from multitower.cli.common import add_threads_argument, set_threads
from multitower.errors import UserError

REPORT_FILE = Path("results") / "units_report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a speech-text run directory")
    parser.add_argument(
        "--split", default="aligned", help="held-out split for the frame-level measures"
    )
    parser.add_argument(
        "--max-utterances", type=int, default=1000, help="utterances of the split to use"
    )
    parser.add_argument(
        "--sentences",
        type=int,
        default=24,
        help="test sentences spoken by every speaker for the distances",
    )
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (override)")
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="unit tokenizer folder (override)"
    )
    add_threads_argument(parser)


def _corpus_dir(run_dir: Path) -> Path:
    """``corpus.dir`` of the run's saved config if set, else ``RUN_DIR/corpus``."""
    saved = run_dir / "config.yaml"
    if saved.is_file():
        import yaml

        try:
            raw = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{saved}: not valid YAML ({err})") from err
        corpus = raw.get("corpus") if isinstance(raw, dict) else None
        if isinstance(corpus, dict) and corpus.get("dir"):
            return Path(corpus["dir"])
    return run_dir / "corpus"


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from multitower.data.speech.corpus import SPLITS, load_speech_corpus
    from multitower.data.speech.units import SpeechUnitTokenizer
    from multitower.eval.units import evaluate_unit_tokenizer
    from multitower.io import write_text_atomic

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if args.split not in SPLITS:
        raise UserError(f"--split must be one of {SPLITS}, got {args.split!r}")
    if args.max_utterances < 2 or args.sentences < 1:
        raise UserError("--max-utterances must be >= 2 and --sentences >= 1")
    tok_dir = args.tokenizer or run_dir / "units" / "tokenizer"
    corpus_dir = args.corpus or _corpus_dir(run_dir)
    if not tok_dir.is_dir():
        raise UserError(
            f"{run_dir}: no unit tokenizer at {tok_dir} (run `multitower run` up to the tokenizers stage)"
        )
    try:
        tokenizer = SpeechUnitTokenizer.load(tok_dir)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(f"cannot load the unit tokenizer: {err}") from err
    try:
        corpus = load_speech_corpus(corpus_dir)
    except FileNotFoundError as err:
        raise UserError(f"{run_dir}: no speech corpus: {err}") from err
    try:
        report = evaluate_unit_tokenizer(
            tokenizer,
            corpus,
            split=args.split,
            max_utterances=args.max_utterances,
            n_sentences=args.sentences,
        )
    except ValueError as err:  # BadRecordError included: names the file
        raise UserError(str(err)) from err
    result = {
        **report.to_dict(),
        "split": args.split,
        "corpus": str(corpus_dir),
        "tokenizer": str(tok_dir),
        "unit_config": asdict(tokenizer.config),
    }
    out = run_dir / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2, allow_nan=False))
    f, dist = report.frames, report.distances
    print(
        f"units: {tokenizer.config.codebook_size} codes, {report.units_per_second:.1f} units/s; "
        f"{f.n_utterances} {args.split} utterances ({f.n_frames} frames, {f.n_phones} phones), "
        f"{dist.n_sentences} sentences x {len(corpus.manifest['speakers'])} speakers"
    )
    print(f"pnmi                  {f.pnmi:.3f}")
    print(f"phone_purity          {f.phone_purity:.3f}")
    print(f"speaker_info          {f.speaker_info:.3f}")
    print(
        f"cross_voice_distance  {dist.cross_voice:.3f}  "
        f"(different sentence, same speaker: {dist.different_sentence_same_speaker:.3f})"
    )
    print(f"written to {out}")
    return 0
