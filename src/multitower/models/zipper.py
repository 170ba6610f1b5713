"""Zipper: decoder towers fused by gated cross-attention (arXiv 2405.18669, section 2).

Each modality has its own pre-trained :class:`DecoderTower`. Zipper adds, under the
``fusion.`` prefix only:

* an input projection per tower after its embedding (paper ``ReLU(MLP(e))``, or
  the residual ``e + MLP(e)`` with a zero-initialised output layer);
* for each ordered pair (query tower ``q``, source tower ``s``) a gated
  cross-attention block after every ``i``-th block of ``q``, reading ``s``'s
  hidden state at the same relative depth ``l = round(k * L_s / L_q)`` through a
  linear ``d_s -> d_q`` projection.

Towers advance block by block; a fusion block at depth k of ``q`` reads ``s``'s
state after ``l`` blocks *before* ``s``'s own fusion blocks at that depth ran, so
both directions are well defined::

    text   : emb -> proj -> [blk1] -> [blk2] -(x<-speech@2)-> [blk3] -> [blk4] -(x<-speech@4)-> head
                                        |  ^                              |  ^
    speech : emb -> proj -> [blk1] -> [blk2] -(x<-text@2)--> [blk3] -> [blk4] -(x<-text@4)--> head

Cross-attention is causal over the interleaved order (see
:mod:`multitower.interleave`). With caches set up, every fusion block keeps a
cross-attention cache of its source tower that grows whenever the source tower
runs, so one tower can generate while reading everything the others produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from multitower.interleave import Modality, TowerBatch, cross_attention_mask
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.nn import GatedCrossAttentionBlock

INPUT_PROJECTIONS = ("paper", "residual", "none")


@dataclass(frozen=True)
class ZipperConfig:
    """How towers are zipped.

    Args:
        towers: tower (= modality) name -> its decoder config; at least two.
        cross_attention_every: default interval ``i`` for every ordered pair.
        pair_intervals: overrides keyed ``"query<-source"``, e.g. ``{"text<-speech": 1}``.
        input_projection: ``"paper"`` (``ReLU(MLP(e))``), ``"residual"``
            (``e + MLP(e)``, zero-initialised output: a fresh zip equals the towers) or
            ``"none"``.
        input_projection_ratio: hidden width of the input MLP as a multiple of ``d_model``.
        fusion_mlp_ratio: hidden width of the gated feed-forward as a multiple of ``d_model``.
    """

    towers: dict[str, DecoderConfig]
    cross_attention_every: int = 2
    pair_intervals: dict[str, int] = field(default_factory=dict)
    input_projection: str = "residual"
    input_projection_ratio: float = 1.0
    fusion_mlp_ratio: float = 1.0

    def __post_init__(self) -> None:
        if len(self.towers) < 2:
            raise ValueError(f"towers: Zipper needs at least 2 towers, got {list(self.towers)}")
        for name, cfg in self.towers.items():
            if not isinstance(cfg, DecoderConfig):
                raise ValueError(f"towers.{name} must be a DecoderConfig, got {type(cfg).__name__}")
            if not name.isidentifier():
                raise ValueError(f"towers: name {name!r} must be a Python identifier")
        if self.input_projection not in INPUT_PROJECTIONS:
            raise ValueError(
                f"input_projection must be one of {INPUT_PROJECTIONS}, got {self.input_projection!r}"
            )
        if self.input_projection_ratio <= 0 or self.fusion_mlp_ratio <= 0:
            raise ValueError("input_projection_ratio and fusion_mlp_ratio must be positive")
        pairs = {f"{q}<-{s}" for q in self.towers for s in self.towers if q != s}
        for key in self.pair_intervals:
            if key not in pairs:
                raise ValueError(f"pair_intervals: unknown pair {key!r}; allowed: {sorted(pairs)}")
        for key in sorted(pairs):
            query = key.split("<-")[0]
            interval = self.interval(*key.split("<-"))
            depth = self.towers[query].num_layers
            if not 1 <= interval <= depth:
                name = (
                    f"pair_intervals[{key!r}]"
                    if key in self.pair_intervals
                    else ("cross_attention_every")
                )
                raise ValueError(
                    f"{name}={interval} must lie in [1, {depth}] (1 to the depth of tower {query!r})"
                )

    def interval(self, query: str, source: str) -> int:
        return self.pair_intervals.get(f"{query}<-{source}", self.cross_attention_every)


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


class Zipper(nn.Module):
    """N decoder towers zipped with gated cross-attention in both directions."""

    def __init__(self, config: ZipperConfig) -> None:
        super().__init__()
        self.config = config
        self.towers = nn.ModuleDict({n: DecoderTower(c) for n, c in config.towers.items()})
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
        # Lookup tables for the block-by-block schedule.
        self._at: dict[tuple[str, int], list[FusionPoint]] = {}
        self._readers: dict[tuple[str, int], list[FusionPoint]] = {}
        for p in self.points:
            self._at.setdefault((p.query, p.depth), []).append(p)
            self._readers.setdefault((p.source, p.source_depth), []).append(p)

    def _init_fusion(self) -> None:
        """Init of the cross-attention blocks: linear weights normal(0, 0.02), norms one,
        gates zero (set by the block). Input projections initialise themselves."""
        for module in self.fusion["xattn"].modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)

    # -- metadata ----------------------------------------------------------------------------
    @property
    def modalities(self) -> dict[str, Modality]:
        return {
            n: Modality(n, n, c.vocab_size, 0, c.pad_id, c.bos_id, c.eos_id)
            for n, c in self.config.towers.items()
        }

    def block(self, point: FusionPoint) -> GatedCrossAttentionBlock:
        return self.fusion["xattn"][point.key][str(point.depth)]  # type: ignore[return-value]

    def freeze_towers(self, names: Iterable[str]) -> None:
        """Stop gradients to the named towers' own parameters (fusion stays trainable)."""
        for name in names:
            if name not in self.towers:
                raise ValueError(
                    f"freeze_towers: unknown tower {name!r}; allowed: {list(self.towers)}"
                )
            for p in self.towers[name].parameters():
                p.requires_grad_(False)

    def load_tower(self, name: str, tower: DecoderTower) -> None:
        """Copy a pre-trained tower's weights in (strict: same config, same key names).

        To load from disk: ``load_tower(name, load_pretrained(dir, DecoderTower))``.
        """
        if name not in self.towers:
            raise ValueError(f"load_tower: unknown tower {name!r}; allowed: {list(self.towers)}")
        if tower.config != self.config.towers[name]:
            raise ValueError(
                f"load_tower: tower {name!r} config {tower.config} does not match the "
                f"Zipper config {self.config.towers[name]}"
            )
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
    def forward(self, batch: Mapping[str, TowerBatch]) -> dict[str, torch.Tensor]:
        """Logits of every tower present in ``batch``.

        Without caches, ``batch`` holds whole sequences (see
        :func:`~multitower.interleave.collate_interleaved`). With caches, it holds the
        new tokens of the towers that advance; the others contribute through their
        cross-attention caches.

        Returns:
            tower name -> ``(B, T, V)`` logits.
        """
        unknown = [t for t in batch if t not in self.towers]
        if unknown:
            raise ValueError(f"unknown tower(s) {unknown}; allowed: {list(self.towers)}")
        active = [t for t in self.towers if t in batch]
        caching = self.caches_enabled
        proj = self.fusion["input_proj"] if self.config.input_projection != "none" else None
        x: dict[str, torch.Tensor] = {}
        states: dict[tuple[str, int], torch.Tensor] = {}

        def record(tower: str, depth: int, h: torch.Tensor) -> None:
            readers = self._readers.get((tower, depth), [])
            if not readers:
                return
            states[(tower, depth)] = h
            if caching:
                tb = batch[tower]
                for p in readers:
                    block = self.block(p)
                    assert block.kv_cache is not None
                    k, v = block.source_kv(h)  # (B, H, T, Dh)
                    block.kv_cache.update_source(tb.positions, k, v, tb.global_positions, tb.valid)

        def ready(p: FusionPoint) -> bool:
            return p.source not in batch or (p.source, p.source_depth) in states

        def fuse(p: FusionPoint, h: torch.Tensor) -> torch.Tensor:
            block, q = self.block(p), batch[p.query]
            if caching:
                cache = block.kv_cache
                assert cache is not None
                mask = cross_attention_mask(
                    q.global_positions, q.valid, cache.global_positions, cache.valid
                )  # (B, Tq, S)
                return block(h, cache.k, cache.v, mask)
            if p.source not in batch:
                return block(h, None, None, None)
            src = batch[p.source]
            k, v = block.source_kv(states[(p.source, p.source_depth)])  # (B, H, S, Dh)
            mask = cross_attention_mask(
                q.global_positions, q.valid, src.global_positions, src.valid
            )  # (B, Tq, S)
            return block(h, k, v, mask)

        for t in active:
            h = self.towers[t].embed_tokens(batch[t].tokens)  # (B, T, D)
            x[t] = proj[t](h) if proj is not None else h
            record(t, 0, x[t])
        depth = dict.fromkeys(active, 0)
        applied = dict.fromkeys(active, 0)  # fusion blocks applied at the current depth
        positions = {t: None if not caching else batch[t].positions for t in active}
        while True:
            progressed = False
            for t in active:
                layers = self.towers[t].blocks
                while True:
                    todo = self._at.get((t, depth[t]), [])
                    if applied[t] < len(todo):
                        if not ready(todo[applied[t]]):
                            break
                        x[t] = fuse(todo[applied[t]], x[t])
                        applied[t] += 1
                    elif depth[t] < len(layers):
                        x[t] = layers[depth[t]](x[t], positions=positions[t])
                        depth[t] += 1
                        applied[t] = 0
                        record(t, depth[t], x[t])
                    else:
                        break
                    progressed = True
            if all(
                depth[t] == len(self.towers[t].blocks)
                and applied[t] == len(self._at.get((t, depth[t]), []))
                for t in active
            ):
                break
            if not progressed:  # cannot happen with monotone depth alignment
                raise RuntimeError("Zipper fusion schedule is stuck: a cyclic depth alignment")
        return {t: self.towers[t].head(x[t]) for t in active}
