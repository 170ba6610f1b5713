"""Weights I/O and training checkpoints: atomicity, verification, strict loading."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors
import torch
from torch import nn

from multitower.experiments.recipes import ToyLMDataset, stack_tokens
from multitower.io import file_sha256
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.io import (
    load_config_json,
    load_safetensors,
    load_state_strict,
    load_weights,
    save_model,
    save_safetensors_atomic,
)
from multitower.train import checkpoint as ckpt
from multitower.train.task import NextTokenTask
from multitower.train.trainer import TrainConfig, Trainer


def tiny_cfg(**kw) -> DecoderConfig:
    return DecoderConfig(
        **{**dict(vocab_size=16, d_model=16, num_layers=1, num_heads=2, max_seq_len=16), **kw}
    )


def tiny_model(seed: int = 0, **kw) -> DecoderTower:
    torch.manual_seed(seed)
    return DecoderTower(tiny_cfg(**kw))


def make_trainer(run_dir: Path, model: nn.Module | None = None, **kw) -> Trainer:
    config = TrainConfig(**{**dict(max_steps=6, batch_size=4, lr=1e-2, warmup_steps=2, ckpt_every=2,
                                   keep_last=0, log_every=1, progress="off", device="cpu"), **kw})  # fmt: skip
    data = ToyLMDataset(32, 8, vocab_size=16, bos_id=1, seed=0)
    return Trainer(
        model or tiny_model(), NextTokenTask(pad_id=None), data, stack_tokens, config, run_dir
    )


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- models/io ---------------------------------------------------------------------------------
def test_save_model_roundtrip_and_config_json(tmp_path) -> None:
    model = tiny_model()
    save_model(model, tmp_path)
    config = load_config_json(tmp_path)
    assert config["model_type"] == "DecoderTower" and config["d_model"] == 16
    other = tiny_model(seed=1)
    load_weights(other, tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied: one storage, two names


def test_tied_weights_are_saved_once_and_restored(tmp_path) -> None:
    model = Tied()
    save_safetensors_atomic(tmp_path / "w.safetensors", model.state_dict())
    with safetensors.safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        assert len(list(f.keys())) == 1  # stored once
        aliases = json.loads(f.metadata()["multitower.aliases"])
    assert aliases in ({"head.weight": "embed.weight"}, {"embed.weight": "head.weight"})
    tensors, meta = load_safetensors(tmp_path / "w.safetensors")
    assert set(tensors) == {"embed.weight", "head.weight"} and "multitower.aliases" not in meta
    other = Tied()
    load_state_strict(other, tensors, source="w")
    assert torch.equal(other.head.weight, model.embed.weight)
    assert other.head.weight is other.embed.weight  # the tie survives loading


def test_overlapping_views_are_cloned(tmp_path) -> None:
    base = torch.arange(12.0)
    save_safetensors_atomic(tmp_path / "v.safetensors", {"a": base[:6], "b": base[6:], "all": base})
    tensors, _ = load_safetensors(tmp_path / "v.safetensors")
    assert torch.equal(tensors["b"], base[6:]) and torch.equal(tensors["all"], base)


def test_load_state_strict_lists_every_problem_and_leaves_model_untouched() -> None:
    model = tiny_model()
    before = params(model)
    state = params(tiny_model(d_model=32, num_heads=2))  # every matrix has another shape
    state["extra.weight"] = torch.zeros(1)
    del state["norm.weight"]
    with pytest.raises(ValueError) as info:
        load_state_strict(model, state, source="other.safetensors")
    msg = str(info.value)
    assert "cannot load other.safetensors into DecoderTower" in msg
    assert "missing key 'norm.weight' (expected shape [16])" in msg
    assert "unexpected key 'extra.weight' (shape [1])" in msg
    assert "shape mismatch for 'embed.weight': model expects [16, 16], found [16, 32]" in msg
    assert "shape mismatch for 'blocks.0.attn.q_proj.weight'" in msg
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_atomic_write_keeps_old_file_when_the_rename_fails(tmp_path, monkeypatch) -> None:
    target = tmp_path / "w.safetensors"
    save_safetensors_atomic(target, {"x": torch.zeros(3)})
    digest = file_sha256(target)

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_safetensors_atomic(target, {"x": torch.ones(3)})
    monkeypatch.undo()
    assert file_sha256(target) == digest
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # temp file cleaned up


# -- training checkpoints ----------------------------------------------------------------------
def test_checkpoint_layout_and_weights_only_train_state(tmp_path) -> None:
    trainer = make_trainer(tmp_path, keep_last=2)
    trainer.fit()
    steps = [s for s, _ in ckpt.list_checkpoints(tmp_path)]
    assert steps == [4, 6]  # keep_last=2
    path = tmp_path / "checkpoints" / "step_000006"
    assert sorted(p.name for p in path.iterdir()) == [
        "meta.json",
        "model.safetensors",
        "train_state.pt",
    ]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 6 and meta["model_type"] == "DecoderTower"
    assert meta["model_config"]["d_model"] == 16 and meta["train_config"]["max_steps"] == 6
    assert meta["data_position"] == {"epoch": 0, "index": 6}
    assert meta["files"]["model.safetensors"] == file_sha256(path / "model.safetensors")
    state = torch.load(path / "train_state.pt", weights_only=True)
    assert state["step"] == 6 and isinstance(state["rng"][0]["torch"], torch.Tensor)
    assert ckpt.verify_checkpoint(path) is None


def test_resume_in_process_is_exact(tmp_path) -> None:
    base = tiny_model()
    full = make_trainer(tmp_path / "full", copy.deepcopy(base))
    full.fit()
    half = make_trainer(tmp_path / "half", copy.deepcopy(base), max_steps=6)
    half.fit()
    for _, path in ckpt.list_checkpoints(tmp_path / "half")[1:]:
        shutil.rmtree(path)  # keep only step 2
    resumed = make_trainer(tmp_path / "half", tiny_model(seed=5))
    assert resumed.resume() == 2
    resumed.fit()
    for k, v in full.module.state_dict().items():
        assert torch.equal(v, resumed.module.state_dict()[k]), k


@pytest.mark.parametrize("damage", ["truncate_weights", "flip_train_state", "delete_meta"])
def test_corrupted_checkpoint_falls_back_to_previous(tmp_path, damage) -> None:
    make_trainer(tmp_path, max_steps=4).fit()  # checkpoints at 2 and 4
    newest = tmp_path / "checkpoints" / "step_000004"
    if damage == "truncate_weights":
        f = newest / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-100])
        name = "model.safetensors"
    elif damage == "flip_train_state":
        f = newest / "train_state.pt"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
        name = "train_state.pt"
    else:
        (newest / "meta.json").unlink()
        name = "meta.json"
    trainer = make_trainer(tmp_path, max_steps=4)
    with pytest.warns(UserWarning, match=rf"skipping checkpoint step 4: .*{name}"):
        assert trainer.resume() == 2


def test_crash_between_temp_write_and_rename_keeps_previous_checkpoint(
    tmp_path, monkeypatch
) -> None:
    trainer = make_trainer(tmp_path, max_steps=4)
    real_replace = os.replace

    def crash_on_dir_rename(src, dst):
        if Path(src).name.startswith(".tmp_step_000004"):
            raise OSError("simulated crash before rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_dir_rename)
    with pytest.raises(OSError, match="simulated crash"):
        trainer.fit()
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert ckpt.verify_checkpoint(root / "step_000002") is None
    assert any(
        p.name.startswith(".tmp_step_000004") for p in root.iterdir()
    )  # the half-written one
    again = make_trainer(tmp_path, max_steps=4)
    assert again.resume() == 2
    assert not any(p.name.startswith(".tmp_") for p in root.iterdir())  # leftovers removed
    again.fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]


def test_resume_into_another_config_lists_mismatches(tmp_path) -> None:
    make_trainer(tmp_path, max_steps=2).fit()
    other = make_trainer(tmp_path, tiny_model(num_layers=2, d_model=32, num_heads=2))
    with pytest.raises(ValueError) as info:
        other.resume()
    msg = str(info.value)
    assert "step_000002/model.safetensors" in msg
    assert "missing key 'blocks.1.attn.q_proj.weight' (expected shape [32, 32])" in msg
    assert "shape mismatch for 'embed.weight': model expects [16, 32], found [16, 16]" in msg


def test_rng_state_roundtrip() -> None:
    import random

    import numpy as np

    state = ckpt.capture_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand(2), random.gauss(0, 1))
    ckpt.restore_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand(2), random.gauss(0, 1))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and (a[2] == b[2]).all() and a[3] == b[3]
