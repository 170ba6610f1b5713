"""Two CPU processes (gloo): DDP and FSDP2 equal one process on the same global batch;
all_gather_with_grad sends every rank's gradient back to the local slice."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.io import load_safetensors
from multitower.train.distributed import all_gather_with_grad
from multitower.train.task import NextTokenTask
from multitower.train.trainer import TrainConfig, Trainer

WORLD = 2
SEQ = 8


def tiny_model() -> DecoderTower:
    torch.manual_seed(0)
    return DecoderTower(
        DecoderConfig(vocab_size=16, d_model=16, num_layers=2, num_heads=2, max_seq_len=16)
    )


class PaddedData:
    """Right-padded sequences of 3..8 tokens: ranks see different token counts."""

    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(7)
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


def train_config(distributed: str) -> TrainConfig:
    # Gradient norms are about 0.89, 0.99, 1.03: clip_norm=0.95 clips only the last two
    # steps, so a wrongly scaled gradient would not be hidden by clipping.
    return TrainConfig(
        max_steps=3, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=1, clip_norm=0.95,
        weight_decay=0.1, log_every=1, ckpt_every=0, progress="off", device="cpu",
        precision="fp32", distributed=distributed,
    )  # fmt: skip


def gather_inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-dependent input rows (3, 2) and loss weights (6, 2)."""
    x = torch.arange(6.0).reshape(3, 2) / 7 + rank
    w = torch.linspace(-1, 1, 12).reshape(6, 2) * (rank + 1)
    return x, w


def gather_loss(gathered: torch.Tensor, rank: int) -> torch.Tensor:
    _, w = gather_inputs(rank)
    return (gathered * w).sum() + (gathered**2).sum() * (rank + 1)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    x, _ = gather_inputs(rank)
    x.requires_grad_(True)
    gathered = all_gather_with_grad(x)
    gather_loss(gathered, rank).backward()
    torch.save({"gathered": gathered.detach(), "grad": x.grad}, Path(out) / f"gather{rank}.pt")
    for mode in ("ddp", "fsdp"):
        Trainer(tiny_model(), NextTokenTask(pad_id=0), PaddedData(32), torch.stack,
                train_config(mode), Path(out) / mode).fit()  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_process_training_and_gather(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    # all_gather_with_grad against one process holding every rank's rows.
    xs = [gather_inputs(r)[0] for r in range(WORLD)]
    full = torch.cat(xs).requires_grad_(True)
    sum(gather_loss(full, r) for r in range(WORLD)).backward()
    for r in range(WORLD):
        got = torch.load(tmp_path / f"gather{r}.pt", weights_only=True)
        torch.testing.assert_close(got["gathered"], full.detach(), rtol=0, atol=0)
        torch.testing.assert_close(got["grad"], full.grad[3 * r : 3 * (r + 1)])

    # DDP and FSDP2 on two ranks == one process on the same global batches.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = tiny_model()
        Trainer(single, NextTokenTask(pad_id=0), PaddedData(32), torch.stack,
                train_config("none"), tmp_path / "single").fit()  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    final = "checkpoints/step_000003/model.safetensors"
    for mode in ("ddp", "fsdp"):
        weights, _ = load_safetensors(tmp_path / mode / final)
        assert weights.keys() == single.state_dict().keys()
        for key, value in single.state_dict().items():
            torch.testing.assert_close(
                weights[key], value, rtol=1e-5, atol=1e-6, msg=f"{mode}: {key}"
            )
        assert not torch.equal(weights["embed.weight"], tiny_model().embed.weight)  # it trained
