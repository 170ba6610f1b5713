"""The fusion schedule of a Zipper: where its gated cross-attention blocks sit
(:func:`fusion_points`) and the order in which the towers' blocks and the fusion
blocks run in one forward (:func:`fusion_schedule`). Pure bookkeeping over a
:class:`~multitower.models.zipper_config.ZipperConfig`; :mod:`multitower.models.zipper`
runs the ops and re-exports these names.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from multitower.models.zipper_config import ZipperConfig


@dataclass(frozen=True)
class FusionPoint:
    """A gated cross-attention block: after ``depth`` blocks of ``query``, reading
    ``source`` after ``source_depth`` blocks."""

    query: str
    source: str
    depth: int
    source_depth: int

    @property
    def key(self) -> str:
        return f"{self.query}_from_{self.source}"


def fusion_points(config: ZipperConfig) -> list[FusionPoint]:
    """All fusion points, ordered by query tower, depth, then source tower."""
    points = []
    for query, qcfg in config.towers.items():
        for depth in range(1, qcfg.num_layers + 1):
            for source, scfg in config.towers.items():
                if source == query or depth % config.interval(query, source):
                    continue
                # Relative-depth alignment; floor(x + 0.5) rounds halves up, unlike round().
                source_depth = int(depth * scfg.num_layers / qcfg.num_layers + 0.5)
                points.append(FusionPoint(query, source, depth, source_depth))
    return points


@dataclass(frozen=True)
class RunLayers:
    """Run blocks ``start .. stop - 1`` (0-based) of ``tower``: its depth goes from
    ``start`` to ``stop``."""

    tower: str
    start: int
    stop: int


@dataclass(frozen=True)
class ShareState:
    """``tower``'s hidden state after ``depth`` blocks becomes readable by ``readers``.

    Kept for the rest of the call; with caches set up it is also appended to every
    reader's cross-attention cache (readers whose query tower is not running too).
    """

    tower: str
    depth: int
    readers: tuple[FusionPoint, ...]


@dataclass(frozen=True)
class CrossAttend:
    """Apply the gated cross-attention block of ``point`` to its query tower's state."""

    point: FusionPoint


FusionOp = RunLayers | ShareState | CrossAttend


def _tower_program(tower: str, num_layers: int, points: list[FusionPoint]) -> list[FusionOp]:
    """One tower's own ops in order: at every depth, share the state (if read), then
    cross-attend (if a fusion block sits there), then run the next block."""
    readers: dict[int, list[FusionPoint]] = {}
    blocks_at: dict[int, list[FusionPoint]] = {}
    for p in points:
        if p.source == tower:
            readers.setdefault(p.source_depth, []).append(p)
        if p.query == tower:
            blocks_at.setdefault(p.depth, []).append(p)
    program: list[FusionOp] = []
    for depth in range(num_layers + 1):
        if depth > 0:
            program.append(RunLayers(tower, depth - 1, depth))
        if depth in readers:
            program.append(ShareState(tower, depth, tuple(readers[depth])))
        program.extend(CrossAttend(p) for p in blocks_at.get(depth, []))
    return program


def fusion_schedule(config: ZipperConfig, active: Iterable[str]) -> list[FusionOp]:
    """The order in which :meth:`Zipper.forward` runs the ``active`` towers' blocks.

    Each active tower has its own program (:func:`_tower_program`). First every
    tower shares its embedding (depth 0) where it is read; then the towers take
    turns in config order; in its turn a tower runs its program until it reaches a
    :class:`CrossAttend` whose source tower is active but has not yet shared the
    state it reads, then the next tower goes. A source tower that is not active is
    never waited for: its block reads the cross-attention cache (or nothing).
    Consecutive blocks of one tower are merged into one :class:`RunLayers`.

    Text (2 blocks) and speech (4 blocks), ``cross_attention_every=1``: text's fusion
    block at depth ``k`` reads speech at depth ``2k``, speech's at depth ``k`` reads
    text at ``round(k / 2)`` (halves up). ``share@d``: :class:`ShareState` after ``d``
    blocks; ``x<-s@d``: :class:`CrossAttend` reading tower ``s`` after ``d`` blocks::

        turn  text                              speech
        1     blk0, share@1, wait
        2                                       blk0, x<-text@1, blk1, share@2,
                                                x<-text@1, blk2, wait
        3     x<-speech@2, blk1, share@2, wait
        4                                       x<-text@2, blk3, share@4, x<-text@2
        5     x<-speech@4

    A shared state is the output of a :class:`RunLayers`, so every fusion block
    reads its source *before* the source's own fusion blocks at that depth ran.

    Args:
        config: the Zipper config (towers, intervals).
        active: names of the towers that run (any order; run in config order).

    Returns:
        The ops; flattening every :class:`RunLayers` gives each active tower's
        blocks exactly once, in order.

    Raises:
        ValueError: an unknown tower name.
    """
    wanted = set(active)
    unknown = sorted(wanted - set(config.towers))
    if unknown:
        raise ValueError(f"unknown tower(s) {unknown}; allowed: {list(config.towers)}")
    order = [t for t in config.towers if t in wanted]
    points = fusion_points(config)
    programs = {t: deque(_tower_program(t, config.towers[t].num_layers, points)) for t in order}
    shared: set[tuple[str, int]] = set()

    def waits(op: FusionOp) -> bool:
        if not isinstance(op, CrossAttend):
            return False
        p = op.point
        return p.source in wanted and (p.source, p.source_depth) not in shared

    ops: list[FusionOp] = []
    for t in order:  # the embeddings exist before any tower takes its turn
        first = programs[t][0] if programs[t] else None
        if isinstance(first, ShareState):  # depth 0
            programs[t].popleft()
            shared.add((first.tower, first.depth))
            ops.append(first)
    while any(programs.values()):
        progressed = False
        for t in order:
            program = programs[t]
            while program and not waits(program[0]):
                op = program.popleft()
                progressed = True
                last = ops[-1] if ops else None
                if isinstance(op, RunLayers) and isinstance(last, RunLayers) and last.tower == t:
                    ops[-1] = RunLayers(t, last.start, op.stop)
                    continue
                if isinstance(op, ShareState):
                    shared.add((op.tower, op.depth))
                ops.append(op)
        # Never raised: a tower waiting at relative depth d / L_q waits on a source
        # stopped at depth <= source_depth - 1 <= d * L_s / L_q - 1/2, a strictly
        # lower relative depth, so waits never form a cycle.
        if not progressed:
            raise RuntimeError(f"fusion schedule of towers {order} is stuck (a bug)")
    return ops
