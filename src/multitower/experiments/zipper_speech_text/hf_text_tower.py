"""A Hugging Face causal LM as the speech-text experiment's text tower (``text_tower_source``).

With ``text_tower_source: /path/to/folder`` (a local folder written by
``transformers``' ``save_pretrained``: ``config.json``, ``*.safetensors`` and the
``tokenizer.json`` of its tokenizer) the experiment zips that model instead of
pre-training its own text tower::

    text_tokenizer   the folder's tokenizer.json, wrapped as a TextTokenizer of kind
                     "hf" with the model's pad/bos/eos ids and the experiment's
                     alphabet (normalised text: a-z, space, apostrophe), saved to
                     RUN_DIR/text/tokenizer.json like the experiment's own, so
                     `multitower asr`/`tts` read it unchanged
    pretrain_text    not trained: recorded as {"source": folder, "sha256": ...}; every
                     later load (a resumed run, a worker process) refuses a folder
                     whose config.json or weights changed since
    finetune         Zipper and the vocabulary-expansion baseline built from that
                     tower; each fine-tuned model is saved whole, so it reloads
                     without the folder (``transformers`` is still needed)

The sections ``text_tower``, ``text_tokenizer`` and ``pretrain_text`` are then not
used. :func:`check_text_tower_source` checks the folder, its files, its config,
the tokenizer, the special ids and the fusion settings before any stage runs,
each problem named by its key and its file.
"""

from __future__ import annotations

import importlib.util
import json
import string
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multitower.data.tokenizer import TextTokenizer
from multitower.errors import UserError
from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
from multitower.io import file_sha256
from multitower.models.hf_tower_config import HF_EXTRA, HF_LAYOUTS, HFTowerConfig

if TYPE_CHECKING:  # the stages (torch) are imported where a run uses them: the check is torch-free
    from multitower.models.hf_tower import HFTower
    from multitower.train.stages import Stages

KEY = "text_tower_source"
IDS_KEY = "text_tower_special_ids"
# The characters of normalised, speakable text (multitower.data.text.is_speakable).
ALPHABET = string.ascii_lowercase + "'"
# Class names of the causal LMs (GPT-2's is GPT2LMHeadModel).
_CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class HFTextSource:
    """A checked ``text_tower_source`` folder.

    Args:
        folder: the folder, absolute.
        special_ids: ``pad_id``/``bos_id``/``eos_id`` of both the tower and the tokenizer.
        tower: the tower config read from ``config.json`` (for the checks; the tower
            itself is loaded by :func:`load_text_tower`).
        tokenizer: the folder's tokenizer, of kind ``"hf"``.
    """

    folder: Path
    special_ids: dict[str, int]
    tower: HFTowerConfig
    tokenizer: TextTokenizer


def _fail(message: str) -> UserError:
    return UserError(f"{KEY}: {message}")


def _special_ids(cfg: SpeechTextConfig, data: dict[str, Any], path: Path) -> dict[str, int]:
    """The tower's special ids: ``text_tower_special_ids``, else config.json's ``*_token_id``."""
    ids: dict[str, int] = {}
    for name in ("pad_id", "bos_id", "eos_id"):
        hf_key = name.replace("_id", "_token_id")
        value = cfg.text_tower_special_ids.get(name, data.get(hf_key))
        if isinstance(value, list):  # some configs list several eos ids
            value = value[0] if value else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(
                f"{path} has no usable {hf_key} ({value!r}); set {IDS_KEY}.{name} to an id of "
                "the model's vocabulary"
            )
        ids[name] = value
    return ids


