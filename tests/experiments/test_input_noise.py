"""Input noise on the output modality (``InterleavedLMTask(input_noise=...)``)."""

from __future__ import annotations

import pytest
import torch

from multitower.experiments.zipper_speech_text.pairs import (
    InterleavedLMTask,
    PairedDirections,
    interleaved_collate,
)
from multitower.models.baseline import expand_vocabulary
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.zipper import Zipper, ZipperConfig

SPEECH = DecoderConfig(vocab_size=40, d_model=16, num_layers=2, num_heads=2)
TEXT = DecoderConfig(vocab_size=30, d_model=16, num_layers=2, num_heads=2)


def pairs(n: int = 24) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        s = torch.randint(
            3, SPEECH.vocab_size, (int(torch.randint(5, 30, (1,), generator=g)),), generator=g
        )
        t = torch.randint(
            3, TEXT.vocab_size, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g
        )
        out.append((s.tolist(), t.tolist()))
    return out


def zipper() -> Zipper:
    torch.manual_seed(0)
    return Zipper(ZipperConfig({"speech": SPEECH, "text": TEXT}, cross_attention_every=1))


def baseline():
    torch.manual_seed(0)
    return expand_vocabulary(DecoderTower(TEXT), "text", {"speech": SPEECH.vocab_size})


@pytest.mark.parametrize("build", [zipper, baseline], ids=["zipper", "baseline"])
def test_noise_replaces_only_target_tokens_within_their_modality(build) -> None:
    model = build()
    mods = model.modalities
    batch = interleaved_collate(mods)([PairedDirections(pairs())[i] for i in range(48)])
    torch.manual_seed(1)
    noisy = InterleavedLMTask(0.5, mods).noisy_inputs(batch)
    changed_total = target_total = 0
    for tower, tb in batch.items():
        new = noisy[tower].tokens
        changed = new != tb.tokens
        targets = tb.loss_weights > 0
        assert not (changed & ~targets).any(), "a prefix, pad or bos token was replaced"
        for m in mods.values():
            if m.tower != tower:
                continue
            local_old, local_new = tb.tokens - m.offset, new - m.offset
            inside = (local_old >= 0) & (local_old < m.vocab_size)
            moved = changed & inside
            # replacements stay in the same modality and are never special ids
            assert ((local_new[moved] >= 0) & (local_new[moved] < m.vocab_size)).all()
            for special in (m.pad_id, m.bos_id, m.eos_id):
                assert not (local_new[moved] == special).any()
                assert not (changed & (local_old == special)).any()
        changed_total += int(changed.sum())
        target_total += int((targets & tb.valid).sum())
        for field in ("positions", "global_positions", "valid", "loss_weights"):
            assert torch.equal(getattr(noisy[tower], field), getattr(tb, field))
    # about half of the non-special targets (eos and same-id draws excluded)
    assert 0.3 < changed_total / target_total < 0.5


def test_noise_leaves_the_targets_and_evaluation_alone() -> None:
    model = zipper()
    batch = interleaved_collate(model.modalities)([PairedDirections(pairs())[i] for i in range(16)])
    clean = InterleavedLMTask()
    noisy = InterleavedLMTask(0.3, model.modalities)
    model.eval()
    with torch.no_grad():
        assert float(noisy.compute_loss(model, batch).loss) == float(
            clean.compute_loss(model, batch).loss
        )
    model.train()
    torch.manual_seed(2)
    a = noisy.compute_loss(model, batch).loss.detach()
    torch.manual_seed(2)
    b = noisy.compute_loss(model, batch).loss.detach()  # the same draws from the same RNG state
    with torch.no_grad():
        assert float(a) == float(b)
        assert float(a) != float(clean.compute_loss(model, batch).loss)
        n = noisy.compute_loss(model, batch).num_tokens
        assert float(n) == float(clean.compute_loss(model, batch).num_tokens)


def test_bad_noise_is_refused() -> None:
    with pytest.raises(ValueError, match="input_noise must be in"):
        InterleavedLMTask(1.0, zipper().modalities)
    with pytest.raises(ValueError, match="needs the model's modalities"):
        InterleavedLMTask(0.1)
