"""Length-grouped batches (``TrainConfig.group_by_length``): the order, the padding it
saves, the trainer's use of it and exact resume."""

from __future__ import annotations

import copy

import pytest
import torch

from multitower.experiments.zipper_speech_text.pairs import PairedDirections, TokenSequences
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.train.data import epoch_order
from multitower.train.task import NextTokenTask
from multitower.train.trainer import TrainConfig, Trainer

SEQ = 12


def lengths_of(n: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, SEQ + 1, (n,), generator=gen).tolist()


def test_grouped_order_is_a_seeded_permutation_of_sorted_runs() -> None:
    n, batch, group = 203, 8, 5
    lengths = lengths_of(n)
    order = epoch_order(n, 0, 0, lengths=lengths, group=group, batch_size=batch)
    assert sorted(order.tolist()) == list(range(n))
    assert torch.equal(order, epoch_order(n, 0, 0, lengths=lengths, group=group, batch_size=batch))
    assert not torch.equal(
        order, epoch_order(n, 0, 1, lengths=lengths, group=group, batch_size=batch)
    )
    plain = epoch_order(n, 0, 0)
    assert torch.equal(plain, epoch_order(n, 0, 0, lengths=lengths, group=0, batch_size=batch))
    full = n // batch * batch
    # the records of the incomplete last batch are the same as in the plain order's last run
    assert set(order[full:].tolist()) <= set(
        plain[(n // (group * batch)) * group * batch :].tolist()
    )
    runs = {}  # every full batch comes from one run of the plain order, sorted longest first
    for start in range(0, len(plain), group * batch):
        for i in plain[start : start + group * batch].tolist():
            runs[i] = start
    for b in order[:full].view(-1, batch).tolist():
        assert len({runs[i] for i in b}) == 1
        sizes = [lengths[i] for i in b]
        assert sizes == sorted(sizes, reverse=True)
    # batches are not visited run by run: the shuffled batch order mixes the runs
    firsts = [runs[b[0]] for b in order[:full].view(-1, batch).tolist()]
    assert firsts != sorted(firsts)


def test_grouping_cuts_the_padding() -> None:
    n, batch = 4000, 32
    lengths = lengths_of(n, seed=3)

    def padded_share(order: torch.Tensor) -> float:
        pad = real = 0
        for b in order[: n // batch * batch].view(-1, batch).tolist():
            sizes = [lengths[i] for i in b]
            pad += max(sizes) * len(sizes) - sum(sizes)
            real += sum(sizes)
        return pad / (pad + real)

    plain = padded_share(epoch_order(n, 0, 0))
    grouped = padded_share(epoch_order(n, 0, 0, lengths=lengths, group=20, batch_size=batch))
    assert plain > 0.25 and grouped < 0.05, (plain, grouped)


def test_grouping_needs_one_length_per_record() -> None:
    with pytest.raises(ValueError, match=r"one length per record \(10\), got 9"):
        epoch_order(10, 0, 0, lengths=[3] * 9, group=2, batch_size=2)
    with pytest.raises(ValueError, match="got none"):
        epoch_order(10, 0, 0, group=2, batch_size=2)


def test_datasets_report_their_lengths() -> None:
    seqs = TokenSequences([[5, 6, 7], [5] * 20], bos=1, eos=2, max_len=8)
    assert seqs.lengths() == [5, 8] == [len(seqs[i]) for i in range(2)]
    pairs = PairedDirections([([1, 2, 3], [4]), ([1], [4, 5])])
    assert pairs.lengths() == [4, 4, 3, 3]
    assert len(pairs.lengths()) == len(pairs)


class Sequences:
    """Right-padded token sequences of 3..12 tokens, with their lengths."""

    def __init__(self, n: int) -> None:
        self.sizes = lengths_of(n, seed=7)
        gen = torch.Generator().manual_seed(1)
        self.items = [torch.randint(3, 16, (k,), generator=gen) for k in self.sizes]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]

    def lengths(self) -> list[int]:
        return list(self.sizes)


class NoLengths(Sequences):
    lengths = None  # type: ignore[assignment]


def pad(items: list[torch.Tensor]) -> torch.Tensor:
    out = torch.zeros(len(items), max(len(x) for x in items), dtype=torch.long)
    for row, x in zip(out, items):
        row[: len(x)] = x
    return out


def trainer(run_dir, model, data, **kw) -> Trainer:
    base = dict(
        max_steps=6, batch_size=4, lr=1e-2, warmup_steps=0, log_every=1, ckpt_every=2,
        keep_last=5, progress="off", device="cpu", precision="fp32", group_by_length=3,
    )  # fmt: skip
    return Trainer(
        model, NextTokenTask(pad_id=0), data, pad, TrainConfig(**{**base, **kw}), run_dir
    )


def tiny() -> DecoderTower:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2, max_seq_len=16)
    return DecoderTower(cfg)


def test_trainer_reads_the_grouped_batches_and_resumes_exactly(tmp_path) -> None:
    data = Sequences(40)
    seen: list[int] = []

    def spy(items: list[torch.Tensor]) -> torch.Tensor:
        seen.append(max(len(x) for x in items) * len(items) - sum(len(x) for x in items))
        return pad(items)

    full = trainer(tmp_path / "full", tiny(), data)
    full.collate_fn = spy
    full.fit()
    order = epoch_order(40, 0, 0, lengths=data.lengths(), group=3, batch_size=4)
    expected = []
    for b in order[:24].view(-1, 4).tolist():
        sizes = [data.sizes[i] for i in b]
        expected.append(max(sizes) * 4 - sum(sizes))
    assert seen == expected  # the padding of exactly the grouped batches

    half = trainer(tmp_path / "half", tiny(), data, max_steps=6)
    half.fit()
    import shutil

    from multitower.train import checkpoint as ckpt

    for _, path in ckpt.list_checkpoints(tmp_path / "half")[1:]:
        shutil.rmtree(path)  # keep only step 2
    resumed = trainer(tmp_path / "half", copy.deepcopy(tiny()), data)
    assert resumed.resume() == 2
    resumed.fit()
    for k, v in full.module.state_dict().items():
        assert torch.equal(v, resumed.module.state_dict()[k]), k


def test_trainer_refuses_grouping_without_lengths(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"group_by_length needs a dataset with a lengths\(\)"):
        trainer(tmp_path, tiny(), NoLengths(8))
    with pytest.raises(ValueError, match="group_by_length must be >= 0"):
        TrainConfig(group_by_length=-1)


def test_recognizer_dataset_reports_unit_counts() -> None:
    from multitower.data.charset import CharAlphabet
    from multitower.experiments.zipper_speech_text.recognizer import UnitTranscriptDataset

    alphabet = CharAlphabet.from_transcripts(["ab"])
    data = UnitTranscriptDataset(
        [([3, 4, 5], "ab"), ([3], "a")], alphabet, unit_noise=0.5, vocab_size=9
    )
    assert data.lengths() == [3, 1] == [len(data[i][0]) for i in range(2)]
