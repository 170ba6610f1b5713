"""``train_resumable`` with a ``BestCheckpoint`` scores the untouched model as step 0."""

from __future__ import annotations

import torch

from multitower.experiments.zipper_speech_text.pairs import (
    InterleavedLMTask,
    PairedDirections,
    interleaved_collate,
)
from multitower.models.decoder import DecoderConfig
from multitower.models.pretrained import load_pretrained
from multitower.models.zipper import Zipper, ZipperConfig
from multitower.train.stages import BestCheckpoint, train_resumable
from multitower.train.train_config import TrainConfig


def setup():
    torch.manual_seed(0)
    towers = {
        "speech": DecoderConfig(vocab_size=20, d_model=16, num_layers=2, num_heads=2),
        "text": DecoderConfig(vocab_size=24, d_model=16, num_layers=2, num_heads=2),
    }
    model = Zipper(ZipperConfig(towers, cross_attention_every=1))
    pairs = [([3 + i % 15, 4, 5 + i % 7], [3, 4 + i % 11]) for i in range(16)]
    return model, PairedDirections(pairs), interleaved_collate(model.modalities)


CFG = TrainConfig(
    max_steps=6, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=3, ckpt_every=3, progress="off"
)


def test_the_start_is_kept_when_every_trained_step_scores_worse(tmp_path) -> None:
    model, data, collate = setup()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    steps: list[int] = []

    def score(m: torch.nn.Module) -> float:
        steps.append(len(steps))
        return float(len(steps))  # every later score is worse

    best = BestCheckpoint(tmp_path / "best", score)
    trained = train_resumable(
        model, InterleavedLMTask(), data, collate, CFG, tmp_path, seed=0, best=best
    )
    assert best.record == {"step": 0, "valid_loss": 1.0}
    assert len(steps) == 3  # step 0, 3 and 6
    kept = load_pretrained(tmp_path / "best" / "model", Zipper)
    for k, v in kept.state_dict().items():
        torch.testing.assert_close(v, start[k])
    assert any(not torch.equal(v, start[k]) for k, v in trained.state_dict().items())


def test_a_resumed_run_does_not_score_its_start_again(tmp_path) -> None:
    model, data, collate = setup()
    calls: list[int] = []

    def score(m: torch.nn.Module) -> float:
        calls.append(1)
        return 10.0 - len(calls)  # every later score is better

    half = TrainConfig(**{**CFG.__dict__, "max_steps": 3})
    train_resumable(
        model,
        InterleavedLMTask(),
        data,
        collate,
        half,
        tmp_path,
        seed=0,
        best=BestCheckpoint(tmp_path / "best", score),
    )
    assert len(calls) == 2  # step 0 and 3
    model, data, collate = setup()
    best = BestCheckpoint(tmp_path / "best", score)
    train_resumable(model, InterleavedLMTask(), data, collate, CFG, tmp_path, seed=0, best=best)
    assert len(calls) == 3  # resumed at 3: only step 6
    assert best.record is not None and best.record["step"] == 6
