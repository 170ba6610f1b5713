"""Zipper: decoder towers fused by gated cross-attention (arXiv 2405.18669, section 2).

Each modality has its own pre-trained tower: a :class:`DecoderTower`, or a Hugging
Face causal LM wrapped as an :class:`~multitower.models.hf_tower.HFTower` (both give
``embed_tokens``, ``run_block``, ``head`` and KV caches). Zipper adds, under the
``fusion.`` prefix only:

* an input projection per tower after its embedding (paper ``ReLU(MLP(e))``, or
  the residual ``e + MLP(e)`` with a zero-initialised output layer);
* for each ordered pair (query tower ``q``, source tower ``s``) a gated
  cross-attention block after every ``i``-th block of ``q``, reading ``s``'s
  hidden state at the same relative depth ``l = round(k * L_s / L_q)`` through a
  linear ``d_s -> d_q`` projection.

Towers advance block by block; a fusion block at depth k of ``q`` reads ``s``'s
state after ``l`` blocks *before* ``s``'s own fusion blocks at that depth ran, so
both directions are well defined (the order is computed once per set of running
towers by :func:`fusion_schedule`)::

    text   : emb -> proj -> [blk1] -> [blk2] -(x<-speech@2)-> [blk3] -> [blk4] -(x<-speech@4)-> head
                                        |  ^                              |  ^
    speech : emb -> proj -> [blk1] -> [blk2] -(x<-text@2)--> [blk3] -> [blk4] -(x<-text@4)--> head

Cross-attention is causal over the interleaved order (see
:mod:`multitower.interleave`). With caches set up, every fusion block keeps a
cross-attention cache of its source tower that grows whenever the source tower
runs, so one tower can generate while reading everything the others produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multitower.interleave import Modality, TowerBatch, cross_attention_mask
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.hf_tower import HFTower, HFTowerConfig
from multitower.models.zipper_config import ZipperConfig
from multitower.models.zipper_schedule import (
    CrossAttend,
    FusionOp,
    FusionPoint,
    RunLayers,
    ShareState,
    fusion_points,
    fusion_schedule,
)
from multitower.nn import GatedCrossAttentionBlock
from multitower.nn.attention import CrossMask
from multitower.nn.rotary import RotaryTables


class InputProjection(nn.Module):
    """``ReLU(MLP(e))`` (paper) or ``e + MLP(e)`` with zero-initialised output (residual)."""

    def __init__(self, d_model: int, hidden: int, *, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.fc_in = nn.Linear(d_model, hidden)
        self.fc_out = nn.Linear(hidden, d_model)
        nn.init.normal_(self.fc_in.weight, std=0.02)
        nn.init.zeros_(self.fc_in.bias)
        nn.init.zeros_(self.fc_out.bias)
        if residual:
            nn.init.zeros_(self.fc_out.weight)
        else:
            nn.init.normal_(self.fc_out.weight, std=0.02)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        h = self.fc_out(F.gelu(self.fc_in(e), approximate="tanh"))
        return e + h if self.residual else F.relu(h)


Tower = DecoderTower | HFTower


@dataclass(frozen=True)
class TowerSource:
    """Where a tower's pre-trained weights were read from (see :mod:`multitower.models.zipped`).

    Args:
        kind: ``"hf"`` (a Hugging Face model folder) or ``"multitower"`` (a saved
            :class:`DecoderTower`).
        path: the folder, absolute.
        sha256: the folder's hash when it was read.
    """

    kind: str
    path: str
    sha256: str


def build_tower(config: DecoderConfig | HFTowerConfig) -> Tower:
    """A freshly initialised tower of either kind."""
    if isinstance(config, HFTowerConfig):
        return HFTower(config)
    return DecoderTower(config)


class Zipper(nn.Module):
    """N decoder towers zipped with gated cross-attention in both directions.

    Args:
        config: the towers and how they are zipped.
        towers: optional ready towers (e.g. pre-trained ones) by name, each with the
            config ``config.towers[name]``; the others are built freshly initialised.

    Raises:
        ValueError: a given tower of an unknown name or of another config.
    """

    def __init__(self, config: ZipperConfig, towers: Mapping[str, Tower] | None = None) -> None:
        super().__init__()
        if config.cross_distance_bias and not config.position_scales:
            raise ValueError(
                "cross_distance_bias needs position_scales (the shared axis the distances are "
                "measured on)"
            )
        self.config = config
        given = dict(towers or {})
        for name, tower in given.items():
            self._check_tower(name, tower)
        self.towers = nn.ModuleDict(
            {n: given[n] if n in given else build_tower(c) for n, c in config.towers.items()}
        )
        self.points = fusion_points(config)
        xattn = nn.ModuleDict()
        for p in self.points:
            qcfg, scfg = config.towers[p.query], config.towers[p.source]
            blocks = xattn[p.key] if p.key in xattn else nn.ModuleDict()
            blocks[str(p.depth)] = GatedCrossAttentionBlock(
                qcfg.d_model,
                scfg.d_model,
                qcfg.num_heads,
                int(config.fusion_mlp_ratio * qcfg.d_model),
                norm=qcfg.norm,
                rope_base=config.cross_rope_base if config.position_scales else None,
                distance_bias=config.cross_distance_bias,
            )
            xattn[p.key] = blocks
        self.fusion = nn.ModuleDict({"xattn": xattn})
        if config.input_projection != "none":
            self.fusion["input_proj"] = nn.ModuleDict(
                {
                    n: InputProjection(
                        c.d_model,
                        int(config.input_projection_ratio * c.d_model),
                        residual=config.input_projection == "residual",
                    )
                    for n, c in config.towers.items()
                }
            )
        self._init_fusion()
        # Set by multitower.models.zipped when towers are read from folders.
        self.tower_sources: dict[str, TowerSource] = {}
        self._schedules: dict[tuple[str, ...], tuple[FusionOp, ...]] = {}

    def _init_fusion(self) -> None:
        """Init of the cross-attention blocks: linear weights normal(0, 0.02), norms one,
        gates zero (set by the block). Input projections initialise themselves."""
        for module in self.fusion["xattn"].modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)

    # -- metadata ----------------------------------------------------------------------------
    @property
    def max_seq_lens(self) -> dict[str, int]:
        """Tower name -> the longest sequence that tower takes (its ``max_seq_len``)."""
        return {n: c.max_seq_len for n, c in self.config.towers.items()}

    @property
    def modalities(self) -> dict[str, Modality]:
        return {
            n: Modality(n, n, c.vocab_size, 0, c.pad_id, c.bos_id, c.eos_id)
            for n, c in self.config.towers.items()
        }

    def block(self, point: FusionPoint) -> GatedCrossAttentionBlock:
        return self.fusion["xattn"][point.key][str(point.depth)]  # type: ignore[return-value]

    def fusion_parameters(self) -> list[nn.Parameter]:
        """Every parameter Zipper adds to the towers: those of the ``fusion`` modules."""
        return list(self.fusion.parameters())

    def gate_parameters(self) -> list[nn.Parameter]:
        """The tanh-gate scalars of every gated cross-attention block."""
        return [g for p in self.points for g in self.block(p).gate_parameters()]

    def freeze_towers(self, names: Iterable[str]) -> None:
        """Stop gradients to the named towers' own parameters (fusion stays trainable)."""
        for name in names:
            if name not in self.towers:
                raise ValueError(
                    f"freeze_towers: unknown tower {name!r}; allowed: {list(self.towers)}"
                )
            for p in self.towers[name].parameters():
                p.requires_grad_(False)

    def _check_tower(self, name: str, tower: Tower) -> None:
        if name not in self.config.towers:
            raise ValueError(f"unknown tower {name!r}; allowed: {list(self.config.towers)}")
        if tower.config != self.config.towers[name]:
            raise ValueError(
                f"tower {name!r} config {tower.config} does not match the "
                f"Zipper config {self.config.towers[name]}"
            )

    def load_tower(self, name: str, tower: Tower) -> None:
        """Copy a pre-trained tower's weights in (strict: same config, same key names).

        To load from disk: ``load_tower(name, load_pretrained(dir, DecoderTower))``, or
        ``load_tower(name, load_hf_tower(dir, ...))`` for a Hugging Face model.
        """
        try:
            self._check_tower(name, tower)
        except ValueError as err:
            raise ValueError(f"load_tower: {err}") from err
        self.towers[name].load_state_dict(tower.state_dict(), strict=True)

    # -- caches ------------------------------------------------------------------------------
    def setup_caches(
        self,
        batch: int,
        max_len: int | Mapping[str, int],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        """Preallocate self-attention and cross-attention caches.

        Args:
            max_len: slots per tower (one int for all, or tower name -> int).
        """
        lens = {n: max_len if isinstance(max_len, int) else max_len[n] for n in self.towers}
        ref = next(self.parameters())
        dtype, device = dtype or ref.dtype, device or ref.device
        for name, tower in self.towers.items():
            tower.setup_caches(batch, lens[name], dtype=dtype, device=device)
        for p in self.points:
            self.block(p).setup_cache(batch, lens[p.source], dtype=dtype, device=device)

    def reset_caches(self) -> None:
        for tower in self.towers.values():
            tower.reset_caches()
        for p in self.points:
            cache = self.block(p).kv_cache
            if cache is not None:
                cache.reset()

    def remove_caches(self) -> None:
        for tower in self.towers.values():
            tower.remove_caches()
        for p in self.points:
            self.block(p).kv_cache = None

    @property
    def caches_enabled(self) -> bool:
        return next(iter(self.towers.values())).caches_enabled

    # -- forward -----------------------------------------------------------------------------
    def schedule(self, active: Iterable[str]) -> tuple[FusionOp, ...]:
        """:func:`fusion_schedule` of the ``active`` towers, computed once per set."""
        wanted = set(active)
        key = tuple(t for t in self.towers if t in wanted)
        if key not in self._schedules:
            self._schedules[key] = tuple(fusion_schedule(self.config, wanted))
        return self._schedules[key]

    def forward(self, batch: Mapping[str, TowerBatch]) -> dict[str, torch.Tensor]:
        """Logits of every tower present in ``batch``.

        Without caches, ``batch`` holds whole sequences (see
        :func:`~multitower.interleave.collate_interleaved`). With caches, it holds the
        new tokens of the towers that advance; the others contribute through their
        cross-attention caches. The towers' blocks and the fusion blocks run in the
        order of :meth:`schedule`.

        Returns:
            tower name -> ``(B, T, V)`` logits.
        """
        unknown = [t for t in batch if t not in self.towers]
        if unknown:
            raise ValueError(f"unknown tower(s) {unknown}; allowed: {list(self.towers)}")
        caching = self.caches_enabled
        proj = self.fusion["input_proj"] if self.config.input_projection != "none" else None
        active = [t for t in self.towers if t in batch]
        # With caches: one host sync per tower and forward checks the positions and
        # gives the filled part of the caches; nothing is read back per layer.
        max_pos: dict[str, int] = {}
        if caching:
            max_pos = {t: self.towers[t].check_positions(batch[t].positions) for t in active}
        x: dict[str, torch.Tensor] = {}
        for t in active:
            positions = batch[t].positions if caching else None
            h = self.towers[t].embed_tokens(batch[t].tokens, positions)  # (B, T, D)
            x[t] = proj[t](h) if proj is not None else h
        # Rotary tables and masks of one forward, shared by all layers of a tower.
        inputs = {
            t: self.towers[t].prepare_blocks(
                x[t], batch[t].positions if caching else None, max_position=max_pos.get(t)
            )
            for t in active
        }
        step = _FusionInputs(batch, caching, self.config.position_scales)
        shared: dict[tuple[str, int], torch.Tensor] = {}
        for op in self.schedule(active):
            match op:
                case RunLayers(tower, start, stop):
                    run_block = self.towers[tower].run_block
                    for i in range(start, stop):
                        x[tower] = run_block(i, x[tower], inputs=inputs[tower])  # type: ignore[arg-type]
                case ShareState(tower, depth, readers):
                    shared[(tower, depth)] = x[tower]
                    if caching:
                        self._append_to_caches(
                            readers, x[tower], batch[tower], step.positions(tower), max_pos[tower]
                        )
                case CrossAttend(point):
                    x[point.query] = self._cross_attend(point, x[point.query], step, shared)
        return {t: self.towers[t].head(x[t]) for t in active}

    def _append_to_caches(
        self,
        readers: Iterable[FusionPoint],
        h: torch.Tensor,
        tb: TowerBatch,
        shared_positions: torch.Tensor | None,
        max_position: int,
    ) -> None:
        """Append the source state ``h`` ``(B, T, D_s)`` to every reader's cross-attention
        cache (keys rotated by ``shared_positions`` when cross-attention is rotary)."""
        for p in readers:
            block = self.block(p)
            assert block.kv_cache is not None
            k, v = block.source_kv(h, shared_positions)  # (B, H, T, Dh)
            block.kv_cache.update_source(tb.positions, k, v, tb.global_positions, tb.valid)
            block.kv_cache.mark_filled(max_position)

    def _cross_attend(
        self,
        point: FusionPoint,
        h: torch.Tensor,
        step: _FusionInputs,
        shared: Mapping[tuple[str, int], torch.Tensor],
    ) -> torch.Tensor:
        """The fusion block of ``point`` on the query state ``h`` ``(B, T, D_q)``: reads the
        filled part of the cross-attention cache when caches are set up, else the shared
        source state (or nothing when the source tower is absent from the batch)."""
        block, batch = self.block(point), step.batch
        q = batch[point.query]
        rope = step.query_rope(point, block, h.dtype)
        if step.caching:
            cache = block.kv_cache
            assert cache is not None
            S = cache.filled if not torch.compiler.is_compiling() else cache.max_len
            if S == 0:  # the source tower has not run yet: no key to see
                return block(h, None, None, None)
            mask = step.mask(
                point,
                h.dtype,
                lambda: cross_attention_mask(
                    q.global_positions, q.valid, cache.global_positions[:, :S], cache.valid[:, :S]
                ),  # (B, Tq, S)
            )
            distance = step.distance(point, block, torch.arange(S, device=h.device)[None])
            return block(
                h, cache.k[:, :, :S], cache.v[:, :, :S], mask, query_rope=rope, distance=distance
            )
        if point.source not in batch:
            return block(h, None, None, None)
        src = batch[point.source]
        k, v = block.source_kv(
            shared[(point.source, point.source_depth)], step.positions(point.source)
        )  # (B, H, S, Dh)
        mask = step.mask(
            point,
            h.dtype,
            lambda: cross_attention_mask(
                q.global_positions, q.valid, src.global_positions, src.valid
            ),  # (B, Tq, S)
        )
        distance = step.distance(point, block, src.positions)
        return block(h, k, v, mask, query_rope=rope, distance=distance)


class _FusionInputs:
    """Cross-attention masks and query rotary tables of one forward, each built once
    and shared by the fusion blocks that read the same source tower.

    Every fusion block of one (query, source) pair sees the same keys' positions:
    without caches the source's tokens, with caches its cross-attention caches,
    which are all written together whenever the source runs.
    """

    def __init__(
        self, batch: Mapping[str, TowerBatch], caching: bool, scales: Mapping[str, float]
    ) -> None:
        self.batch = batch
        self.caching = caching
        self.scales = scales
        self._positions: dict[str, torch.Tensor] = {}
        self._masks: dict[str, CrossMask] = {}
        self._ropes: dict[str, RotaryTables] = {}
        self._distances: dict[str, torch.Tensor] = {}

    def positions(self, tower: str) -> torch.Tensor | None:
        """``tower``'s tokens on the axis shared by every tower (``position_scales``),
        or None when cross-attention has no positions."""
        if not self.scales:
            return None
        if tower not in self._positions:
            self._positions[tower] = self.batch[tower].positions * float(self.scales[tower])
        return self._positions[tower]

    def mask(
        self, point: FusionPoint, dtype: torch.dtype, build: Callable[[], torch.Tensor]
    ) -> CrossMask:
        if point.key not in self._masks:
            self._masks[point.key] = CrossMask.from_visibility(build(), dtype)
        return self._masks[point.key]

    def query_rope(
        self,
        point: FusionPoint,
        block: GatedCrossAttentionBlock,
        dtype: torch.dtype,
    ) -> RotaryTables | None:
        rotary = block.cross_attn.rotary
        positions = self.positions(point.query)
        if rotary is None or positions is None:
            return None
        if point.query not in self._ropes:
            self._ropes[point.query] = rotary.tables(positions, dtype)
        return self._ropes[point.query]

    def distance(
        self, point: FusionPoint, block: GatedCrossAttentionBlock, key_positions: torch.Tensor
    ) -> torch.Tensor | None:
        """``(B, 1, Tq, S)`` distances on the shared axis between ``point``'s queries and
        the source tokens at tower-local ``key_positions`` ``(B or 1, S)``, for blocks with
        a distance bias (else None)."""
        if not block.cross_attn.distance_bias:  # a biased Zipper always has scales
            return None
        if point.key not in self._distances:
            q = self.positions(point.query)  # (B, Tq)
            k = key_positions * float(self.scales[point.source])  # (B or 1, S)
            assert q is not None
            self._distances[point.key] = (q[:, :, None] - k[:, None, :]).abs()[:, None]
        return self._distances[point.key]
