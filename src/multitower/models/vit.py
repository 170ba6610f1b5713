"""Vision Transformer image encoder (Dosovitskiy et al., 2021), the vision tower of MaMMUT.

Plain torch, no torchvision::

    images (B, 3, S, S)
      -> patch embedding: Conv2d(kernel = stride = patch_size)   (B, D, S/p, S/p)
      -> flatten to patch tokens + learned position embedding     (B, N, D), N = (S/p)^2
      -> num_layers pre-norm blocks:  x + attn(norm(x)),  x + mlp(norm(x))
         (a bidirectional TransformerStack with biases and no rotary positions)
      -> final norm                                               (B, N, D)

There is no class token: MaMMUT pools the image embedding as the mean of the
patch tokens (spec, "contrastive pass") and cross-attends to all of them.
Attention is bidirectional and has no rotary positions: positions come from the
learned absolute embedding, as in the original ViT.

Cropped positional embeddings (``cropped_pos_emb=True``, RO-ViT, arXiv 2305.07011,
section 3.1): the position table is learned on a larger ``(G * k, G * k)`` grid;
each training forward takes a random crop of it (area fraction in
``[0.1, 1]``, aspect ratio in ``[1/2, 2]``, one crop per batch) and resizes it
bilinearly to the ``G x G`` patch grid, so the model sees positions as a
region-level detector later sees them (a whole image is then a crop of a larger
scene). In eval mode the whole table is resized to the grid. Off, the table is
the plain ``(1, N, D)`` parameter and nothing random happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multitower.nn import TransformerStack, check_heads, make_norm
from multitower.nn.checks import check_numbers
from multitower.nn.init import init_transformer_
from multitower.nn.norms import NORM_KINDS


@dataclass(frozen=True)
class ViTConfig:
    """Size of a ViT image encoder.

    Args:
        image_size: input height and width ``S`` in pixels (square images).
        patch_size: side ``p`` of a square patch; must divide ``image_size``.
        d_model: token width ``D``.
        num_layers: transformer blocks.
        num_heads: attention heads; must divide ``d_model``.
        mlp_ratio: MLP hidden width / ``d_model``.
        channels: input channels (3 for RGB).
        norm: ``"layer"`` (LayerNorm, the ViT default) or ``"rms"``.
        cropped_pos_emb: learn the position table at ``pos_emb_upsample`` times the
            grid and feed a random crop of it in training (RO-ViT); see the module docstring.
        pos_emb_upsample: side of the learned table over the patch grid side (an int >= 1,
            used only with ``cropped_pos_emb``).
    """

    image_size: int = 224
    patch_size: int = 16
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    channels: int = 3
    norm: str = "layer"
    cropped_pos_emb: bool = False
    pos_emb_upsample: int = 4

    def __post_init__(self) -> None:
        check_numbers(
            self,
            ints=(
                "image_size",
                "patch_size",
                "d_model",
                "num_layers",
                "num_heads",
                "channels",
                "pos_emb_upsample",
            ),
            floats=("mlp_ratio",),
        )
        for name in ("image_size", "patch_size", "d_model", "num_layers", "num_heads", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ViTConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.patch_size={self.patch_size} must divide image_size={self.image_size}"
            )
        check_heads(self.d_model, self.num_heads)
        if not self.mlp_ratio > 0:
            raise ValueError(f"ViTConfig.mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.norm not in NORM_KINDS:
            raise ValueError(f"ViTConfig.norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if not isinstance(self.pos_emb_upsample, int) or self.pos_emb_upsample < 1:
            raise ValueError(
                f"ViTConfig.pos_emb_upsample must be an int >= 1, got {self.pos_emb_upsample!r}"
            )

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Image tokens ``N``."""
        return self.grid_size**2

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.d_model)

    @property
    def pos_grid_size(self) -> int:
        """Side of the learned position table (the grid, or larger with ``cropped_pos_emb``)."""
        return self.grid_size * (self.pos_emb_upsample if self.cropped_pos_emb else 1)


