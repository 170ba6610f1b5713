"""multitower: multimodal models composed from single-modality towers.

Two architectures are implemented:

* Zipper (arXiv 2405.18669): independently pre-trained decoder-only towers fused
  with gated cross-attention in both directions.
* MaMMUT (arXiv 2303.16839): one ViT image encoder and one text decoder used in a
  generative (causal + cross-attention) and a contrastive (bidirectional) pass.
"""

__version__ = "0.1.0"
