"""Decoding for interleaved multimodal models (Zipper and the vocabulary-expansion baseline).

The caller gives prompt segments and the list of output modalities, e.g.
``["text"]`` (speech recognition), ``["speech"]`` (synthesis) or
``["text", "speech"]``. For each output modality in turn, every example opens a
segment with that modality's ``bos`` and generates until its ``eos`` (or the
per-modality maximum, which closes the segment with ``eos``), then moves on.

With ``use_cache=True`` each tower has a preallocated KV cache and each fusion
block a cross-attention cache that grows while the other tower generates; with
``use_cache=False`` the whole sequence is re-run every step (the reference the
cached path must match token for token). The final ``eos`` is fed through the
model too, so later segments can attend to it exactly as in training.

With ``compile=True`` (or :class:`CompileOptions`) the cached one-token step runs
through ``torch.compile`` with static shapes: the caches are preallocated for a
fixed batch, every step attends the whole cache (masks hide the unwritten slots)
and nothing is read back to the host inside the step, so it compiles to one graph
per generating tower. The prefill runs eagerly (its length varies by prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from multitower.generation.sampling import sample_next_token
from multitower.interleave import (
    Modality,
    Segment,
    TowerBatch,
    check_modalities,
    collate_interleaved,
)


class InterleavedLM(Protocol):
    """What generation needs from a model (Zipper and VocabExpansionLM provide it)."""

    @property
    def modalities(self) -> dict[str, Modality]: ...

    @property
    def max_seq_lens(self) -> dict[str, int]: ...

    def __call__(self, batch: Mapping[str, TowerBatch]) -> dict[str, torch.Tensor]: ...

    def setup_caches(self, batch: int, max_len: int | Mapping[str, int]) -> None: ...

    def remove_caches(self) -> None: ...


@dataclass(frozen=True)
class CompileOptions:
    """How :func:`generate` compiles its cached decode step with ``torch.compile``.

    Attributes:
        mode: ``torch.compile`` mode: None (the default), ``"reduce-overhead"`` (CUDA
            graphs: replays the step without per-kernel launches) or ``"max-autotune"``.
        backend: ``"inductor"`` (generates kernels), or ``"eager"``/``"aot_eager"``,
            which only trace (quick; for checking that the step is one graph).
        fullgraph: raise on a graph break instead of running the step in pieces.
    """

    mode: str | None = None
    backend: str = "inductor"
    fullgraph: bool = False

    def __post_init__(self) -> None:
        modes = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if self.mode not in modes:
            raise ValueError(f"CompileOptions.mode must be one of {modes}, got {self.mode!r}")


# With compile, cache capacities are rounded up to a multiple of this, so prompts of
# similar lengths share one compiled step (each new shape compiles anew).
COMPILE_CAPACITY_MULTIPLE = 64


def _compile_options(compile: bool | CompileOptions) -> CompileOptions | None:
    if isinstance(compile, CompileOptions):
        return compile
    return CompileOptions() if compile else None


def _limits(max_new_tokens: int | Mapping[str, int], outputs: Sequence[str]) -> dict[str, int]:
    if isinstance(max_new_tokens, int):
        limits = dict.fromkeys(outputs, max_new_tokens)
    else:
        missing = [m for m in outputs if m not in max_new_tokens]
        if missing:
            raise ValueError(f"max_new_tokens has no entry for output modality {missing}")
        limits = {m: int(max_new_tokens[m]) for m in outputs}
    for m, n in limits.items():
        if n <= 0:
            raise ValueError(f"max_new_tokens[{m!r}] must be positive, got {n}")
    return limits


def check_lengths(
    prompt_batch: Mapping[str, TowerBatch],
    limits: Mapping[str, int],
    modalities: Mapping[str, Modality],
    max_seq_lens: Mapping[str, int],
) -> None:
    """Refuse prompts (plus the outputs' room) longer than a tower's ``max_seq_len``.

    A tower's positions past ``max_seq_len`` were never trained (rotary positions
    would silently extrapolate), so this is an error naming the tower and lengths.

    Raises:
        ValueError: the longest prompt of a tower exceeds its ``max_seq_len``, or the
            prompt plus ``bos``, up to ``max_new_tokens`` tokens and ``eos`` per output
            in that tower does.
    """
    prompts = {
        t: int(prompt_batch[t].valid.sum(1).max()) if t in prompt_batch else 0 for t in max_seq_lens
    }
    for tower, limit in max_seq_lens.items():
        if prompts[tower] > limit:
            raise ValueError(
                f"the prompt is {prompts[tower]} tokens long in tower {tower!r}, longer than "
                f"its max_seq_len {limit}; shorten the input"
            )
    for tower, limit in max_seq_lens.items():
        room = {m: n + 2 for m, n in limits.items() if modalities[m].tower == tower}
        need = prompts[tower] + sum(room.values())
        if need > limit:
            outputs = ", ".join(f"{m} up to {n - 2}" for m, n in room.items())
            raise ValueError(
                f"tower {tower!r} takes at most max_seq_len {limit} tokens, but the prompt "
                f"({prompts[tower]}) and the generated tokens ({outputs}, plus bos/eos) need "
                f"{need}; shorten the input or lower max_new_tokens"
            )


def _restrict(logits: torch.Tensor, modality: Modality) -> torch.Tensor:
    """The modality's slice of the tower logits, with pad and bos never sampled."""
    lg = logits[:, modality.offset : modality.offset + modality.vocab_size].clone()
    lg[:, [modality.pad_id, modality.bos_id]] = float("-inf")
    return lg


