"""Deterministic, resumable, sharded batches with bad-record skipping.

Data order: epoch ``e`` visits the dataset in the permutation drawn by a
``torch.Generator`` seeded from ``(seed, e)``; global batch ``i`` of the epoch is
``perm[i * batch_size : (i + 1) * batch_size]`` (an incomplete last batch is
dropped). A global batch is cut into ``grad_accum`` consecutive micro-batches and
each micro-batch into ``world_size`` consecutive per-rank slices, so the global
batch is the same whatever the number of ranks. The position ``(epoch, index)``
is all a resumed run needs.

Length grouping (``group_by_length=k``): every run of ``k`` global batches of the
permutation is sorted by record length and cut into batches, and the epoch's full
batches are visited in an order drawn from the same generator. Each batch then
holds records of about one length (less padding: on the speech-text recipe's
aligned pairs the speech tower's padded positions fall from 43% to 6%,
``benchmarks/length_grouping.py``) and the order is still a function of
``(seed, epoch)``.

Bad records: a dataset raising :class:`~multitower.data.errors.BadRecordError`
from ``dataset[i]`` makes that record be skipped (inside the worker, which
returns a marker instead of crashing) and counted; a summary warning is printed
at the end of each epoch. With ``strict`` the main process raises instead,
naming the index.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from multitower.data.errors import BadRecordError


def epoch_order(
    num_items: int,
    seed: int,
    epoch: int,
    *,
    lengths: Sequence[int] | None = None,
    group: int = 0,
    batch_size: int = 1,
) -> torch.Tensor:
    """The visiting order of epoch ``epoch``: a permutation of ``range(num_items)`` (int64).

    With ``group > 0`` and ``lengths`` (one per record), the permutation is length
    grouped (module docstring): runs of ``group * batch_size`` records sorted by
    length, longest first, and the full batches of ``batch_size`` shuffled; the
    records of an incomplete last batch stay at the end.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    perm = torch.randperm(num_items, generator=gen)
    if group <= 0:
        return perm
    if lengths is None or len(lengths) != num_items:
        got = "none" if lengths is None else len(lengths)
        raise ValueError(f"length grouping needs one length per record ({num_items}), got {got}")
    size = torch.as_tensor(lengths, dtype=torch.int64)
    runs = [
        chunk[torch.argsort(size[chunk], descending=True, stable=True)]
        for chunk in perm.split(group * batch_size)
    ]
    flat = torch.cat(runs)
    full = num_items // batch_size * batch_size
    batches = flat[:full].view(-1, batch_size)
    shuffled = batches[torch.randperm(len(batches), generator=gen)].reshape(-1)
    return torch.cat([shuffled, flat[full:]])


def epoch_permutation(num_items: int, seed: int, epoch: int) -> list[int]:
    """:func:`epoch_order` as a list of ints."""
    return epoch_order(num_items, seed, epoch).tolist()


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Which dataset indices each rank reads for each micro-batch.

    Args:
        num_items: dataset length.
        batch_size: global batch (all ranks, all accumulation steps).
        grad_accum: micro-batches per optimizer step.
        world_size: number of ranks.
        rank: this rank.
        seed: data-order seed.
    """

    num_items: int
    batch_size: int
    grad_accum: int
    world_size: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        per_micro = self.grad_accum * self.world_size
        if self.batch_size % per_micro:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum * world_size = "
                f"{self.grad_accum} * {self.world_size}"
            )
        if self.num_items < self.batch_size:
            raise ValueError(
                f"the dataset has {self.num_items} records, fewer than one batch "
                f"(batch_size={self.batch_size})"
            )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside [0, world_size={self.world_size})")

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.batch_size

    @property
    def local_micro_batch(self) -> int:
        return self.batch_size // (self.grad_accum * self.world_size)

    def local_micro_batches(
        self, perm: Sequence[int] | torch.Tensor, index: int
    ) -> list[list[int]]:
        """This rank's ``grad_accum`` index lists for global batch ``index`` of ``perm``."""
        micro = self.batch_size // self.grad_accum
        local = self.local_micro_batch
        out = []
        for k in range(self.grad_accum):
            first = index * self.batch_size + k * micro + self.rank * local
            part = perm[first : first + local]
            out.append(part.tolist() if isinstance(part, torch.Tensor) else list(part))
        return out


class _EpochSampler:
    """Lazy batch sampler: this rank's micro-batches of global batches ``start..`` of an epoch."""

    def __init__(self, plan: BatchPlan, perm: torch.Tensor, start: int) -> None:
        self.plan, self.perm, self.start = plan, perm, start

    def __len__(self) -> int:
        return (self.plan.batches_per_epoch - self.start) * self.plan.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.plan.batches_per_epoch):
            yield from self.plan.local_micro_batches(self.perm, i)