class ViT(nn.Module):
    """``images (B, C, S, S) -> patch tokens (B, N, D)`` (see the module docstring)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.patch_embed = nn.Conv2d(
            config.channels, d, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pos_grid_size**2, d))
        # Biases everywhere and no rotary positions, as the original ViT.
        self.blocks = TransformerStack(
            config.num_layers,
            d,
            config.num_heads,
            config.mlp_hidden,
            norm=config.norm,
            rope_base=None,
            bias=True,
        )
        self.norm = make_norm(config.norm, d)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise every parameter.

        * patch embedding (as a linear map of the flattened patch), position
          embedding, q/k/v projections and ``mlp.fc_in``: normal(0, 0.02);
        * ``attn.out_proj`` and ``mlp.fc_out``: normal(0, 0.02 / sqrt(2 * num_layers)),
          so the residual stream does not grow with depth;
        * biases: zero; norm scales: one (LayerNorm shifts: zero).
        """
        nn.init.normal_(self.pos_embed, std=0.02)
        init_transformer_(self, self.config.num_layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images into patch tokens.

        Args:
            images: ``(B, channels, image_size, image_size)`` float pixels (normalised).

        Returns:
            ``(B, num_patches, d_model)`` tokens after the final norm.

        Raises:
            ValueError: wrong rank, channel count or spatial size.
        """
        cfg = self.config
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"ViT expects images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"ViT expects float images, got {images.dtype}")
        x = self.patch_embed(images.to(self.patch_embed.weight.dtype))  # (B, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order
        x = x + self.positions()  # (B, N, D)
        return self.encode_tokens(x)

    def positions(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The position embedding added to the patch tokens: ``(1, N, D)``.

        Without ``cropped_pos_emb`` this is the learned table itself. With it, a
        random crop of the larger table (in training mode; drawn from
        ``generator``, default torch's global generator) or the whole table (in
        eval mode), resized bilinearly to the patch grid.
        """
        cfg = self.config
        if not cfg.cropped_pos_emb:
            return self.pos_embed
        big, grid = cfg.pos_grid_size, cfg.grid_size
        table = self.pos_embed.reshape(1, big, big, -1).permute(0, 3, 1, 2)  # (1, D, G*k, G*k)
        if self.training:
            y0, x0, h, w = _random_crop(big, generator)
            table = table[:, :, y0 : y0 + h, x0 : x0 + w]  # (1, D, h, w)
        table = F.interpolate(table, size=(grid, grid), mode="bilinear", align_corners=False)
        return table.flatten(2).transpose(1, 2)  # (1, N, D), row-major like the patches

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The transformer trunk on already embedded tokens (positions added).

        Video encoders (:mod:`multitower.models.video`) embed tubes or frames
        themselves and call this: the blocks (bidirectional) and the final norm.

        Args:
            tokens: ``(B, N, d_model)``; ``N`` may be any length.

        Returns:
            ``(B, N, d_model)`` after the final norm.
        """
        if tokens.dim() != 3 or tokens.shape[-1] != self.config.d_model:
            raise ValueError(
                f"ViT.encode_tokens expects (B, N, {self.config.d_model}) tokens, "
                f"got {tuple(tokens.shape)}"
            )
        x = self.blocks(tokens, causal=False)  # (B, N, D)
        return self.norm(x)


def _random_crop(side: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """A crop ``(y0, x0, h, w)`` of a ``side x side`` grid: area fraction uniform in
    [0.1, 1], aspect ratio (w / h) log-uniform in [1/2, 2] (RO-ViT's ranges), clipped
    to the grid; at least one cell on a side."""
    u = torch.rand(4, generator=generator).tolist()
    area = 0.1 + 0.9 * u[0]
    ratio = math.exp(math.log(0.5) + (math.log(2.0) - math.log(0.5)) * u[1])
    h = max(1, min(side, round(side * math.sqrt(area / ratio))))
    w = max(1, min(side, round(side * math.sqrt(area * ratio))))
    y0 = min(int(u[2] * (side - h + 1)), side - h)
    x0 = min(int(u[3] * (side - w + 1)), side - w)
    return y0, x0, h, w
