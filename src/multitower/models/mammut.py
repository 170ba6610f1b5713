"""MaMMUT: one ViT image encoder and one text decoder used in two passes (arXiv 2303.16839).

The text decoder is a :class:`~multitower.nn.TransformerStack` of pre-norm blocks;
after some of them (every ``cross_attn_every``-th, or an explicit list) sits a
pre-norm residual :class:`~multitower.nn.CrossAttentionBlock` to the image tokens. The same weights
serve both passes (spec, "Two passes through the same decoder")::

                              ┌──────── contrastive pass ────────┐ ┌──────── generative pass ────────┐
    tokens (B, T)             embed                                embed
                              block 0  (bidirectional, pad mask)   block 0  (causal)
                              block 1                              block 1  -> x + xattn(norm(x), img)
                              ...      (cross-attention OFF)       ...
                              norm -> masked mean -> text_proj     norm -> tied head -> logits (B, T, V)
                                      -> L2 normalise (B, E)
    images (B, 3, S, S) -> ViT -> patch tokens (B, N, Dv) -> mean -> image_proj -> L2 normalise (B, E)
                                         └─> per cross layer: k, v (computed once per image)

The contrastive pass never reads the image; the generative pass reads it only
through the cross-attention keys/values, which :meth:`MaMMUT.image_kv` computes
once per image so that decoding (greedy or beam search) reuses them at every step.
The model returns features and logits; losses live in :mod:`multitower.losses`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multitower.models.decoder import check_token_range
from multitower.models.vit import ViT, ViTConfig
from multitower.nn import CrossAttentionBlock, TransformerStack, check_heads, make_norm
from multitower.nn.checks import check_numbers
from multitower.nn.init import init_transformer_
from multitower.nn.norms import NORM_KINDS


@dataclass(frozen=True)
class MaMMUTConfig:
    """A MaMMUT model: vision encoder, text decoder and the shared embedding space.

    Args:
        vocab_size: text vocabulary size ``V``.
        d_model: text decoder width ``D``.
        num_layers: text decoder layers.
        num_heads: text decoder heads (``D / num_heads`` must be even: rotary positions).
        vision: the :class:`ViTConfig` of the image encoder.
        cross_attn_every: a cross-attention layer after every k-th decoder layer,
            i.e. after layers ``i`` (0-based) with ``(i + 1) % k == 0``; k lies in
            ``[1, num_layers]`` (1 = every layer, ``num_layers`` = only the last).
            Ignored when ``cross_attn_layers`` is given.
        cross_attn_layers: explicit 0-based decoder layers followed by cross-attention.
            An empty list gives a decoder that never sees the image (an ablation).
        embed_dim: width ``E`` of the shared image-text embedding.
        max_seq_len: longest text sequence (prefix plus generated tokens).
        mlp_ratio: decoder MLP hidden width / ``d_model``.
        norm: decoder norm, ``"rms"`` or ``"layer"``.
        rope_base: rotary base of the decoder's self-attention.
        init_temperature: initial contrastive temperature (logit scale ``1 / T``).
        max_logit_scale: the learnable logit scale is clamped to ``[1, max_logit_scale]``.
        pad_id, bos_id, eos_id: special token ids inside ``vocab_size``.
    """

    vocab_size: int
    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 4
    vision: ViTConfig = field(default_factory=ViTConfig)
    cross_attn_every: int = 2
    cross_attn_layers: tuple[int, ...] | None = None
    embed_dim: int = 256
    max_seq_len: int = 64
    mlp_ratio: float = 4.0
    norm: str = "rms"
    rope_base: float = 10000.0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "d_model", "num_layers", "num_heads", "embed_dim", "max_seq_len")
        check_numbers(
            self,
            ints=(*sizes, "cross_attn_every", "pad_id", "bos_id", "eos_id"),
            floats=("mlp_ratio", "rope_base", "init_temperature", "max_logit_scale"),
        )
        for name in sizes:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MaMMUTConfig.{name} must be a positive int, got {value!r}")
        check_heads(self.d_model, self.num_heads)
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"MaMMUTConfig: head_dim = d_model / num_heads = {self.d_model // self.num_heads} "
                "must be even for rotary positions"
            )
        if not isinstance(self.vision, ViTConfig):
            raise ValueError(f"MaMMUTConfig.vision must be a ViTConfig, got {self.vision!r}")
        if not 1 <= self.cross_attn_every <= self.num_layers:
            raise ValueError(
                f"MaMMUTConfig.cross_attn_every must lie in [1, num_layers={self.num_layers}], "
                f"got {self.cross_attn_every}"
            )
        if self.cross_attn_layers is not None:
            layers = tuple(int(i) for i in self.cross_attn_layers)
            bad = [i for i in layers if not 0 <= i < self.num_layers]
            if bad or len(set(layers)) != len(layers):
                raise ValueError(
                    "MaMMUTConfig.cross_attn_layers must be distinct 0-based layer indices in "
                    f"[0, {self.num_layers}), got {list(self.cross_attn_layers)}"
                )
            object.__setattr__(self, "cross_attn_layers", tuple(sorted(layers)))
        if self.norm not in NORM_KINDS:
            raise ValueError(f"MaMMUTConfig.norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"MaMMUTConfig.mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0 < self.init_temperature <= 1:
            raise ValueError(
                f"MaMMUTConfig.init_temperature must lie in (0, 1], got {self.init_temperature}"
            )
        if not self.max_logit_scale >= 1.0 / self.init_temperature:
            raise ValueError(
                f"MaMMUTConfig.max_logit_scale={self.max_logit_scale} must be at least "
                f"1 / init_temperature = {1.0 / self.init_temperature:.4g}"
            )
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"MaMMUTConfig.{name} must lie in [0, vocab_size={self.vocab_size}), got {value}"
                )

    @property
    def cross_layers(self) -> tuple[int, ...]:
        """0-based decoder layers followed by cross-attention, ascending."""
        if self.cross_attn_layers is not None:
            return self.cross_attn_layers
        k = self.cross_attn_every
        return tuple(i for i in range(self.num_layers) if (i + 1) % k == 0)

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.d_model)


class ImageKV(NamedTuple):
    """Cross-attention keys and values of a batch of images, one pair per cross layer.

    ``keys[j]`` and ``values[j]`` are ``(B, H, N, Dh)`` for decoder layer ``layers[j]``.
    """

    layers: tuple[int, ...]
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    def repeat_interleave(self, repeats: int) -> ImageKV:
        """Each image's keys/values ``repeats`` times in a row (beam search: B -> B * K)."""
        return ImageKV(
            self.layers,
            tuple(k.repeat_interleave(repeats, dim=0) for k in self.keys),
            tuple(v.repeat_interleave(repeats, dim=0) for v in self.values),
        )

    def index_select(self, index: torch.Tensor) -> ImageKV:
        """Rows ``index`` ``(B',)`` of every key/value (several questions about one image)."""
        return ImageKV(
            self.layers,
            tuple(k.index_select(0, index) for k in self.keys),
            tuple(v.index_select(0, index) for v in self.values),
        )