class _Skipped(NamedTuple):
    """Marker returned in place of a record whose reader raised BadRecordError."""

    index: int
    reason: str


class _SafeDataset(Dataset):
    """Wraps ``dataset[i]``: a BadRecordError becomes a :class:`_Skipped` marker."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except BadRecordError as err:
            return _Skipped(index, str(err) or type(err).__name__)


class MicroBatch(NamedTuple):
    """One collated micro-batch (None when every record was bad) and the skipped records."""

    batch: Any
    skipped: list[_Skipped]


class _SafeCollate:
    """Drops skipped markers, then calls the user's collate on the rest."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> MicroBatch:
        skipped = [x for x in items if isinstance(x, _Skipped)]
        good = [x for x in items if not isinstance(x, _Skipped)]
        return MicroBatch(self.collate_fn(good) if good else None, skipped)


class BadRecordTracker:
    """Counts skipped records; warns once per epoch; raises in strict mode.

    In distributed training every rank counts and reports the records it read.
    """

    def __init__(self, *, strict: bool, max_reasons: int = 3) -> None:
        self.strict = strict
        self.max_reasons = max_reasons
        self.total = 0
        self._epoch_count = 0
        self._reasons: list[str] = []

    def add(self, skipped: list[_Skipped]) -> None:
        for item in skipped:
            if self.strict:
                raise BadRecordError(
                    f"training record {item.index} is unusable (strict_data=True; set "
                    f"strict_data=False to skip bad records): {item.reason}"
                )
            self.total += 1
            self._epoch_count += 1
            if len(self._reasons) < self.max_reasons:
                self._reasons.append(f"record {item.index}: {item.reason}")

    def end_epoch(self, epoch: int) -> None:
        """Warn about the records skipped since the last call (nothing when none were)."""
        if self._epoch_count:
            more = ", ..." if self._epoch_count > len(self._reasons) else ""
            warnings.warn(
                f"epoch {epoch}: skipped {self._epoch_count} bad records: "
                + "; ".join(self._reasons)
                + more,
                stacklevel=2,
            )
        self._epoch_count = 0
        self._reasons = []


class StepBatches(NamedTuple):
    """The micro-batches of one optimizer step and the data position after it."""

    micro_batches: list[Any]  # grad_accum entries; None for a micro-batch with no good record
    epoch: int
    index: int  # next global batch of ``epoch`` once this step is done


def iterate_steps(
    dataset: Any,
    collate_fn: Callable[[list[Any]], Any],
    plan: BatchPlan,
    *,
    epoch: int,
    index: int,
    tracker: BadRecordTracker,
    num_workers: int = 0,
    pin_memory: bool = False,
    lengths: Sequence[int] | None = None,
    group_by_length: int = 0,
) -> Iterator[StepBatches]:
    """Yield the micro-batches of every optimizer step from position ``(epoch, index)`` on.

    Runs forever (epoch after epoch); a DataLoader is built per epoch with a
    generator seeded from ``(seed, epoch)``, so the global torch RNG is not touched.
    ``lengths`` and ``group_by_length``: length-grouped batches (:func:`epoch_order`).
    """
    safe = _SafeDataset(dataset)
    collate = _SafeCollate(collate_fn)
    while True:
        order = epoch_order(
            plan.num_items,
            plan.seed,
            epoch,
            lengths=lengths,
            group=group_by_length,
            batch_size=plan.batch_size,
        )
        sampler = _EpochSampler(plan, order, index)
        loader = DataLoader(
            safe,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(plan.seed * 7919 + epoch),
        )
        pending: list[Any] = []
        for micro in loader:
            tracker.add(micro.skipped)
            pending.append(micro.batch)
            if len(pending) == plan.grad_accum:
                index += 1
                if index == plan.batches_per_epoch:
                    tracker.end_epoch(epoch)  # before yielding: training may stop here
                yield StepBatches(pending, epoch, index)
                pending = []
        epoch, index = epoch + 1, 0


def move_to_device(obj: Any, device: torch.device, *, non_blocking: bool = False) -> Any:
    """Move a batch to ``device`` recursively.

    Handles tensors, mappings (returned as dicts), lists and tuples (named too),
    objects with a ``.to(device)`` method, and dataclasses (field by field).
    Anything else is returned unchanged.
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: move_to_device(v, device, non_blocking=non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
        return type(obj)(*(move_to_device(v, device, non_blocking=non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device, non_blocking=non_blocking) for v in obj)
    to = getattr(obj, "to", None)
    if callable(to):
        return to(device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: move_to_device(getattr(obj, f.name), device, non_blocking=non_blocking)
            for f in dataclasses.fields(obj)
            if f.init
        }
        return dataclasses.replace(obj, **changes)
    return obj
