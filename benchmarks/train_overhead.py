"""Overhead of the Trainer over a bare hand-written training loop.

Both train the same tiny DecoderTower (toy_lm data) in the same process with
the same work per step: read and collate the records, forward, next-token loss,
backward, gradient clipping, AdamW, learning-rate schedule. The Trainer also
logs every ``--log-every`` steps (its only device sync); its end-of-run
checkpoint is switched off, as file I/O is not per-step overhead. Repetitions
alternate between the two loops and the medians are compared.

    python benchmarks/train_overhead.py [--steps 60] [--reps 5] [--threads 1]

The last line is ``trainer_over_bare=<trainer step time / bare step time>``, the
median over repetitions of the ratio within each repetition.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from multitower.experiments.recipes import ToyLMDataset, stack_tokens
from multitower.losses import next_token_loss
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.train.data import epoch_permutation
from multitower.train.optim import lr_factor
from multitower.train.task import NextTokenTask
from multitower.train.trainer import TrainConfig, Trainer

LR, WARMUP, CLIP = 1e-3, 10, 1.0


def bare_loop(model: DecoderTower, data: ToyLMDataset, steps: int, batch_size: int) -> float:
    """Seconds per step of the plainest loop doing the same work."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    perm = epoch_permutation(len(data), seed=0, epoch=0)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = LR * lr_factor(
                step, warmup_steps=WARMUP, max_steps=steps, min_lr_ratio=0.1
            )
        idx = perm[step * batch_size : (step + 1) * batch_size]
        batch = stack_tokens([data[i] for i in idx])  # (B, T)
        logits = model(batch[:, :-1])  # (B, T-1, V)
        loss = next_token_loss(logits, batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def trainer_loop(
    model: DecoderTower,
    data: ToyLMDataset,
    steps: int,
    batch_size: int,
    log_every: int,
    run_dir: str,
) -> float:
    """Seconds per step of Trainer.fit (setup and teardown of fit included)."""
    cfg = TrainConfig(
        max_steps=steps, batch_size=batch_size, lr=LR, weight_decay=0.1, warmup_steps=WARMUP,
        min_lr_ratio=0.1, clip_norm=CLIP, precision="fp32", log_every=log_every, ckpt_every=0,
        progress="off", device="cpu",
    )  # fmt: skip
    trainer = Trainer(model, NextTokenTask(pad_id=None), data, stack_tokens, cfg, run_dir)
    trainer.save_checkpoint = lambda: None  # type: ignore[method-assign]  # I/O, not step overhead
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = DecoderConfig(vocab_size=35, d_model=64, num_layers=2, num_heads=4, max_seq_len=64)
    torch.manual_seed(0)
    base = DecoderTower(config)
    data = ToyLMDataset(args.steps * args.batch_size, 24, vocab_size=35, bos_id=1, seed=0)
    bare_loop(copy.deepcopy(base), data, 5, args.batch_size)  # warm up allocator and kernels
    bare, trainer = [], []
    with tempfile.TemporaryDirectory() as run_dir:
        for rep in range(args.reps):
            bare.append(bare_loop(copy.deepcopy(base), data, args.steps, args.batch_size))
            trainer.append(
                trainer_loop(
                    copy.deepcopy(base), data, args.steps, args.batch_size, args.log_every, run_dir
                )
            )
            print(
                f"rep {rep}: bare {bare[-1] * 1e3:.2f} ms/step, trainer {trainer[-1] * 1e3:.2f} ms/step"
            )
    b, t = statistics.median(bare), statistics.median(trainer)
    paired = statistics.median(x / y for x, y in zip(trainer, bare))
    print(f"median of per-repetition ratios: {paired:.3f}")
    print(
        f"median: bare {b * 1e3:.2f} ms/step ({1 / b:.1f} steps/s), trainer {t * 1e3:.2f} ms/step ({1 / t:.1f} steps/s)"
    )
    # Each repetition times the two loops back to back, so the paired ratio is the
    # one least disturbed by load drifting on a shared machine.
    print(f"trainer_over_bare={paired:.3f}")


if __name__ == "__main__":
    main()
