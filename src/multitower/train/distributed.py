"""Distributed glue: process group from torchrun's environment, DDP / FSDP2 wrapping.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and starts a process group
(NCCL on GPU, gloo on CPU). Without ``WORLD_SIZE`` (a plain ``python -m``
launch) training runs as one process whatever ``distributed`` says.

:func:`all_gather_with_grad` gathers features of every rank for a loss that
needs the global batch (MaMMUT's contrastive loss) while letting gradients flow
back to the local slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from multitower.models.io import check_state_compatible
from multitower.train.train_config import DISTRIBUTED_MODES


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, local rank and its device.

    ``owns_group`` is True when :func:`init_distributed` created the process group
    (and :func:`shutdown` should destroy it).
    """

    mode: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def init_distributed(mode: str, device: str = "auto") -> DistContext:
    """Start (or join) the process group described by torchrun's environment variables.

    Args:
        mode: ``"none"``, ``"ddp"`` or ``"fsdp"``.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; on CUDA
            each process uses ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: an unknown mode, or ``WORLD_SIZE > 1`` with ``mode="none"``
            (every process would train its own copy).
    """
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be one of {DISTRIBUTED_MODES}, got {mode!r}")
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK") or 0
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    if mode == "none":
        if world_size > 1:
            raise ValueError(
                f"WORLD_SIZE={world_size} but distributed='none': set distributed to 'ddp' or "
                "'fsdp', or launch a single process"
            )
        return DistContext(mode, 0, 1, 0, _resolve_device(device, 0))
    torch_device = _resolve_device(device, local_rank)
    if world_size == 1:
        return DistContext(mode, 0, 1, local_rank, torch_device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns = True
    return DistContext(mode, rank, world_size, local_rank, torch_device, owns_group=owns)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (no-op without a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) for ``ctx.mode``; unchanged on one rank.

    DDP wraps the module; FSDP2 shards, in place, every module that sits in an
    ``nn.ModuleList`` (the transformer blocks), then the root.
    """
    if not ctx.distributed:
        return model
    broadcast_parameters(model)
    if ctx.mode == "ddp":
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place: returned as is)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def shutdown(ctx: DistContext) -> None:
    """Barrier, then destroy the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """``dist.barrier()`` when a process group is running, else nothing."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (world * B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every rank's loss may depend on this rank's rows: sum their gradients.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``(B, ...)`` of every rank along dim 0, keeping the local autograd path.

    The backward pass sums the gradient that every rank's loss sends to this
    rank's rows and returns it to the local ``x``. With DDP, which averages
    parameter gradients over ranks, the result is the gradient of the mean of the
    per-rank losses. Every rank must pass the same ``B``. Without a process group
    (or with one rank) ``x`` is returned unchanged.

    Returns:
        ``(world_size * B, ...)``, rank r's rows at ``[r * B, (r + 1) * B)``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op without a process group); returns ``tensor``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# -- full (unsharded) state dicts for checkpoints -----------------------------------------------
def _sharded(ctx: DistContext) -> bool:
    return ctx.mode == "fsdp" and ctx.distributed


def optimizer_layout(ctx: DistContext) -> str:
    """How :func:`full_state_dicts` stores optimizer state: ``"torch"`` or ``"fsdp_full"``."""
    return "fsdp_full" if _sharded(ctx) else "torch"


def full_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Unsharded model and optimizer state (a collective under FSDP: every rank calls).

    ``model`` is the wrapped model. Under FSDP2 the tensors are gathered to CPU
    and the optimizer state is keyed by parameter name; otherwise the plain
    ``state_dict()`` of the unwrapped module and of the optimizer are returned.
    """
    if _sharded(ctx):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (
            get_model_state_dict(model, options=opts),
            get_optimizer_state_dict(model, optimizer, options=opts),
        )
    return unwrap(model).state_dict(), optimizer.state_dict()


def load_full_model_state(
    model: nn.Module, state: dict[str, torch.Tensor], ctx: DistContext, *, source: str
) -> None:
    """Load an unsharded state dict after :func:`check_state_compatible` (lists every mismatch)."""
    check_state_compatible(unwrap(model), state, source=source)
    if _sharded(ctx):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        unwrap(model).load_state_dict(state, strict=True)


def load_full_optimizer_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    layout: str,
    ctx: DistContext,
) -> None:
    """Load optimizer state saved by :func:`full_state_dicts` with layout ``layout``.

    Raises:
        ValueError: the layout does not match this run (FSDP vs not).
    """
    if layout != optimizer_layout(ctx):
        raise ValueError(
            f"the checkpoint's optimizer state was saved as {layout!r} but this run needs "
            f"{optimizer_layout(ctx)!r} (resume FSDP runs with FSDP on several ranks)"
        )
    if _sharded(ctx):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            model, optimizer, state, options=StateDictOptions(full_state_dict=True)
        )
    else:
        optimizer.load_state_dict(state)
