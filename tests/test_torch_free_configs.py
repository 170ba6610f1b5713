"""The config dataclasses live in torch-free modules and their model modules re-export them.

A whole experiment config is built and checked before any work starts; importing
torch alone takes seconds, so the config modules must not import it (not even
through a package ``__init__``).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import multitower

SRC = Path(multitower.__file__).resolve().parents[1]
TINY = Path(__file__).resolve().parents[1] / "configs" / "zipper_speech_text_tiny.yaml"

# (torch-free module, the module that re-exports from it, names)
MOVED = [
    ("multitower.nn.checks", "multitower.nn", ("check_heads",)),
    ("multitower.nn.checks", "multitower.nn.attention", ("check_heads",)),
    ("multitower.nn.checks", "multitower.nn.norms", ("NORM_KINDS",)),
    ("multitower.models.decoder_config", "multitower.models.decoder", ("DecoderConfig",)),
    ("multitower.models.zipper_config", "multitower.models.zipper", ("ZipperConfig",)),
    ("multitower.models.hf_tower_config", "multitower.models.hf_tower", ("HFTowerConfig",)),
    (
        "multitower.models.unit_recognizer_config",
        "multitower.models.unit_recognizer",
        ("UnitRecognizerConfig",),
    ),
    (
        "multitower.models.video_config",
        "multitower.models.video",
        ("TubeSpec", "VideoConfig", "default_tubes", "tube_token_count"),
    ),
    ("multitower.models.detection_config", "multitower.models.detection", ("DetectionHeadConfig",)),
    ("multitower.train.train_config", "multitower.train.trainer", ("TrainConfig",)),
    ("multitower.train.train_config", "multitower.train.distributed", ("DISTRIBUTED_MODES",)),
    ("multitower.data.speech_config", "multitower.data.speech.units", ("UnitConfig",)),
    ("multitower.data.speech_config", "multitower.data.speech.corpus", ("SpeechCorpusConfig",)),
    ("multitower.data.speech_config", "multitower.data.speech.synth", ("Voice",)),
    (
        "multitower.data.speech_config",
        "multitower.data.speech",
        ("UnitConfig", "SpeechCorpusConfig", "Voice"),
    ),
]
TORCH_FREE = sorted(
    {m for m, _, _ in MOVED}
    | {
        "multitower.experiments.zipper_speech_text.config",
        "multitower.experiments.mammut.detect_config",
    }
)


@pytest.mark.parametrize(("home", "reexporter", "names"), MOVED)
def test_old_import_paths_give_the_same_objects(home: str, reexporter: str, names) -> None:
    for name in names:
        assert getattr(importlib.import_module(reexporter), name) is getattr(
            importlib.import_module(home), name
        )


def test_the_lazy_nn_package_exports_what_its_modules_define() -> None:
    import multitower.nn as nn_pkg

    for name in nn_pkg.__all__:
        obj = getattr(nn_pkg, name)
        assert obj.__module__.startswith("multitower.nn."), name
        assert getattr(importlib.import_module(obj.__module__), name) is obj
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        nn_pkg.nothing  # noqa: B018


def probe(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the modules of torch it left loaded."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    loaded = "sorted(m for m in sys.modules if m.split('.')[0] == 'torch')"
    script = f"{code}\nimport json, sys\nprint(json.dumps({loaded}))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_config_modules_import_without_torch() -> None:
    assert probe("\n".join(f"import {m}" for m in TORCH_FREE)) == []


def test_the_tiny_recipe_config_is_built_and_checked_without_torch() -> None:
    code = f"""
from multitower.config import build_dataclass, load_config
from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
raw = load_config({str(TINY)!r})
raw.pop("experiment")
config = build_dataclass(SpeechTextConfig, raw, "")
assert config.fusion.cross_attention_every == 1 and config.units.codebook_size == 32
"""
    assert probe(code) == []


def test_the_probe_sees_torch() -> None:
    assert "torch" in probe("import multitower.models.decoder")


def test_the_package_works_without_the_optional_extras() -> None:
    """scipy, pycocotools, transformers and av are optional: the core install (the README's
    first command) imports, trains and runs its commands without them, and detection
    says which extra it needs."""
    code = """
import sys
for name in ("scipy", "pycocotools", "transformers", "av"):
    sys.modules[name] = None  # import fails as if not installed
import multitower.cli.main, multitower.train.task, multitower.train.trainer
import multitower.experiments.zipper_speech_text.experiment
import multitower.experiments.mammut.detect
import torch
from multitower.losses import hungarian_match
try:
    hungarian_match(torch.zeros(2, 3), torch.rand(2, 4), torch.tensor([0]), torch.rand(1, 4))
except ImportError as err:
    print("refused:", err)
"""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: the detection loss's bipartite matching needs scipy" in done.stdout
    assert "pip install 'multitower[detection]'" in done.stdout