class MaMMUTOutput(NamedTuple):
    """Both passes of one training forward.

    Attributes:
        image_features: ``(B, E)`` L2-normalised image embeddings.
        text_features: ``(B, E)`` L2-normalised text embeddings (contrastive pass).
        caption_logits: ``(B, T, V)`` next-token logits (generative pass).
        logit_scale: 0-dim clamped contrastive logit scale ``1 / temperature``.
    """

    image_features: torch.Tensor
    text_features: torch.Tensor
    caption_logits: torch.Tensor
    logit_scale: torch.Tensor


class MaMMUT(nn.Module):
    """Image encoder + two-pass text decoder (see the module docstring)."""

    def __init__(self, config: MaMMUTConfig) -> None:
        super().__init__()
        self.config = config
        d, dv = config.d_model, config.vision.d_model
        self.vision = ViT(config.vision)
        self.image_proj = nn.Linear(dv, config.embed_dim, bias=False)
        self.embed = nn.Embedding(config.vocab_size, d)
        self.blocks = TransformerStack(
            config.num_layers,
            d,
            config.num_heads,
            config.mlp_hidden,
            norm=config.norm,
            rope_base=config.rope_base,
        )
        self.cross = nn.ModuleDict(
            {
                str(i): CrossAttentionBlock(d, config.num_heads, dv, norm=config.norm)
                for i in config.cross_layers
            }
        )
        self.norm = make_norm(config.norm, d)
        self.text_proj = nn.Linear(d, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise every text-side parameter (the ViT initialises itself, see :class:`ViT`).

        * token embedding (also the tied output head), q/k/v projections and
          ``mlp.fc_in``: normal(0, 0.02);
        * ``out_proj`` (self- and cross-attention) and ``mlp.fc_out``:
          normal(0, 0.02 / sqrt(2 * num_layers)), GPT-2's residual scaling;
        * ``image_proj`` / ``text_proj``: normal(0, width^-0.5) (as CLIP);
        * norm scales: one (LayerNorm shifts zero); ``logit_scale``: ``log(1 / init_temperature)``.
        """
        nn.init.normal_(self.embed.weight, std=0.02)
        for part in (self.blocks, self.cross, self.norm):
            init_transformer_(part, self.config.num_layers)
        nn.init.normal_(self.image_proj.weight, std=self.config.vision.d_model**-0.5)
        nn.init.normal_(self.text_proj.weight, std=self.config.d_model**-0.5)
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / self.config.init_temperature))

    # -- image side ------------------------------------------------------------------------
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` images -> ``(B, N, Dv)`` patch tokens."""
        return self.vision(images)

    def pool_image(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(B, N, Dv)`` -> L2-normalised image embeddings ``(B, E)``."""
        return F.normalize(self.image_proj(image_tokens.mean(dim=1)), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` images -> L2-normalised embeddings ``(B, E)`` (mean pool + projection)."""
        return self.pool_image(self.image_tokens(images))

    def image_kv(self, image_tokens: torch.Tensor) -> ImageKV:
        """Cross-attention keys/values of every cross layer, computed once per image.

        Args:
            image_tokens: ``(B, N, Dv)`` from :meth:`image_tokens`.
        """
        layers = self.config.cross_layers
        pairs = [self.cross[str(i)].attn.project_kv(image_tokens) for i in layers]
        return ImageKV(layers, tuple(k for k, _ in pairs), tuple(v for _, v in pairs))

    # -- text side ---------------------------------------------------------------------------
    def logit_scale_value(self) -> torch.Tensor:
        """The contrastive logit scale ``exp(logit_scale)`` clamped to ``[1, max_logit_scale]``."""
        return self.logit_scale.clamp(0.0, math.log(self.config.max_logit_scale)).exp()

    def _check_tokens(self, tokens: torch.Tensor, name: str) -> None:
        if tokens.dim() != 2:
            raise ValueError(f"{name}: tokens must have shape (B, T), got {tuple(tokens.shape)}")
        check_token_range(tokens, self.config.vocab_size, name)

    def _decode(
        self,
        tokens: torch.Tensor,
        *,
        image: ImageKV | None,
        positions: torch.Tensor | None,
        causal: bool,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The shared decoder stack: ``(B, T)`` ids -> ``(B, T, D)`` after the final norm.

        ``image=None`` switches every cross-attention layer off.
        """
        h = self.embed(tokens)  # (B, T, D)
        cross = (
            {}
            if image is None
            else {
                i: partial(self.cross[str(i)], k=k, v=v)
                for i, k, v in zip(image.layers, image.keys, image.values)
            }
        )
        h = self.blocks(
            h,
            positions=positions,
            causal=causal,
            key_padding_mask=key_padding_mask,
            after_block=cross,
        )  # (B, T, D)
        return self.norm(h)

    def encode_text(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Contrastive pass: bidirectional, padding masked, no cross-attention.

        Args:
            tokens: ``(B, T)`` ids.
            padding_mask: ``(B, T)`` True for real tokens; default ``tokens != pad_id``.

        Returns:
            ``(B, E)`` L2-normalised text embeddings: the masked mean of the final
            hidden states over real tokens, projected.

        Raises:
            ValueError: bad token ids or shapes, a row without any real token, or
                KV caches set up (the contrastive pass never uses them).
        """
        self._check_tokens(tokens, "encode_text")
        if self.caches_enabled:
            raise ValueError("encode_text: KV caches are set up; call remove_caches() first")
        mask = tokens != self.config.pad_id if padding_mask is None else padding_mask.bool()
        if mask.shape != tokens.shape:
            raise ValueError(
                f"encode_text: padding_mask shape {tuple(mask.shape)} != tokens shape "
                f"{tuple(tokens.shape)}"
            )
        counts = mask.sum(dim=1, keepdim=True)  # (B, 1)
        if bool((counts == 0).any()):
            raise ValueError("encode_text: every text needs at least one non-padding token")
        h = self._decode(tokens, image=None, positions=None, causal=False, key_padding_mask=mask)
        m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * m).sum(dim=1) / counts.to(h.dtype)  # (B, D)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def caption_logits(
        self,
        image: torch.Tensor | ImageKV,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generative pass: causal self-attention and cross-attention to the image.

        Args:
            image: image tokens ``(B, N, Dv)`` or precomputed :class:`ImageKV`.
            tokens: ``(B, T)`` ids.
            positions: ``(B, T)`` positions, required with KV caches (they are the
                cache slots written); default ``arange(T)``.

        Returns:
            ``(B, T, V)`` next-token logits (tied head).

        Raises:
            ValueError: bad ids or shapes, mismatched batch sizes, or a sequence
                longer than ``max_seq_len``.
        """
        if tokens.dim() != 2:
            raise ValueError(
                f"caption_logits: tokens must have shape (B, T), got {tuple(tokens.shape)}"
            )
        if not self.caches_enabled:
            # Skipped while decoding with caches: a device sync per step, and decode
            # tokens come from checked prefixes or the sampler.
            check_token_range(tokens, self.config.vocab_size, "caption_logits")
        kv = self.image_kv(image) if isinstance(image, torch.Tensor) else image
        if kv.keys and kv.batch != tokens.shape[0]:
            raise ValueError(
                f"caption_logits: {kv.batch} images but {tokens.shape[0]} token sequences"
            )
        if positions is None:
            if self.caches_enabled:
                raise ValueError("caption_logits: pass positions when KV caches are set up")
            if tokens.shape[1] > self.config.max_seq_len:
                raise ValueError(
                    f"caption_logits: sequence length {tokens.shape[1]} exceeds "
                    f"max_seq_len={self.config.max_seq_len}"
                )
        h = self._decode(tokens, image=kv, positions=positions, causal=True, key_padding_mask=None)
        return F.linear(h, self.embed.weight)  # (B, T, V)

    def forward(
        self,
        images: torch.Tensor,
        text_tokens: torch.Tensor,
        caption_tokens: torch.Tensor,
        *,
        text_padding_mask: torch.Tensor | None = None,
        contrastive_first: bool = True,
    ) -> MaMMUTOutput:
        """Both training passes over one batch; the ViT runs once.

        Args:
            images: ``(B, 3, S, S)``.
            text_tokens: ``(B, T1)`` texts for the contrastive pass.
            caption_tokens: ``(B, T2)`` decoder inputs for the generative pass
                (already shifted: logits at t predict token t + 1).
            text_padding_mask: ``(B, T1)`` True for real tokens; default ``!= pad_id``.
            contrastive_first: run the contrastive pass before the generative one.
                The results do not depend on the order (nothing random runs in
                the decoder); the flag exists so a training task can shuffle it.
        """
        return self.two_passes(
            self.image_tokens(images),
            text_tokens,
            caption_tokens,
            text_padding_mask,
            contrastive_first=contrastive_first,
        )

    def two_passes(
        self,
        tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        caption_tokens: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
        *,
        contrastive_first: bool = True,
    ) -> MaMMUTOutput:
        """Both training passes given the visual tokens ``(B, N, Dv)`` (of images or
        of video clips): the pooled visual feature, the contrastive text pass and
        the captioning pass, in the order ``contrastive_first`` asks for."""
        visual_features = self.pool_image(tokens)  # (B, E)
        if contrastive_first:
            text_features = self.encode_text(text_tokens, text_padding_mask)
            logits = self.caption_logits(tokens, caption_tokens)
        else:
            logits = self.caption_logits(tokens, caption_tokens)
            text_features = self.encode_text(text_tokens, text_padding_mask)
        return MaMMUTOutput(visual_features, text_features, logits, self.logit_scale_value())

    # -- caches ------------------------------------------------------------------------------
    def setup_caches(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        """Preallocate a self-attention KV cache of ``max_len`` slots per decoder layer.

        Raises:
            ValueError: ``max_len`` above ``max_seq_len``.
        """
        if max_len > self.config.max_seq_len:
            raise ValueError(
                f"setup_caches: max_len={max_len} exceeds max_seq_len={self.config.max_seq_len}"
            )
        dtype = dtype or self.embed.weight.dtype
        device = device or self.embed.weight.device
        self.blocks.setup_caches(batch, max_len, dtype=dtype, device=device)

    def reset_caches(self) -> None:
        """Zero every KV cache (keeps the allocation)."""
        self.blocks.reset_caches()

    def remove_caches(self) -> None:
        """Drop the KV caches: the decoder runs on whole sequences again."""
        self.blocks.remove_caches()

    def reorder_caches(self, index: torch.Tensor) -> None:
        """Reorder the batch rows of every KV cache: row ``i`` becomes old row ``index[i]``."""
        self.blocks.reorder_caches(index)

    @property
    def caches_enabled(self) -> bool:
        return self.blocks.caches_enabled
