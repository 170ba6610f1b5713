"""Caption and answer generation for MaMMUT: greedy/sampled decoding and beam search.

Both loops run outside the model and ask a :class:`_SequenceDecoder` for the
next-token logits of a batch of growing sequences:

* cached (the default): the image keys/values of every cross-attention layer
  are computed once per image (:meth:`~multitower.models.mammut.MaMMUT.image_kv`;
  beam search repeats them per beam and never recomputes them); the prefix is
  run once to fill the self-attention KV caches; every later step feeds one
  token per sequence. Beam search reorders the caches when beams are pruned.
* uncached (``use_cache=False``): the whole sequence is run again at every step,
  the readable reference the tests compare the cached path with.

Prefixes may differ in length (VQA: the question is the prefix). They are
right-padded; each sequence keeps its own position, so a sequence with a short
prefix writes its first generated token into the cache slot right after its
prefix, over the padding the prefill wrote there, and never attends to a slot
beyond its own position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from multitower.data.padding import pad_right
from multitower.generation.sampling import sample_next_token
from multitower.models.mammut import ImageKV, MaMMUT


def _check_prefixes(prefixes: Sequence[Sequence[int]], batch: int, vocab_size: int) -> None:
    if len(prefixes) != batch:
        raise ValueError(f"got {len(prefixes)} prefixes for {batch} images")
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix needs at least one token (start captions with bos_id)")
    bad = [t for p in prefixes for t in p if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prefix token id {bad[0]} is outside the vocabulary [0, {vocab_size})")


class _SequenceDecoder:
    """Growing token sequences of a batch and the next-token logits after each.

    Args:
        model: the MaMMUT model.
        image: the images' cross-attention keys/values, one row per sequence.
        prefixes: per sequence, its prefix ids.
        max_new_tokens: how many tokens may be appended.
        use_cache: KV-cached decoding, or the whole sequence at every step.
    """

    def __init__(
        self,
        model: MaMMUT,
        image: ImageKV,
        prefixes: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        use_cache: bool,
    ) -> None:
        self.model = model
        self.image = image
        self.use_cache = use_cache
        device = model.embed.weight.device
        batch = len(prefixes)
        self.prefix_lengths = torch.tensor([len(p) for p in prefixes], device=device)  # (B,)
        self.max_prefix = int(self.prefix_lengths.max())
        total = self.max_prefix + max_new_tokens
        if total > model.config.max_seq_len:
            raise ValueError(
                f"longest prefix ({self.max_prefix}) + max_new_tokens ({max_new_tokens}) = {total} "
                f"exceeds max_seq_len={model.config.max_seq_len}"
            )
        # (B, total): the prefixes, then pad slots the decoding fills
        self.tokens = pad_right(prefixes, model.config.pad_id, min_len=total).to(device)
        self.lengths = self.prefix_lengths.clone()  # (B,) tokens so far
        self._prefilled = False
        if use_cache:
            model.setup_caches(batch, total)

    def close(self) -> None:
        if self.use_cache:
            self.model.remove_caches()

    def logits(self) -> torch.Tensor:
        """``(B, V)`` logits of the token following each sequence."""
        rows = torch.arange(self.tokens.shape[0], device=self.tokens.device)
        if not self.use_cache:
            width = int(self.lengths.max())
            out = self.model.caption_logits(self.image, self.tokens[:, :width])  # (B, W, V)
            return out[rows, self.lengths - 1]
        if not self._prefilled:
            self._prefilled = True
            width = self.max_prefix
            positions = torch.arange(width, device=self.tokens.device).expand(len(rows), width)
            out = self.model.caption_logits(
                self.image, self.tokens[:, :width], positions=positions
            )  # (B, P, V)
            return out[rows, self.lengths - 1]
        last = (self.lengths - 1).unsqueeze(1)  # (B, 1) position of each last token
        step = self.tokens.gather(1, last)  # (B, 1)
        return self.model.caption_logits(self.image, step, positions=last)[:, 0]  # (B, V)

    def append(self, next_tokens: torch.Tensor) -> None:
        """Append one token ``(B,)`` to every sequence."""
        rows = torch.arange(self.tokens.shape[0], device=self.tokens.device)
        self.tokens[rows, self.lengths] = next_tokens
        self.lengths = self.lengths + 1

    def reorder(self, index: torch.Tensor) -> None:
        """Sequence ``i`` becomes old sequence ``index[i]`` (beam pruning)."""
        self.tokens = self.tokens.index_select(0, index)
        self.lengths = self.lengths.index_select(0, index)
        self.prefix_lengths = self.prefix_lengths.index_select(0, index)
        if self.use_cache:
            self.model.reorder_caches(index)

    def generated(self, row: int) -> list[int]:
        """The tokens appended to sequence ``row``, up to (not including) the first eos."""
        start, end = int(self.prefix_lengths[row]), int(self.lengths[row])
        out: list[int] = []
        for token in self.tokens[row, start:end].tolist():
            if token == self.model.config.eos_id:
                break
            out.append(token)
        return out


def _image_kv(model: MaMMUT, image: torch.Tensor | ImageKV) -> ImageKV:
    return model.image_kv(image) if isinstance(image, torch.Tensor) else image


@torch.no_grad()
def generate_greedy(
    model: MaMMUT,
    image: torch.Tensor | ImageKV,
    prefixes: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    use_cache: bool = True,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Greedy (or sampled) continuation of each prefix, conditioned on its image.

    Args:
        model: a MaMMUT model (put it in eval mode).
        image: image tokens ``(B, N, Dv)`` or their precomputed :class:`ImageKV`.
        prefixes: per image, the prefix ids (``[bos]`` for a caption; bos +
            question + separator for VQA).
        max_new_tokens: most tokens generated per sequence.
        use_cache: KV-cached decoding; False runs the uncached reference.
        temperature, top_k, top_p, generator: see :func:`sample_next_token`
            (``temperature=0`` is greedy).

    Returns:
        Per image, the generated ids without the prefix, cut before the first eos.

    Raises:
        ValueError: mismatched counts, an empty prefix, or a length above
            ``max_seq_len``.
    """
    kv = _image_kv(model, image)
    _check_prefixes(prefixes, len(prefixes) if not kv.keys else kv.batch, model.config.vocab_size)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    cfg = model.config
    decoder = _SequenceDecoder(model, kv, prefixes, max_new_tokens, use_cache=use_cache)
    try:
        done = torch.zeros(len(prefixes), dtype=torch.bool, device=decoder.tokens.device)
        for _ in range(max_new_tokens):
            logits = decoder.logits()  # (B, V)
            next_tokens = sample_next_token(logits, generator, temperature, top_k, top_p)
            next_tokens = torch.where(done, torch.full_like(next_tokens, cfg.pad_id), next_tokens)
            decoder.append(next_tokens)
            done = done | (next_tokens == cfg.eos_id)
            if bool(done.all()):
                break
        return [decoder.generated(b) for b in range(len(prefixes))]
    finally:
        decoder.close()


