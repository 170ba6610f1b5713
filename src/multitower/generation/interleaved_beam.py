"""Beam search for one output segment of an interleaved model (Zipper, the baseline).

Each example keeps ``num_beams`` live hypotheses. At every step each live beam is
extended by every token of the output modality; the ``2 * num_beams`` best
continuations (by summed log-probability) are scanned in order: one ending in
``eos`` becomes a finished hypothesis, the others fill the live beams until there
are ``num_beams``. Finished hypotheses are ranked by ``score / length **
length_penalty`` (``length`` counts content tokens, at least 1): 0 prefers the
most probable sequence outright, which favours short ones; 1 is the mean
log-probability per token. An example is done once it holds ``num_beams``
finished hypotheses (early stopping: a live beam might still have ranked higher
later, but searching on until ``max_new_tokens`` would cost the whole room for
every example), or when its beams reach ``max_new_tokens`` (which closes them
with ``eos``).

With ``use_cache=True`` the prompts are replicated ``num_beams`` times, decoded one
token per step through the model's KV caches, and the cache rows are permuted
after each step to follow the surviving beams (:func:`reorder_caches`); all live
beams of an example have the same length, so the per-row positions stay in
lockstep. ``use_cache=False`` re-runs every hypothesis from scratch each step: the
reference the cached path must match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from multitower.generation.interleaved import (
    InterleavedLM,
    _CachedRun,
    _FullRun,
    _restrict,
    check_lengths,
)
from multitower.interleave import Segment, check_modalities, collate_interleaved
from multitower.nn.kv_cache import KVCache


def reorder_caches(model: nn.Module, index: torch.Tensor) -> None:
    """Row ``i`` of every KV cache in ``model`` becomes old row ``index[i]``.

    Every :class:`KVCache` (self-attention, and cross-attention with its source
    positions and validity) permutes the slots it has filled, so one call covers
    every tower and fusion block.
    """
    moved = torch.nonzero(index != torch.arange(index.shape[0], device=index.device))[:, 0]
    if moved.numel() == 0:
        return
    for module in model.modules():
        if isinstance(module, KVCache):
            module.reorder(index.to(module.k.device), moved.to(module.k.device))


def _rank(score: float, length: int, length_penalty: float) -> float:
    return score / max(1, length) ** length_penalty


@torch.no_grad()
def generate_beam(
    model: InterleavedLM,
    prompts: Sequence[Sequence[Segment]],
    output_modality: str,
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    max_new_tokens: int = 128,
    use_cache: bool = True,
) -> list[list[int]]:
    """The best hypothesis of a beam search per prompt (content ids, no bos/eos).

    Args:
        model: a Zipper or VocabExpansionLM (in eval mode).
        prompts: per example, its prompt segments (closed with ``eos``).
        output_modality: the one modality to generate.
        num_beams: live hypotheses per example (1: greedy decoding).
        length_penalty: finished hypotheses rank by ``score / length ** length_penalty``.
        max_new_tokens: content tokens at most.
        use_cache: cached decoding with cache reordering, or full re-computation.

    Raises:
        ValueError: an unknown modality, ``num_beams < 1``, ``length_penalty < 0``,
            ``max_new_tokens < 1``, an empty batch or a prompt too long for a tower.
    """
    mods = model.modalities
    check_modalities([output_modality], mods, "output_modality")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if length_penalty < 0 or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(prompts) == 0:
        raise ValueError("generate_beam: no prompts")
    mod, K, limit = mods[output_modality], num_beams, max_new_tokens
    check_lengths(
        collate_interleaved(prompts, mods), {output_modality: limit}, mods, model.max_seq_lens
    )
    B, R = len(prompts), len(prompts) * num_beams
    rows = [list(p) for p in prompts for _ in range(K)]
    batch = collate_interleaved(rows, mods)
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    outputs = [output_modality]
    if use_cache:
        state: _CachedRun | _FullRun = _CachedRun(
            model, rows, batch, {output_modality: limit}, outputs, device
        )
    else:
        state = _FullRun(model, rows, batch, {output_modality: limit}, outputs, device)
    eos = mod.eos_id
    tokens = torch.full((R,), mod.offset + mod.bos_id, dtype=torch.long, device=device)
    done = torch.zeros(R, dtype=torch.bool, device=device)
    generated = torch.zeros(R, limit + 1, dtype=torch.long, device=device)
    count = torch.zeros(R, dtype=torch.long, device=device)
    # Only each example's first beam is live at the start: the others would duplicate it.
    scores = [[0.0] + [-math.inf] * (K - 1) for _ in range(B)]
    hyps: list[list[list[int]]] = [[[] for _ in range(K)] for _ in range(B)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    example_done = [False] * B
    try:
        for length in range(limit + 1):
            logits = state.step(mod, tokens, done, generated, count)  # (R, V_tower)
            logp = _restrict(logits, mod).float().log_softmax(-1)  # (R, V)
            if length == limit:  # the room is used up: every beam closes with eos
                logp[:, torch.arange(logp.shape[1], device=device) != eos] = -math.inf
            V = logp.shape[1]
            total = logp + torch.tensor(scores, device=device).view(R, 1)
            top = total.view(B, K * V).topk(min(2 * K, K * V), dim=1)
            values, indices = top.values.tolist(), top.indices.tolist()
            source = list(range(R))
            next_tokens = [mod.pad_id] * R
            for b in range(B):
                if example_done[b]:
                    continue
                live: list[tuple[float, int, int]] = []  # (score, source beam, token)
                for score, flat in zip(values[b], indices[b]):
                    if score == -math.inf:
                        break
                    beam, token = divmod(flat, V)
                    if token == eos:
                        finished[b].append((score, hyps[b][beam]))
                    elif len(live) < K:
                        live.append((score, beam, token))
                    if len(live) == K:
                        break
                if not live or len(finished[b]) >= K:
                    example_done[b] = True
                    continue
                new_hyps, new_scores = [], []
                for j in range(K):
                    score, beam, token = (
                        live[j] if j < len(live) else (-math.inf, live[0][1], live[0][2])
                    )
                    source[b * K + j] = b * K + beam
                    next_tokens[b * K + j] = token
                    new_hyps.append([*hyps[b][beam], token])
                    new_scores.append(score)
                hyps[b], scores[b] = new_hyps, new_scores
            if all(example_done):
                break
            index = torch.tensor(source, device=device)
            row_done = torch.tensor([example_done[r // K] for r in range(R)], device=device)
            if use_cache:
                reorder_caches(model, index)  # type: ignore[arg-type]
            generated, count = generated[index], count[index]
            nxt = torch.tensor(next_tokens, device=device)
            keep = ~row_done
            generated[torch.arange(R, device=device), torch.where(keep, count, limit)] = nxt
            count = count + keep.long()
            # A finished example's rows feed padding from now on (valid False).
            done = row_done
            tokens = torch.where(row_done, mod.offset + mod.pad_id, nxt + mod.offset)
    finally:
        state.finish()
    return [
        max(finished[b], key=lambda f: _rank(f[0], len(f[1]), length_penalty))[1] for b in range(B)
    ]
