"""Shared loading for the ``asr`` and ``tts`` commands: the components of a speech-text run.

A run directory written by ``multitower run`` holds ``inference.json`` naming the
text tokenizer, the speech-unit tokenizer and the fine-tuned models.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from multitower.errors import UserError


@dataclass
class SpeechComponents:
    text_tokenizer: Any
    unit_tokenizer: Any
    model: nn.Module
    model_name: str


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/zipper_speech_text"),
        help="a finished speech-text run",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="which fine-tuned model (default: the run's default), e.g. zipper_1",
    )


def load_components(run_dir: Path, model_name: str | None) -> SpeechComponents:
    """Load tokenizers and one model; a missing or corrupted piece is a clear error naming it.

    Raises:
        UserError: a missing, unreadable or changed file (naming it), or an unknown model.
    """
    from multitower.data.speech.units import SpeechUnitTokenizer
    from multitower.data.tokenizer import TextTokenizer
    from multitower.models.pretrained import load_pretrained

    manifest_path = run_dir / "inference.json"
    if not manifest_path.is_file():
        raise UserError(
            f"{run_dir} is not a finished speech-text run: {manifest_path} is missing (run `multitower run` first)"
        )
    manifest = json.loads(manifest_path.read_text())
    name = model_name or manifest["default_model"]
    if name not in manifest["models"]:
        raise UserError(f"unknown model {name!r}; this run has: {sorted(manifest['models'])}")
    paths = {
        "text tokenizer": run_dir / manifest["text_tokenizer"],
        "unit tokenizer": run_dir / manifest["unit_tokenizer"],
        "model": run_dir / manifest["models"][name],
    }
    for what, path in paths.items():
        if not path.exists():
            raise UserError(f"{run_dir}: the {what} is missing ({path})")
    # the tokenizers first: cheap, and a changed or corrupted file (its SHA-256 differs
    # from the recorded one) is an error line naming it, like the model's, not a traceback
    try:
        text_tokenizer = TextTokenizer.load(paths["text tokenizer"])
    except (ValueError, OSError) as err:
        raise UserError(f"cannot load the text tokenizer: {err}") from err
    try:
        unit_tokenizer = SpeechUnitTokenizer.load(paths["unit tokenizer"])
    except (ValueError, OSError) as err:
        raise UserError(f"cannot load the unit tokenizer: {err}") from err
    try:
        model = load_pretrained(paths["model"])
    except (ValueError, OSError) as err:
        raise UserError(f"cannot load model {name!r}: {err}") from err
    model.eval()
    return SpeechComponents(text_tokenizer, unit_tokenizer, model, name)
