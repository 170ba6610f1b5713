"""Without ``transformers`` installed, HF towers fail with a message naming the extra.

Not in ``test_hf_tower.py``, which is skipped when ``transformers`` is absent: these
tests run either way (an installed ``transformers`` is hidden from the import).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from multitower.models.hf_tower import HFTower, HFTowerConfig, require_transformers

TINY_GPT2 = {
    "model_type": "gpt2",
    "vocab_size": 10,
    "n_embd": 8,
    "n_layer": 1,
    "n_head": 2,
    "n_positions": 16,
}


def test_a_missing_transformers_install_names_the_extra(monkeypatch):
    config = HFTowerConfig(TINY_GPT2, pad_id=0, bos_id=1, eos_id=2)  # built without transformers
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'multitower\[hf\]'"):
        require_transformers()
    with pytest.raises(ImportError, match=r"multitower\[hf\]"):
        HFTower(config)


def test_pyproject_declares_the_hf_extra():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert "hf = [" in text and "transformers" in text.split("hf = [", 1)[1].split("]", 1)[0]
