"""The training loop: model-agnostic, resumable, single-process or DDP/FSDP2.

One optimizer step::

    for each of grad_accum micro-batches (this rank's slice of the global batch):
        batch -> device; with autocast: out = task.compute_loss(model, batch)
        (out.loss * out.num_tokens / ref).backward()      # DDP syncs on the last one
    grads *= ref * world / total_tokens  (only when token counts differ)
    clip_grad_norm_; AdamW step; schedule step

so the gradient is that of the token-weighted mean loss over the whole global
batch, whatever the number of ranks and accumulation steps. Nothing on this
path reads a value back from the device except on log steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from multitower.models.io import WEIGHTS_NAME, model_config_dict
from multitower.train import checkpoint as ckpt
from multitower.train.data import BadRecordTracker, BatchPlan, iterate_steps, move_to_device
from multitower.train.distributed import (
    all_reduce_sum,
    barrier,
    full_state_dicts,
    init_distributed,
    load_full_model_state,
    load_full_optimizer_state,
    optimizer_layout,
    shutdown,
    unwrap,
    wrap_model,
)
from multitower.train.logger import MetricsLogger
from multitower.train.optim import WarmupCosine, build_optimizer
from multitower.train.progress import ProgressBar
from multitower.train.task import LossOutput, Task
from multitower.train.train_config import TrainConfig

__all__ = ["EvalFn", "TrainConfig", "Trainer", "resolve_autocast_dtype"]

EvalFn = Callable[[nn.Module], dict[str, float]]


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast dtype for ``precision`` on ``device``, None for fp32.

    ``"auto"`` picks bf16 on CUDA devices that support it and fp32 otherwise.

    Raises:
        ValueError: ``"bf16"`` on a CUDA device without bf16 support.
    """
    if precision == "fp32":
        return None
    cuda = device.type == "cuda"
    bf16_ok = torch.cuda.is_bf16_supported() if cuda else device.type == "cpu"
    if precision == "auto":
        return torch.bfloat16 if cuda and bf16_ok else None
    if not bf16_ok:
        raise ValueError(f"precision='bf16' but {device} does not support bfloat16")
    return torch.bfloat16


def record_lengths(dataset: Any) -> list[int]:
    """``dataset.lengths()``: one length per record, for ``TrainConfig.group_by_length``.

    Raises:
        ValueError: the dataset has no ``lengths()`` method or it returns another
            number of lengths than the dataset has records.
    """
    method = getattr(dataset, "lengths", None)
    if not callable(method):
        raise ValueError(
            f"group_by_length needs a dataset with a lengths() method; "
            f"{type(dataset).__name__} has none (set group_by_length: 0)"
        )
    lengths = [int(n) for n in method()]
    if len(lengths) != len(dataset):
        raise ValueError(
            f"{type(dataset).__name__}.lengths() gave {len(lengths)} lengths for "
            f"{len(dataset)} records"
        )
    return lengths


