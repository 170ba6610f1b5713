"""Trainer: parity with a hand-written loop, gradient accumulation, bf16, bad records, logs."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from multitower.data.errors import BadRecordError
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.train.data import epoch_permutation, move_to_device
from multitower.train.task import LossOutput, NextTokenTask
from multitower.train.trainer import TrainConfig, Trainer

SEQ = 8


def tiny_model(seed: int = 0) -> DecoderTower:
    torch.manual_seed(seed)
    return DecoderTower(
        DecoderConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2, max_seq_len=16)
    )


class PaddedData:
    """Sequences of 3..8 tokens right-padded with 0 to length 8: token counts differ per batch."""

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(123)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(3, SEQ + 1, (), generator=gen))
            seq = torch.zeros(SEQ, dtype=torch.long)
            seq[0] = 1
            seq[1:length] = torch.randint(3, 16, (length - 1,), generator=gen)
            self.items.append(seq)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]


class IntCountTask:
    """Like NextTokenTask(pad_id=0) but reports the token count as a Python int."""

    def compute_loss(self, model, batch) -> LossOutput:
        out = NextTokenTask(pad_id=0).compute_loss(model, batch)
        return LossOutput(out.loss, {}, int(out.num_tokens))


def cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=3, batch_size=8, grad_accum=1, lr=1e-2, warmup_steps=0, min_lr_ratio=1.0,
        weight_decay=0.0, clip_norm=0.0, log_every=1, ckpt_every=0, keep_last=1,
        progress="off", device="cpu", precision="fp32", seed=0,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def reference_run(model, data, steps: int, batch_size: int, lr: float) -> list[float]:
    """A readable loop: same batches, token-weighted mean loss, plain AdamW."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0
    )
    perm = epoch_permutation(len(data), seed=0, epoch=0)
    losses = []
    for s in range(steps):
        batch = torch.stack([data[i] for i in perm[s * batch_size : (s + 1) * batch_size]])
        logits = model(batch[:, :-1])
        targets = batch[:, 1:]
        w = (targets != 0).float().flatten()
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        loss = (ce * w).sum() / w.sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    "task", [NextTokenTask(pad_id=0), IntCountTask()], ids=["tensor_count", "int_count"]
)
def test_trainer_matches_reference_loop_with_and_without_accumulation(tmp_path, task) -> None:
    data = PaddedData(48)
    base = tiny_model()
    ref = copy.deepcopy(base)
    ref_losses = reference_run(ref, data, steps=3, batch_size=8, lr=1e-2)

    # The micro-batches really do hold different numbers of target tokens.
    perm = epoch_permutation(len(data), seed=0, epoch=0)
    counts = {int((data[i][1:] != 0).sum()) for i in perm[:8]}
    assert len(counts) > 1

    for accum in (1, 4):
        model = copy.deepcopy(base)
        Trainer(model, task, data, torch.stack, cfg(grad_accum=accum), tmp_path / f"a{accum}").fit()
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(
                p, q, rtol=1e-5, atol=1e-6, msg=f"grad_accum={accum}: {name}"
            )
        rows = [
            json.loads(x)
            for x in (tmp_path / f"a{accum}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert [r["loss"] for r in rows] == pytest.approx(ref_losses, rel=1e-5)


def _compiled_matches_eager(tmp_path) -> None:
    data = PaddedData(24)
    eager, compiled = tiny_model(), tiny_model()
    ref = Trainer(eager, NextTokenTask(pad_id=0), data, torch.stack, cfg(), tmp_path / "e").fit()
    trainer = Trainer(
        compiled, NextTokenTask(pad_id=0), data, torch.stack, cfg(compile=True), tmp_path / "c"
    )
    assert trainer.fit()["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # names unchanged


def test_compile_option_traces_the_model_and_trains_alike(tmp_path, monkeypatch) -> None:
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    # Trace only (no kernels), so the test stays quick; the inductor run is the slow test.
    monkeypatch.setattr(torch, "compile", lambda *a, **kw: real_compile(*a, **kw, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    _compiled_matches_eager(tmp_path)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward really went through dynamo


@pytest.mark.slow
def test_compile_option_with_the_inductor(tmp_path) -> None:
    torch._dynamo.reset()
    _compiled_matches_eager(tmp_path)


def test_bf16_autocast_on_cpu(tmp_path) -> None:
    seen = []

    class Probe:
        def compute_loss(self, model, batch):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return NextTokenTask(pad_id=0).compute_loss(model, batch)

    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    out = Trainer(
        model, Probe(), PaddedData(16), torch.stack, cfg(max_steps=2, precision="bf16"), tmp_path
    ).fit()
    assert seen == [(True, torch.bfloat16)] * 2
    assert torch.isfinite(torch.tensor(out["loss"]))
    assert all(
        torch.isfinite(p).all() and not torch.equal(p, b)
        for p, b in zip(model.parameters(), before)
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a cast

    seen.clear()
    Trainer(
        tiny_model(),
        Probe(),
        PaddedData(16),
        torch.stack,
        cfg(max_steps=1, precision="auto"),
        tmp_path / "b",
    ).fit()
    assert seen[0][0] is False  # auto = fp32 on CPU


class Flaky:
    """Every fifth record is unreadable."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        if i % 5 == 0:
            raise BadRecordError(f"record {i}: broken file")
        return torch.tensor([1, 3 + i % 10, 4, 5, 6, 7, 8, 9])


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_records_are_skipped_counted_and_reported(tmp_path, workers) -> None:
    trainer = Trainer(tiny_model(), NextTokenTask(pad_id=0), Flaky(), torch.stack,
                      cfg(max_steps=5, num_workers=workers), tmp_path)  # fmt: skip
    with pytest.warns(
        UserWarning, match=r"epoch 0: skipped 8 bad records: record \d+: .*broken file"
    ):
        out = trainer.fit()  # exactly one epoch: 40 records, 5 batches of 8
    assert out["skipped_records"] == 8


def test_strict_data_raises_naming_the_record(tmp_path) -> None:
    first_bad = next(i for i in epoch_permutation(40, seed=0, epoch=0) if i % 5 == 0)
    trainer = Trainer(tiny_model(), NextTokenTask(pad_id=0), Flaky(), torch.stack,
                      cfg(max_steps=5, strict_data=True), tmp_path)  # fmt: skip
    with pytest.raises(
        BadRecordError, match=rf"training record {first_bad} is unusable \(strict_data=True"
    ):
        trainer.fit()


def test_log_rows_eval_and_schedule(tmp_path) -> None:
    calls = []

    def eval_fn(model):
        calls.append(model.training)
        return {"score": 0.5}

    config = cfg(max_steps=6, log_every=2, eval_every=3, warmup_steps=2, min_lr_ratio=0.5, lr=1e-3)
    out = Trainer(tiny_model(), NextTokenTask(pad_id=0), PaddedData(64), torch.stack, config, tmp_path,
                  eval_fn=eval_fn).fit()  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 6]
    assert all({"loss", "lr", "tokens_per_s"} <= set(r) for r in rows if r["step"] != 3)
    assert rows[1] == {"step": 3, "eval/score": 0.5, "epoch": 0}
    assert calls == [False, False]  # eval mode, at step 3 and at the end
    # The logged lr is the one the logged step used: step 2 ran at factor(1) (end of
    # warmup), step 4 at factor(3), a quarter into the cosine.
    assert rows[0]["lr"] == pytest.approx(1e-3)
    quarter = 0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert rows[2]["lr"] == pytest.approx(1e-3 * quarter)
    assert out["step"] == 6 and out["eval/score"] == 0.5


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible by grad_accum=3"):
        TrainConfig(batch_size=10, grad_accum=3)
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\)"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="warmup_steps=20 must not exceed max_steps=10"):
        TrainConfig(max_steps=10, warmup_steps=20)


def test_batch_must_split_over_accumulation_and_dataset_must_hold_a_batch(tmp_path) -> None:
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(tiny_model(), NextTokenTask(pad_id=0), PaddedData(4), torch.stack, cfg(), tmp_path)


class Pair(NamedTuple):
    a: torch.Tensor
    b: list


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: torch.Tensor
    name: str


class HasTo:
    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def to(self, device):
        return HasTo(self.t.to(device))


def test_move_to_device_recurses_through_containers() -> None:
    t = torch.ones(2)
    batch = {"pair": Pair(t, [t, (t, 3)]), "frozen": Frozen(t, "n"), "obj": HasTo(t), "s": "keep"}
    moved = move_to_device(batch, torch.device("meta"))
    assert isinstance(moved["pair"], Pair) and moved["pair"].a.is_meta
    assert (
        moved["pair"].b[0].is_meta and moved["pair"].b[1][0].is_meta and moved["pair"].b[1][1] == 3
    )
    assert (
        isinstance(moved["frozen"], Frozen)
        and moved["frozen"].x.is_meta
        and moved["frozen"].name == "n"
    )
    assert moved["obj"].t.is_meta and moved["s"] == "keep"


def test_progress_bar_modes(tmp_path) -> None:
    import io

    from multitower.progress import run_log, set_stage_counter
    from multitower.train.progress import ProgressBar

    stream = io.StringIO()  # not a terminal: plain lines, one per interval and one at the end
    bar = ProgressBar(10, mode="auto", stream=stream, desc="train toy", interval=0.0)
    bar.update(5)
    bar.set_metrics(1.5, 1000.0)
    bar.update(6)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert "] train toy: 5/10 (50%) | " in lines[0] and "ETA" in lines[0]
    assert "train toy: 6/10 (60%) | loss 1.5000 | 1,000 tok/s | " in lines[1]
    assert "steps/s | ETA " in lines[1]

    stream = io.StringIO()
    bar = ProgressBar(10, mode="off", stream=stream, interval=0.0)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""

    bar = ProgressBar(10, initial=2, mode="on", stream=stream)  # tqdm, even off a terminal
    bar.set_metrics(1.25, 2000.0)
    bar.update(6)
    bar.close()
    last = stream.getvalue().strip().split("\r")[-1]
    assert "6/10" in last and "loss 1.2500" in last and "2,000 tok/s" in last

    # a run log gets the plain lines in every mode, with the stage's place in the run
    set_stage_counter(lambda: (3, 14))
    try:
        with run_log(tmp_path / "run.log"):
            bar = ProgressBar(4, mode="off", stream=io.StringIO(), desc="train x", interval=0.0)
            bar.update(4)
            bar.close()
    finally:
        set_stage_counter(None)
    text = (tmp_path / "run.log").read_text()
    assert "train x (stage 3 of 14): 4/4 (100%)" in text and len(text.splitlines()) == 2


def test_batch_plan_shards_every_global_batch_the_same_way() -> None:
    from multitower.train.data import BatchPlan, epoch_order

    perm = epoch_order(40, seed=0, epoch=0)
    assert torch.equal(perm, epoch_order(40, seed=0, epoch=0))
    assert not torch.equal(perm, epoch_order(40, seed=0, epoch=1))
    assert sorted(perm.tolist()) == list(range(40))
    for world, accum in [(1, 1), (2, 2), (4, 1), (1, 4), (2, 4)]:
        plans = [BatchPlan(40, 8, accum, world, rank, 0) for rank in range(world)]
        for i in range(5):
            micro = [plan.local_micro_batches(perm, i) for plan in plans]  # [rank][k]
            got = [idx for k in range(accum) for rank in range(world) for idx in micro[rank][k]]
            assert got == perm[i * 8 : (i + 1) * 8].tolist(), (world, accum, i)
    with pytest.raises(ValueError, match=r"divisible by grad_accum \* world_size = 3 \* 1"):
        BatchPlan(40, 8, 3, 1, 0, 0)


def test_tokens_per_s_counts_throughput_tokens_not_the_loss_weight(tmp_path, monkeypatch) -> None:
    """A loss averaged over 2 "images" that read 50 tokens each: tokens/s counts the
    100 tokens (a clock advancing 1 s per reading makes the rate exact)."""
    import multitower.train.trainer as trainer_module

    clock = iter(range(10**6))
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))

    class PerImage:
        def compute_loss(self, model, batch) -> LossOutput:
            out = NextTokenTask(pad_id=0).compute_loss(model, batch)
            return LossOutput(out.loss, {}, 2, throughput_tokens=100 if seen else None)

    rates = []
    for seen in (False, True):
        out_dir = tmp_path / str(seen)
        Trainer(tiny_model(), PerImage(), PaddedData(64), torch.stack,
                cfg(max_steps=2, log_every=1), out_dir).fit()  # fmt: skip
        rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
        rates.append([r["tokens_per_s"] for r in rows if "tokens_per_s" in r])
    assert [round(b / a) for a, b in zip(*rates)] == [50, 50]


def test_progress_rate_and_eta_count_only_this_runs_items() -> None:
    """Items found done (a resumed corpus's finished shards) are in the count shown but
    not in the rate or the ETA: 40 skipped, then 10 made in 10 s is 1 item/s, 50 s left."""
    import io

    from multitower.progress import Progress

    progress = Progress(100, "speech corpus", unit="utterances", stream=io.StringIO())
    progress.skip(40)
    progress.update(50)
    line = progress.line(now=progress.start + 10.0)
    assert line == "speech corpus: 50/100 (50%) | 1.00 utterances/s | ETA 0:50"
    progress.skip(20)  # finished items later in the loop do not speed it up either
    assert progress.line(now=progress.start + 10.0).endswith(
        "70/100 (70%) | 1.00 utterances/s | ETA 0:30"
    )

    stream = io.StringIO()  # the tqdm bar: the same count, its rate from this run's items
    bar = Progress(100, "speech corpus", unit="utterances", mode="on", stream=stream)
    bar.skip(40)
    assert bar._bar.n == 40 and bar._bar.initial == 40
    bar.update(41)
    bar.close()
    assert "41/100" in stream.getvalue().split("\r")[-1]