def check_text_tower_source(cfg: SpeechTextConfig) -> HFTextSource | None:
    """Check ``text_tower_source`` before any work (None when it is not set).

    Reads only small files (``config.json``, ``tokenizer.json``): no weights, no torch.

    Raises:
        UserError: no such folder; a missing ``config.json``, ``tokenizer.json`` or
            ``*.safetensors``; a config that is not a supported causal LM; ``transformers``
            not installed (the message names the extra ``multitower[hf]``); special ids
            that are missing or not three different ids; a tokenizer that cannot give the
            experiment's normalised text back, or has more ids than the model; fusion
            settings that do not fit the model's depth. Each names its key and file.
    """
    if cfg.text_tower_source is None:
        return None
    folder = Path(cfg.text_tower_source).expanduser().resolve()
    if not folder.is_dir():
        raise _fail(
            f"{folder} is not a folder (a local Hugging Face model folder is read; "
            "nothing is downloaded)"
        )
    missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).is_file()]
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors weights (.bin checkpoints are pickles and are not read)")
    if missing:
        raise _fail(
            f"{folder} lacks {', '.join(missing)}; it needs config.json, *.safetensors "
            "and tokenizer.json, as transformers' save_pretrained writes them"
        )
    config_path = folder / "config.json"
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(f"{config_path} is not a JSON file ({err})") from err
    if not isinstance(data, dict):
        raise _fail(f"{config_path} is not a JSON object")
    model_type = data.get("model_type")
    architectures = data.get("architectures") or []
    if model_type not in HF_LAYOUTS or not all(
        str(a).endswith(_CAUSAL_LM_SUFFIXES) for a in architectures
    ):
        raise _fail(
            f"{config_path} describes {architectures or model_type!r}, not a causal LM of a "
            f"supported family ({', '.join(sorted(HF_LAYOUTS))})"
        )
    if importlib.util.find_spec("transformers") is None:
        raise _fail(
            f"loading {folder} needs the 'transformers' package, which is not installed; "
            f"install the optional extra: pip install '{HF_EXTRA}'"
        )
    ids = _special_ids(cfg, data, config_path)
    try:
        tower = HFTowerConfig(data, **ids)
    except ValueError as err:
        raise _fail(f"{config_path}: {err} (the ids can be set with {IDS_KEY})") from err
    tokenizer_path = folder / "tokenizer.json"
    try:
        tokenizer = TextTokenizer.from_hf(
            tokenizer_path, **ids, alphabet=ALPHABET, vocab_size=tower.vocab_size
        )
    except ValueError as err:
        raise _fail(
            f"{tokenizer_path}: {err} (the experiment's text is lower case a-z, space and "
            f"apostrophe; the model has vocab_size {tower.vocab_size})"
        ) from err
    try:
        replace(cfg.fusion, towers={"speech": cfg.speech_tower, "text": tower})
    except ValueError as err:
        raise UserError(f"fusion: {err} (the text tower is {folder})") from err
    return HFTextSource(folder, ids, tower, tokenizer)


def text_tokenizer(cfg: SpeechTextConfig, run_dir: Path, stages: Stages) -> TextTokenizer:
    """The text tokenizer of a run with ``text_tower_source``: the folder's, saved in
    ``run_dir/text/tokenizer.json`` once (stage ``text_tokenizer``), read from there after."""
    path = run_dir / "text" / "tokenizer.json"
    if not stages.get("text_tokenizer"):
        source = check_text_tower_source(cfg)
        assert source is not None  # only called with text_tower_source set
        source.tokenizer.save(path)
        stages.mark(
            "text_tokenizer",
            {
                "vocab_size": source.tokenizer.vocab_size,
                "source": str(source.folder / "tokenizer.json"),
                "sha256": file_sha256(source.folder / "tokenizer.json"),
            },
        )
    return TextTokenizer.load(path)


def load_text_tower(cfg: SpeechTextConfig, text_tok: TextTokenizer, stages: Stages) -> HFTower:
    """The :class:`~multitower.models.hf_tower.HFTower` of ``text_tower_source``, in place
    of the ``pretrain_text`` stage, which records the folder and its SHA-256.

    The tower's special ids are the run's text tokenizer's, so the two always agree.

    Raises:
        UserError: the folder changed since the run recorded it, or cannot be loaded
            strictly (every mismatched key listed).
    """
    from multitower.models.hf_tower import folder_sha256, load_hf_tower
    from multitower.train.stages import log

    assert cfg.text_tower_source is not None  # only called with it set
    folder = Path(cfg.text_tower_source).expanduser().resolve()
    recorded = stages.get("pretrain_text")
    digest = recorded["sha256"] if isinstance(recorded, dict) else folder_sha256(folder)
    ids = {"pad_id": text_tok.pad_id, "bos_id": text_tok.bos_id, "eos_id": text_tok.eos_id}
    try:
        tower = load_hf_tower(folder, sha256=digest, **ids)
    except (OSError, ValueError) as err:
        raise _fail(f"{err}") from err
    if tower.config.vocab_size != text_tok.vocab_size:
        raise _fail(
            f"{folder}: the model's vocab_size {tower.config.vocab_size} differs from the "
            f"run's text tokenizer's {text_tok.vocab_size} (the run was started with "
            "another model)"
        )
    c = tower.config
    log(
        f"text tower: {folder} ({c.model_type}, {c.num_layers} layers, d_model {c.d_model}, "
        f"vocab {c.vocab_size}), not pre-trained; text_tower, text_tokenizer and "
        "pretrain_text are not used"
    )
    stages.mark("pretrain_text", {"source": str(folder), "sha256": digest})
    return tower