class Trainer:
    """Trains ``model`` on ``task`` over ``dataset`` (see the module docstring).

    Args:
        model: any ``nn.Module`` with a dataclass ``.config``; moved to the device
            and wrapped for ``cfg.distributed``.
        task: maps a micro-batch to a :class:`LossOutput`.
        dataset: ``len()`` and ``dataset[i]``; ``BadRecordError`` skips a record.
        collate_fn: list of records -> batch (anything :func:`move_to_device` moves).
        cfg: the run's :class:`TrainConfig`.
        run_dir: where checkpoints and ``metrics.jsonl`` go.
        eval_fn: optional ``eval_fn(model) -> {name: value}``, called on every rank
            in eval mode under ``torch.no_grad`` every ``eval_every`` steps and at the end.

    Seeds torch, ``random`` and NumPy from ``cfg.seed`` (plus the rank) so a run is
    reproducible; :meth:`resume` replaces that state by a checkpoint's.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        dataset: Any,
        collate_fn: Callable[[list[Any]], Any],
        cfg: TrainConfig,
        run_dir: str | os.PathLike[str],
        *,
        eval_fn: EvalFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.run_dir = Path(run_dir)
        self.eval_fn = eval_fn
        self.ctx = init_distributed(cfg.distributed, cfg.device)
        self.autocast_dtype = resolve_autocast_dtype(cfg.precision, self.ctx.device)
        self.plan = BatchPlan(
            len(dataset),
            cfg.batch_size,
            cfg.grad_accum,
            self.ctx.world_size,
            self.ctx.rank,
            cfg.seed,
        )
        self.lengths = record_lengths(dataset) if cfg.group_by_length else None
        self.model_meta = model_config_dict(model)  # before FSDP renames the class
        self.model = wrap_model(model.to(self.ctx.device), self.ctx)
        self.module = unwrap(self.model)
        if cfg.compile:
            # In place (nn.Module.compile): parameter names and checkpoints are unchanged.
            self.model.compile()
        self.optimizer = build_optimizer(
            self.module,
            lr=cfg.lr,
            fusion_lr=cfg.fusion_lr,
            gate_lr=cfg.gate_lr,
            weight_decay=cfg.weight_decay,
            betas=cfg.betas,
        )
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.schedule = WarmupCosine(
            self.optimizer,
            warmup_steps=cfg.warmup_steps,
            max_steps=cfg.max_steps,
            min_lr_ratio=cfg.min_lr_ratio,
            decay_fraction=cfg.decay_fraction,
        )
        self.tracker = BadRecordTracker(strict=cfg.strict_data)
        self.step = 0
        self.epoch = 0
        self.index = 0
        seed = cfg.seed + self.ctx.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._reset_accumulators()
        self._grad_norm: torch.Tensor | None = None
        self._last_logged: dict[str, float] = {}

    # -- public ------------------------------------------------------------------------------
    def resume(self) -> int:
        """Load the newest checkpoint of ``run_dir`` whose hashes verify.

        Broken newer checkpoints are reported with a warning naming the file.

        Returns:
            The step resumed from (0 when there is no usable checkpoint).

        Raises:
            ValueError: the checkpoint's weights do not fit the model (every
                missing/unexpected key and shape mismatch is listed).
        """
        found: list[Any] = [None]
        if self.ctx.is_main:
            ckpt.remove_temporary(self.run_dir)
            path = ckpt.find_latest_valid(self.run_dir)
            found = [None if path is None else str(path)]
        if self.ctx.distributed:
            dist.broadcast_object_list(found, src=0)
        if found[0] is None:
            return 0
        path = Path(found[0])
        model_state, state, _ = ckpt.load_checkpoint(path)
        load_full_model_state(self.model, model_state, self.ctx, source=str(path / WEIGHTS_NAME))
        load_full_optimizer_state(
            self.model,
            self.optimizer,
            state["optimizer"],
            state.get("optimizer_layout", "torch"),
            self.ctx,
        )
        self.schedule.load_state_dict(state["schedule"])
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            ckpt.restore_rng_state(rng[self.ctx.rank])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        self.tracker.total = int(state["skipped_records"])
        return self.step

    def fit(self) -> dict[str, float]:
        """Train up to ``cfg.max_steps``; returns the last logged metrics.

        Logs every ``log_every`` steps and at the end, checkpoints every
        ``ckpt_every`` steps and at the end, then shuts the process group down
        if it started it.
        """
        cfg, ctx = self.cfg, self.ctx
        logger = MetricsLogger(self.run_dir, enabled=ctx.is_main)
        logger.truncate_after(self.step)
        # A stage's trainer writes into STAGE_DIR/train: name the stage, not "train".
        name = self.run_dir.parent.name if self.run_dir.name == "train" else self.run_dir.name
        bar = ProgressBar(
            cfg.max_steps,
            initial=self.step,
            mode=cfg.progress,
            enabled=ctx.is_main,
            desc=f"train {name}",
        )
        steps = iterate_steps(
            self.dataset,
            self.collate_fn,
            self.plan,
            epoch=self.epoch,
            index=self.index,
            tracker=self.tracker,
            num_workers=cfg.num_workers,
            pin_memory=ctx.device.type == "cuda",
            lengths=self.lengths,
            group_by_length=cfg.group_by_length,
        )
        self.model.train()
        self._reset_accumulators()
        try:
            while self.step < cfg.max_steps:
                batches = next(steps)
                self._train_step(batches.micro_batches)
                self.step += 1
                self.epoch, self.index = batches.epoch, batches.index
                bar.update(self.step)
                last = self.step == cfg.max_steps
                values: dict[str, float] = {}
                if last or self.step % cfg.log_every == 0:
                    values.update(self._collect_log_values())
                    bar.set_metrics(values["loss"], values["tokens_per_s"])
                if self.eval_fn is not None and (
                    last or (cfg.eval_every and self.step % cfg.eval_every == 0)
                ):
                    values.update(self._evaluate())
                if values:
                    values["epoch"] = self.epoch
                    self._last_logged = {"step": self.step, **values}
                    logger.log(self.step, values)
                if last or (cfg.ckpt_every and self.step % cfg.ckpt_every == 0):
                    self.save_checkpoint()
        finally:
            self.tracker.end_epoch(self.epoch)  # a partial last epoch
            steps.close()
            bar.close()
            logger.close()
        shutdown(ctx)
        return {**self._last_logged, "skipped_records": float(self.tracker.total)}

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; all ranks must call)."""
        model_state, optim_state = full_state_dicts(self.model, self.optimizer, self.ctx)
        rng = [ckpt.capture_rng_state()]
        if self.ctx.distributed:
            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        path = None
        if self.ctx.is_main:
            train_state = {
                "step": self.step,
                "epoch": self.epoch,
                "index": self.index,
                "optimizer": optim_state,
                "optimizer_layout": optimizer_layout(self.ctx),
                "schedule": self.schedule.state_dict(),
                "rng": rng,
                "skipped_records": self.tracker.total,
                "world_size": self.ctx.world_size,
            }
            meta = {
                "model_type": self.model_meta["model_type"],
                "model_config": {k: v for k, v in self.model_meta.items() if k != "model_type"},
                "train_config": dataclasses.asdict(self.cfg),
                "data_position": {"epoch": self.epoch, "index": self.index},
                "world_size": self.ctx.world_size,
            }
            path = ckpt.save_checkpoint(
                self.run_dir,
                step=self.step,
                model_state=model_state,
                train_state=train_state,
                meta=meta,
                keep_last=self.cfg.keep_last,
            )
        barrier()
        return path

    # -- one step ----------------------------------------------------------------------------
    def _sync_context(self, sync: bool) -> contextlib.AbstractContextManager:
        if not self.ctx.distributed:
            return contextlib.nullcontext()
        if self.ctx.mode == "fsdp":
            self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]
            return contextlib.nullcontext()
        return contextlib.nullcontext() if sync else self.model.no_sync()  # type: ignore[operator]

    def _train_step(self, micro_batches: list[Any]) -> None:
        present = [mb for mb in micro_batches if mb is not None]
        if self.ctx.distributed and len(present) != len(micro_batches):
            raise RuntimeError(
                f"rank {self.ctx.rank}: every record of a micro-batch at step {self.step} was bad; "
                "a whole micro-batch cannot be skipped in distributed training"
            )
        device = self.ctx.device
        autocast = torch.autocast(
            device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )
        # Loss weights n_i / ref; ref is a guess of the total that makes the usual case
        # (equal token counts, one rank) need no gradient correction.
        ref: float = float(len(present))
        total: int | torch.Tensor = 0
        for k, batch in enumerate(present):
            batch = move_to_device(batch, device, non_blocking=device.type == "cuda")
            with self._sync_context(k == len(present) - 1):
                with autocast:
                    out = self.task.compute_loss(self.model, batch)
                n = out.num_tokens
                if k == 0 and not self.ctx.distributed and isinstance(n, int) and n > 0:
                    ref = float(n * len(present))
                (out.loss * (n / ref)).backward()
            total = total + n
            self._accumulate(out)
        self._correct_gradients(total, ref)
        if self.cfg.clip_norm > 0:
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()

    def _correct_gradients(self, total: int | torch.Tensor, ref: float) -> None:
        """Rescale gradients from sum(n_i * grad_i) / ref to the global token-weighted mean."""
        world = self.ctx.world_size
        if world == 1 and isinstance(total, int):
            if total == ref or total == 0:
                return
            factor: float | torch.Tensor = ref / total
        else:
            total_t = torch.as_tensor(total, dtype=torch.float32, device=self.ctx.device).clone()
            factor = ref * world / all_reduce_sum(total_t).clamp_min(1e-8)
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, factor)

    # -- metrics -----------------------------------------------------------------------------
    def _reset_accumulators(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._tokens: int | torch.Tensor = 0
        self._throughput: int | torch.Tensor = 0
        self._metric_sums: dict[str, torch.Tensor | float] = {}
        self._micro_count = 0
        self._window_start = time.perf_counter()

    def _accumulate(self, out: LossOutput) -> None:
        self._loss_sum = self._loss_sum + out.loss.detach().float() * out.num_tokens
        self._tokens = self._tokens + out.num_tokens
        seen = out.num_tokens if out.throughput_tokens is None else out.throughput_tokens
        self._throughput = self._throughput + seen
        for key, value in out.metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self._metric_sums[key] = self._metric_sums.get(key, 0.0) + value
        self._micro_count += 1

    def _collect_log_values(self) -> dict[str, float]:
        """Reduce the accumulated sums over ranks: one device-to-host copy per log step."""
        device = self.ctx.device
        keys = sorted(self._metric_sums)
        parts = [self._loss_sum, self._tokens, self._micro_count, self._throughput] + [
            self._metric_sums[k] for k in keys
        ]
        dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32  # exact counts
        stats = torch.stack([torch.as_tensor(p, device=device).to(dtype) for p in parts])
        values = all_reduce_sum(stats).tolist()
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        loss_sum, tokens, count, throughput = values[:4]
        # The learning rate the last step used (the schedule has already moved on).
        factor = self.schedule.factor_at(self.step - 1)
        groups = self.optimizer.param_groups
        out = {
            "loss": loss_sum / max(tokens, 1e-8),
            "lr": groups[0]["base_lr"] * factor,
            "tokens_per_s": throughput / elapsed,
        }
        for group in groups:
            if group["name"].startswith("fusion"):
                out["fusion_lr"] = group["base_lr"] * factor
        if self._grad_norm is not None:
            norm = self._grad_norm
            full = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
            out["grad_norm"] = float(full() if callable(full) else norm)
        for key, value in zip(keys, values[4:]):
            out[key] = value / max(count, 1)
        self._reset_accumulators()
        return out

    def _evaluate(self) -> dict[str, float]:
        assert self.eval_fn is not None
        self.module.eval()
        autocast = torch.autocast(
            self.ctx.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )
        with torch.no_grad(), autocast:
            results = self.eval_fn(self.module)
        self.module.train()
        return {f"eval/{k}": float(v) for k, v in results.items()}