@torch.no_grad()
def generate_beam(
    model: MaMMUT,
    image: torch.Tensor | ImageKV,
    prefixes: Sequence[Sequence[int]],
    *,
    beam_size: int = 3,
    max_new_tokens: int,
    length_penalty: float = 0.6,
    use_cache: bool = True,
) -> list[list[int]]:
    """Beam search continuation of each prefix, conditioned on its image.

    Every image keeps ``beam_size`` beams. A beam that emits eos is finished: it
    keeps its slot and its score (it can only be extended by padding at log
    probability 0). The search stops when every beam is finished or after
    ``max_new_tokens`` steps; the answer is the beam with the best
    ``sum log p / length ** length_penalty`` (length counts the eos).

    Args:
        model: a MaMMUT model (eval mode).
        image: image tokens ``(B, N, Dv)`` or their :class:`ImageKV`; the keys and
            values are repeated per beam once, never recomputed.
        prefixes: per image, the prefix ids.
        beam_size: beams per image (1 equals greedy decoding).
        max_new_tokens: most tokens generated per beam.
        length_penalty: exponent of the length normalisation (0: raw sum).
        use_cache: KV-cached decoding (caches reordered on pruning); False runs
            the uncached reference.

    Returns:
        Per image, the best beam's ids without the prefix, cut before eos.

    Raises:
        ValueError: bad counts, ``beam_size`` < 1 or larger than the vocabulary.
    """
    kv = _image_kv(model, image)
    batch = len(prefixes) if not kv.keys else kv.batch
    cfg = model.config
    _check_prefixes(prefixes, batch, cfg.vocab_size)
    if not 1 <= beam_size <= cfg.vocab_size:
        raise ValueError(f"beam_size must lie in [1, vocab_size={cfg.vocab_size}], got {beam_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    K = beam_size
    beam_prefixes = [p for p in prefixes for _ in range(K)]
    decoder = _SequenceDecoder(
        model, kv.repeat_interleave(K), beam_prefixes, max_new_tokens, use_cache=use_cache
    )
    try:
        device = decoder.tokens.device
        scores = torch.zeros(batch, K, device=device)  # (B, K)
        scores[:, 1:] = float("-inf")  # all beams start equal: expand only the first
        finished = torch.zeros(batch * K, dtype=torch.bool, device=device)  # (B*K,)
        gen_lengths = torch.zeros(batch * K, device=device)  # tokens generated, eos included
        offsets = (torch.arange(batch, device=device) * K).unsqueeze(1)  # (B, 1)
        for _ in range(max_new_tokens):
            logp = torch.log_softmax(decoder.logits().float(), dim=-1)  # (B*K, V)
            V = logp.shape[-1]
            # A finished beam continues only with padding, at no cost.
            pad_only = torch.full_like(logp, float("-inf"))
            pad_only[:, cfg.pad_id] = 0.0
            logp = torch.where(finished.unsqueeze(1), pad_only, logp)
            candidates = (scores.reshape(-1, 1) + logp).reshape(batch, K * V)  # (B, K*V)
            scores, flat = candidates.topk(K, dim=1)  # (B, K)
            source = (offsets + flat // V).reshape(-1)  # (B*K,) old beam of each new beam
            tokens = (flat % V).reshape(-1)  # (B*K,)
            decoder.reorder(source)
            finished = finished.index_select(0, source)
            gen_lengths = gen_lengths.index_select(0, source) + (~finished).float()
            decoder.append(tokens)
            finished = finished | (tokens == cfg.eos_id)
            if bool(finished.all()):
                break
        normalised = scores.reshape(-1) / gen_lengths.clamp_min(1.0).pow(length_penalty)
        best = normalised.reshape(batch, K).argmax(dim=1)  # (B,)
        return [decoder.generated(b * K + int(best[b])) for b in range(batch)]
    finally:
        decoder.close()