@torch.no_grad()
def generate(
    model: InterleavedLM,
    prompts: Sequence[Sequence[Segment]],
    output_modalities: Sequence[str],
    *,
    max_new_tokens: int | Mapping[str, int] = 128,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compile: bool | CompileOptions = False,
) -> list[list[Segment]]:
    """Generate one segment per output modality for every prompt.

    Args:
        model: a Zipper or VocabExpansionLM (in eval mode).
        prompts: per example, its prompt segments (closed with ``eos``).
        output_modalities: modalities to generate, in order.
        max_new_tokens: content tokens per output segment (int, or per modality).
        min_new_tokens: eos is suppressed until a segment has this many tokens.
        temperature, top_k, top_p, generator: see
            :func:`~multitower.generation.sampling.sample_next_token`.
        use_cache: KV-cached decoding (fast) or full re-computation (reference).
        compile: run the cached one-token step through ``torch.compile`` (True: the
            inductor, default mode; or :class:`CompileOptions`). Needs ``use_cache``.
            Each batch size and cache capacity compiles once per process.

    Returns:
        Per example, the generated segments (content ids, no bos/eos), one per
        output modality.

    Raises:
        ValueError: an unknown modality, an out-of-vocabulary prompt token, an
            empty batch, or a prompt plus output room longer than a tower's
            ``max_seq_len`` (see :func:`check_lengths`), or ``compile`` without
            ``use_cache``.
    """
    options = _compile_options(compile)
    if options is not None and not use_cache:
        raise ValueError("compile needs use_cache=True: the uncached path has no static shapes")
    mods = model.modalities
    check_modalities(output_modalities, mods, "output_modalities")
    if len(output_modalities) == 0:
        raise ValueError("output_modalities must name at least one modality")
    limits = _limits(max_new_tokens, output_modalities)
    prompt_batch = collate_interleaved(prompts, mods)  # also validates the prompts
    check_lengths(prompt_batch, limits, mods, model.max_seq_lens)
    B = len(prompts)
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    if use_cache:
        state: _CachedRun | _FullRun = _CachedRun(
            model, prompts, prompt_batch, limits, output_modalities, device, options
        )
    else:
        state = _FullRun(model, prompts, prompt_batch, limits, output_modalities, device)
    outputs: list[list[Segment]] = [[] for _ in range(B)]
    rows = torch.arange(B, device=device)
    # Sampling draws from ``generator`` every step: reading "done" back every step keeps
    # its stream the same whatever the decoding path (greedy draws nothing).
    check_every = state.check_every if temperature == 0.0 else 1
    try:
        for name in output_modalities:
            mod, limit = mods[name], limits[name]
            tokens = torch.full((B,), mod.offset + mod.bos_id, dtype=torch.long, device=device)
            done = torch.zeros(B, dtype=torch.bool, device=device)
            # Per-example state stays on the device: the content tokens so far (column
            # ``limit`` takes the writes of examples that add nothing) and their count.
            generated = torch.zeros(B, limit + 1, dtype=torch.long, device=device)
            count = torch.zeros(B, dtype=torch.long, device=device)
            # bos, ``limit`` tokens and eos: every example is done after limit + 2 steps.
            for step in range(1, limit + 3):
                logits = state.step(mod, tokens, done, generated, count)  # (B, V_tower)
                done = done | (tokens == mod.offset + mod.eos_id)
                # Read back every few steps only; the extra steps of finished examples
                # are padding (valid False), which no later token attends to.
                if (step % check_every == 0 or step == limit + 2) and bool(done.all()):
                    break
                restricted = _restrict(logits, mod)  # (B, V_modality)
                if min_new_tokens:
                    restricted[:, mod.eos_id] = restricted[:, mod.eos_id].masked_fill(
                        count < min_new_tokens, float("-inf")
                    )
                nxt = sample_next_token(restricted, generator, temperature, top_k, top_p)  # (B,)
                nxt = torch.where(count >= limit, mod.eos_id, nxt)
                keep = ~done & (nxt != mod.eos_id)
                generated[rows, torch.where(keep, count, limit)] = nxt
                count = count + keep.long()
                tokens = torch.where(done, mod.offset + mod.pad_id, nxt + mod.offset)
            segments = _to_lists(generated, count)
            state.close(name, segments)
            for b in range(B):
                outputs[b].append(Segment(name, segments[b]))
    finally:
        state.finish()
    return outputs


