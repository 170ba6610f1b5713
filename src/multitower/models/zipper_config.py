"""The config of a Zipper (:class:`~multitower.models.zipper.Zipper`): which towers, how they are zipped.

Kept apart from the model so that a config can be built and checked without
importing torch; :mod:`multitower.models.zipper` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from multitower.models.decoder_config import DecoderConfig
from multitower.models.hf_tower_config import HFTowerConfig
from multitower.nn.checks import check_numbers

INPUT_PROJECTIONS = ("paper", "residual", "none")


@dataclass(frozen=True)
class ZipperConfig:
    """How towers are zipped.

    Args:
        towers: tower (= modality) name -> its config, at least two: a
            :class:`DecoderConfig` (the project's own tower) or an
            :class:`HFTowerConfig` (a Hugging Face causal LM).
        cross_attention_every: default interval ``i`` for every ordered pair.
        pair_intervals: overrides keyed ``"query<-source"``, e.g. ``{"text<-speech": 1}``.
        input_projection: ``"paper"`` (``ReLU(MLP(e))``), ``"residual"``
            (``e + MLP(e)``, zero-initialised output: a fresh zip equals the towers) or
            ``"none"``.
        input_projection_ratio: hidden width of the input MLP as a multiple of ``d_model``.
        fusion_mlp_ratio: hidden width of the gated feed-forward as a multiple of ``d_model``.
        position_scales: tower -> the factor its tower-local token positions are
            multiplied by to place its tokens on one axis shared by every tower;
            cross-attention then rotates queries and keys by these positions (RoPE,
            base ``cross_rope_base``), so that a query can find the source tokens
            that sit near it in time (text token ``i`` near speech unit
            ``i * units_per_text_token``). Empty (the default): position-free
            cross-attention, as in the paper. Not a paper setting: the paper says
            nothing on positions in cross-attention.
        cross_rope_base: rotary base of the positioned cross-attention.
        cross_distance_bias: with ``position_scales``, also subtract
            ``slope_h * |p_query - p_key|`` from every cross-attention logit of head
            ``h`` (ALiBi, arXiv 2108.12409, on the shared axis): a diagonal prior at
            step 0 instead of one rotary attention must learn to use. Slopes are
            learned per block and head, initialised ``2 ** (-8 (h + 1) / H)``. Not a
            paper setting.
    """

    towers: dict[str, DecoderConfig | HFTowerConfig]
    cross_attention_every: int = 2
    pair_intervals: dict[str, int] = field(default_factory=dict)
    input_projection: str = "residual"
    input_projection_ratio: float = 1.0
    fusion_mlp_ratio: float = 1.0
    position_scales: dict[str, float] = field(default_factory=dict)
    cross_rope_base: float = 10000.0
    cross_distance_bias: bool = False

    def __post_init__(self) -> None:
        if len(self.towers) < 2:
            raise ValueError(f"towers: Zipper needs at least 2 towers, got {list(self.towers)}")
        for name, cfg in self.towers.items():
            if not isinstance(cfg, DecoderConfig | HFTowerConfig):
                raise ValueError(
                    f"towers.{name} must be a DecoderConfig or an HFTowerConfig, "
                    f"got {type(cfg).__name__}"
                )
            if not name.isidentifier():
                raise ValueError(f"towers: name {name!r} must be a Python identifier")
        check_numbers(
            self,
            ints=("cross_attention_every",),
            floats=("input_projection_ratio", "fusion_mlp_ratio", "cross_rope_base"),
        )
        for key, interval in self.pair_intervals.items():
            if isinstance(interval, bool) or not isinstance(interval, int):
                raise ValueError(
                    f"ZipperConfig.pair_intervals[{key!r}] must be an int, got {interval!r} "
                    f"({type(interval).__name__})"
                )
        if self.input_projection not in INPUT_PROJECTIONS:
            raise ValueError(
                f"input_projection must be one of {INPUT_PROJECTIONS}, got {self.input_projection!r}"
            )
        if self.input_projection_ratio <= 0 or self.fusion_mlp_ratio <= 0:
            raise ValueError("input_projection_ratio and fusion_mlp_ratio must be positive")
        if self.position_scales:
            if set(self.position_scales) != set(self.towers):
                raise ValueError(
                    f"position_scales must give every tower {sorted(self.towers)} a scale, "
                    f"got {sorted(self.position_scales)}"
                )
            for name, scale in self.position_scales.items():
                if not isinstance(scale, int | float) or isinstance(scale, bool) or scale <= 0:
                    raise ValueError(
                        f"position_scales[{name!r}]={scale!r} must be a positive number"
                    )
        if not isinstance(self.cross_distance_bias, bool):
            raise ValueError(
                f"cross_distance_bias must be true or false, got {self.cross_distance_bias!r}"
            )
        if self.cross_rope_base <= 1:
            raise ValueError(f"cross_rope_base={self.cross_rope_base} must be greater than 1")
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