def _to_lists(generated: torch.Tensor, count: torch.Tensor) -> list[list[int]]:
    """Rows of ``generated`` ``(B, L)`` cut at ``count`` ``(B,)``, as host lists (one read)."""
    return [row[:n] for row, n in zip(generated.tolist(), count.tolist())]


class _CachedRun:
    """Feeds one token per step through preallocated caches.

    A finished example keeps stepping with padding (valid False) at its next free
    slot, which its next token overwrites; the clamp never bites before the last
    step of a segment, as only an example that used all its room fills a tower.

    With ``options`` the steps (not the prefill) go through ``torch.compile``.
    """

    check_every = 8  # steps between reads of "is every example done?"

    def __init__(
        self,
        model: InterleavedLM,
        prompts: Sequence[Sequence[Segment]],
        prompt_batch: dict[str, TowerBatch],
        limits: dict[str, int],
        outputs: Sequence[str],
        device: torch.device,
        options: CompileOptions | None = None,
    ) -> None:
        self.model = model
        mods = model.modalities
        capacity = {t: tb.tokens.shape[1] for t, tb in prompt_batch.items()}
        for name in outputs:
            capacity[mods[name].tower] += limits[name] + 2  # bos + content + eos
        self.step_fn: Callable[[Mapping[str, TowerBatch]], dict[str, torch.Tensor]] = model
        if options is not None:
            m = COMPILE_CAPACITY_MULTIPLE
            capacity = {t: -(-n // m) * m for t, n in capacity.items()}
            self.step_fn = torch.compile(
                model,  # type: ignore[arg-type]
                dynamic=False,
                mode=options.mode,
                backend=options.backend,
                fullgraph=options.fullgraph,
            )
        self.capacity = capacity
        B = len(prompts)
        model.setup_caches(B, capacity)
        prefill = {t: tb.to(device) for t, tb in prompt_batch.items() if bool(tb.valid.any())}
        if prefill:
            model(prefill)
        self.local_len = {t: tb.valid.sum(1).to(device) for t, tb in prompt_batch.items()}
        self.global_len = sum(tb.valid.sum(1) for tb in prompt_batch.values()).to(device)

    def step(
        self,
        mod: Modality,
        tokens: torch.Tensor,
        done: torch.Tensor,
        generated: torch.Tensor,
        count: torch.Tensor,
    ) -> torch.Tensor:
        t = mod.tower
        valid = ~done
        pos = self.local_len[t].clamp_max(self.capacity[t] - 1)
        tb = TowerBatch(tokens[:, None], pos[:, None], self.global_len[:, None], valid[:, None])
        logits = self.step_fn({t: tb})[t][:, -1]  # (B, V)
        self.local_len[t] = self.local_len[t] + valid.long()
        self.global_len = self.global_len + valid.long()
        return logits

    def close(self, name: str, generated: list[list[int]]) -> None:
        pass

    def finish(self) -> None:
        self.model.remove_caches()


class _FullRun:
    """Re-runs every example's whole interleaved sequence each step (no cache)."""

    check_every = 1  # it reads the tokens back every step anyway

    def __init__(
        self,
        model: InterleavedLM,
        prompts: Sequence[Sequence[Segment]],
        prompt_batch: dict[str, TowerBatch],
        limits: dict[str, int],
        outputs: Sequence[str],
        device: torch.device,
    ) -> None:
        self.model = model
        self.device = device
        self.examples = [list(p) for p in prompts]

    def step(
        self,
        mod: Modality,
        tokens: torch.Tensor,
        done: torch.Tensor,
        generated: torch.Tensor,
        count: torch.Tensor,
    ) -> torch.Tensor:
        # The open segment holds bos + generated so far; ``tokens`` (the newest) is in it.
        so_far = _to_lists(generated, count)
        examples = [[*ex, Segment(mod.name, g)] for ex, g in zip(self.examples, so_far)]
        eos = mod.offset + mod.eos_id
        closed = [d or tok == eos for d, tok in zip(done.tolist(), tokens.tolist())]
        batch = collate_interleaved(
            examples, self.model.modalities, open_last=[not c for c in closed]
        )
        batch = {t: tb.to(self.device) for t, tb in batch.items()}
        logits = self.model(batch)[mod.tower]  # (B, T, V)
        last = batch[mod.tower].valid.sum(1) - 1  # (B,)
        return logits[torch.arange(len(examples), device=self.device), last]

    def close(self, name: str, generated: list[list[int]]) -> None:
        for ex, g in zip(self.examples, generated):
            ex.append(Segment(name, g))

    def finish(self) -> None:
        pass
