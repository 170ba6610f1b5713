"""Unit recogniser: padding masks, CTC loss parity, greedy decoding, alphabet, training, save/load."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from multitower.data.charset import CharAlphabet
from multitower.experiments.zipper_speech_text.recognizer import (
    UnitCTCTask,
    UnitTranscriptDataset,
    collate_unit_ctc,
    ctc_frames_needed,
    load_recognizer,
    save_recognizer,
    train_recognizer,
    transcribe,
)
from multitower.experiments.zipper_speech_text.text_decoder import character_error_rate
from multitower.generation.ctc import collapse_ctc_path, greedy_decode
from multitower.losses import ctc_loss
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.io import save_model
from multitower.models.unit_recognizer import UnitRecognizer, UnitRecognizerConfig
from multitower.train.trainer import TrainConfig

UNIT_VOCAB = 40  # speech-tower ids: 0 pad, 1 bos, 2 eos, units 3..39
CHARS = "abcdefgh '"


def tiny_config(**overrides) -> UnitRecognizerConfig:
    fields = dict(
        unit_vocab_size=UNIT_VOCAB, num_chars=len(CHARS) + 1, d_model=32, num_layers=2, num_heads=4
    )
    return UnitRecognizerConfig(**(fields | overrides))


def tiny_model(seed: int = 0, **overrides) -> UnitRecognizer:
    torch.manual_seed(seed)
    return UnitRecognizer(tiny_config(**overrides)).eval()


# -- config and forward ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unit_vocab_size", 0),
        ("num_chars", 1),
        ("num_heads", 5),
        ("upsample", 0),
        ("max_len", -1),
        ("norm", "batch"),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


@pytest.mark.parametrize("upsample", [1, 3])
def test_forward_shapes_and_normalised(upsample):
    model = tiny_model(upsample=upsample)
    units = torch.randint(3, UNIT_VOCAB, (3, 7))
    lengths = torch.tensor([7, 4, 0])
    log_probs, out_lengths = model(units, lengths)
    assert log_probs.shape == (3, 7 * upsample, len(CHARS) + 1)
    assert log_probs.dtype == torch.float32
    assert out_lengths.tolist() == [7 * upsample, 4 * upsample, 0]
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(3, 7 * upsample))


def test_padding_leaves_real_outputs_unchanged():
    model = tiny_model(upsample=2)
    seqs = [torch.randint(3, UNIT_VOCAB, (n,)) for n in (9, 5, 2)]
    units = torch.zeros(3, 9, dtype=torch.long)
    for i, s in enumerate(seqs):
        units[i, : len(s)] = s
    units[2, 2:] = torch.randint(0, UNIT_VOCAB, (7,))  # garbage in the padding is ignored too
    batched, _ = model(units, torch.tensor([9, 5, 2]))
    for i, s in enumerate(seqs):
        alone, _ = model(s[None], torch.tensor([len(s)]))  # (1, 2n, C), no padding at all
        torch.testing.assert_close(batched[i, : 2 * len(s)], alone[0], atol=1e-5, rtol=1e-5)


def test_attention_is_bidirectional():
    model = tiny_model()
    units = torch.randint(3, UNIT_VOCAB, (1, 8))
    changed = units.clone()
    changed[0, -1] = 3 if units[0, -1] != 3 else 4
    lengths = torch.tensor([8])
    a, _ = model(units, lengths)
    b, _ = model(changed, lengths)
    assert not torch.allclose(a[0, :2], b[0, :2])  # the first position sees the last one


def test_forward_rejects_bad_inputs():
    model = tiny_model(max_len=8)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[3, UNIT_VOCAB]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="lengths must lie"):
        model(torch.tensor([[3, 4]]), torch.tensor([3]))
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.full((1, 9), 3), torch.tensor([9]))
    with pytest.raises(ValueError, match="lengths must be an integer tensor"):
        model(torch.tensor([[3, 4]]), torch.tensor([2.0]))


# -- CTC loss ----------------------------------------------------------------------------------
def test_ctc_loss_matches_per_utterance_reference():
    torch.manual_seed(0)
    B, T, C = 4, 12, 6
    log_probs = torch.randn(B, T, C).log_softmax(-1).requires_grad_()
    out_lengths = torch.tensor([12, 9, 3, 7])
    # Row 2 needs 5 frames for "1 1 2" plus a blank: impossible in 3 frames -> zeroed.
    targets = [[1, 2, 3, 3], [5, 1], [1, 1, 2], [4, 4, 4, 2, 1]]
    loss = ctc_loss(log_probs, out_lengths, targets)
    reference = []
    for i, t in enumerate(targets):
        n = int(out_lengths[i])
        per = F.ctc_loss(
            log_probs[i, :n, None],  # (n, 1, C)
            torch.tensor([t]),
            torch.tensor([n]),
            torch.tensor([len(t)]),
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        reference.append(per / len(t))
    expected = torch.stack(reference).mean()
    torch.testing.assert_close(loss, expected)
    assert reference[2].item() == 0.0
    # Padded targets + lengths give the same value; the gradient is finite.
    padded = torch.zeros(B, 5, dtype=torch.long)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t)
    lengths = torch.tensor([len(t) for t in targets])
    torch.testing.assert_close(ctc_loss(log_probs, out_lengths, padded, lengths), loss)
    loss.backward()
    assert torch.isfinite(log_probs.grad).all()


def test_ctc_loss_matches_brute_force_path_sum():
    # -log sum over all T-frame paths that collapse to the target, by enumeration.
    torch.manual_seed(1)
    T, C = 5, 3
    log_probs = torch.randn(1, T, C).log_softmax(-1)
    for target in ([1], [1, 2], [2, 2], [1, 2, 1]):
        total = 0.0
        for path in itertools.product(range(C), repeat=T):
            if collapse_ctc_path(list(path)) == target:
                total += math.exp(sum(float(log_probs[0, t, c]) for t, c in enumerate(path)))
        expected = -math.log(total) / len(target)
        got = ctc_loss(log_probs, torch.tensor([T]), [target])
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ctc_loss_rejects_bad_shapes():
    log_probs = torch.randn(2, 5, 4).log_softmax(-1)
    with pytest.raises(ValueError, match="2 sequences"):
        ctc_loss(log_probs, torch.tensor([5, 5]), [[1]])
    with pytest.raises(ValueError, match="target_lengths is required"):
        ctc_loss(log_probs, torch.tensor([5, 5]), torch.ones(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="out_lengths"):
        ctc_loss(log_probs, torch.tensor([5]), [[1], [2]])


# -- greedy decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([1, 1, 0, 1, 2, 2], [1, 1, 2]),
        ([0, 0, 0], []),
        ([3, 3, 3], [3]),
        ([0, 1, 0, 0, 1, 0], [1, 1]),
        ([1, 2, 1, 2], [1, 2, 1, 2]),
        ([], []),
    ],
)
def test_collapse_rules(path, expected):
    assert collapse_ctc_path(path) == expected


def test_greedy_decode_uses_argmax_and_lengths():
    paths = [[1, 1, 0, 1, 2, 2], [2, 0, 2, 3, 3, 3]]
    log_probs = torch.full((2, 6, 4), -5.0)
    for b, path in enumerate(paths):
        for t, c in enumerate(path):
            log_probs[b, t, c] = 0.0
    # Row 1 has 4 valid frames: the trailing 3s beyond them are padding.
    assert greedy_decode(log_probs, torch.tensor([6, 4])) == [[1, 1, 2], [2, 2, 3]]
    with pytest.raises(ValueError, match="out_lengths must lie"):
        greedy_decode(log_probs, torch.tensor([7, 4]))


# -- alphabet ----------------------------------------------------------------------------------
def test_alphabet_round_trip_and_json():
    alphabet = CharAlphabet.from_transcripts(["hello world", "don't"])
    assert alphabet.chars == tuple(sorted(set("hello worlddon't")))
    assert alphabet.num_classes == len(alphabet.chars) + 1
    ids = alphabet.encode("don't hello")
    assert min(ids) >= 1  # 0 is the blank
    assert alphabet.decode(ids) == "don't hello"
    restored = CharAlphabet.from_dict(json.loads(json.dumps(alphabet.to_dict())))
    assert restored == alphabet


def test_alphabet_errors():
    alphabet = CharAlphabet.from_transcripts(["abc"])
    with pytest.raises(ValueError, match=r"\['x', 'z'\]"):
        alphabet.encode("abzcx")
    with pytest.raises(ValueError, match="blank"):
        alphabet.decode([1, 0])
    with pytest.raises(ValueError, match="outside"):
        alphabet.decode([4])
    with pytest.raises(
        ValueError, match=r"transcript 1 .*\['B', '!'\]|transcript 1 .*\['!', 'B'\]"
    ):
        CharAlphabet.from_transcripts(["ok", "Bad!"])
    with pytest.raises(ValueError, match="no character"):
        CharAlphabet.from_transcripts(["", ""])
    with pytest.raises(ValueError, match="unique"):
        CharAlphabet(["a", "a"])
    with pytest.raises(ValueError, match="chars"):
        CharAlphabet.from_dict({"letters": ["a"]})


# -- data and task -----------------------------------------------------------------------------
def test_dataset_collate_and_task():
    alphabet = CharAlphabet(list(CHARS))
    pairs = [([3, 4, 5], "ab"), ([6], "c"), ([7, 8], "")]
    dataset = UnitTranscriptDataset(pairs, alphabet)
    batch = collate_unit_ctc([dataset[i] for i in range(3)])
    assert batch.units.tolist() == [[3, 4, 5], [6, 0, 0], [7, 8, 0]]
    assert batch.lengths.tolist() == [3, 1, 2]
    assert batch.targets.tolist() == [[1, 2], [3, 0], [0, 0]]
    assert batch.target_lengths.tolist() == [2, 1, 0]
    model = tiny_model()
    out = UnitCTCTask().compute_loss(model, batch)
    log_probs, out_lengths = model(batch.units, batch.lengths)
    torch.testing.assert_close(
        out.loss, ctc_loss(log_probs, out_lengths, batch.targets, batch.target_lengths)
    )
    assert out.num_tokens == 3
    with pytest.raises(ValueError, match="pair 1"):
        UnitTranscriptDataset([([3], "a"), ([4], "aZ")], alphabet)
    assert ctc_frames_needed([1, 1, 2, 2, 2]) == 8
    assert ctc_frames_needed([]) == 0


# -- end to end --------------------------------------------------------------------------------
def synthetic_pairs(
    n: int, rng: random.Random, codes: dict[str, list[int]]
) -> list[tuple[list[int], str]]:
    pairs = []
    for _ in range(n):
        text = "".join(rng.choice(CHARS) for _ in range(rng.randint(4, 12)))
        pairs.append(([u for c in text for u in codes[c]], text))
    return pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A recogniser trained on units made from characters by a fixed random code.

    Each character owns 1-3 unit ids (disjoint between characters), so a
    transcript is recoverable from its units exactly.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = random.Random(0)
    pool = list(range(3, UNIT_VOCAB))
    rng.shuffle(pool)
    codes = {}
    for c in CHARS:
        k = rng.randint(1, 3)
        codes[c], pool = pool[:k], pool[k:]
    train_pairs = synthetic_pairs(1000, rng, codes)
    test_pairs = synthetic_pairs(100, rng, codes)
    alphabet = CharAlphabet.from_transcripts(t for _, t in train_pairs)
    config = UnitRecognizerConfig(
        unit_vocab_size=UNIT_VOCAB,
        num_chars=alphabet.num_classes,
        d_model=64,
        num_layers=2,
        num_heads=4,
    )
    train_cfg = TrainConfig(
        max_steps=150,
        batch_size=32,
        lr=3e-3,
        warmup_steps=20,
        weight_decay=0.0,
        log_every=50,
        ckpt_every=0,
        eval_every=0,
        progress="off",
        device="cpu",
        precision="fp32",
    )
    run_dir = tmp_path_factory.mktemp("recognizer")
    torch.manual_seed(train_cfg.seed)
    untrained = UnitRecognizer(config)
    model = train_recognizer(
        train_pairs, alphabet, config, train_cfg, run_dir, eval_pairs=test_pairs[:20]
    )
    torch.set_num_threads(threads)
    return {
        "model": model,
        "untrained": untrained,
        "alphabet": alphabet,
        "config": config,
        "train_cfg": train_cfg,
        "train_pairs": train_pairs,
        "test_pairs": test_pairs,
        "run_dir": run_dir,
    }


def test_training_reaches_low_cer(trained):
    units = [u for u, _ in trained["test_pairs"]]
    refs = [t for _, t in trained["test_pairs"]]
    cer_before = character_error_rate(
        refs, transcribe(trained["untrained"], trained["alphabet"], units)
    )
    cer_after = character_error_rate(refs, transcribe(trained["model"], trained["alphabet"], units))
    print(f"synthetic CER: untrained {cer_before:.3f}, trained {cer_after:.3f}")
    assert cer_before > 0.5
    assert cer_after < 0.1
    logged = [
        json.loads(line) for line in (trained["run_dir"] / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert logged[-1]["eval/cer"] < 0.1


def test_transcribe_keeps_order_and_handles_empty(trained):
    model, alphabet = trained["model"], trained["alphabet"]
    units = [u for u, _ in trained["test_pairs"][:10]] + [[]]
    by_one = transcribe(model, alphabet, units, batch_size=1)
    by_four = transcribe(model, alphabet, units, batch_size=4)
    assert by_one == by_four
    assert by_one[-1] == ""
    with pytest.raises(ValueError, match="max_len"):
        transcribe(model, alphabet, [[3] * (model.config.max_len + 1)])
    with pytest.raises(ValueError, match="num_chars"):
        transcribe(model, CharAlphabet(["a"]), units)


def test_save_load_round_trip(trained, tmp_path):
    loaded, alphabet = load_recognizer(trained["run_dir"])
    assert alphabet == trained["alphabet"]
    assert loaded.config == trained["config"]
    assert not loaded.training
    units = torch.randint(3, UNIT_VOCAB, (2, 6))
    lengths = torch.tensor([6, 3])
    torch.testing.assert_close(loaded(units, lengths)[0], trained["model"](units, lengths)[0])
    # A second save elsewhere reloads the same way.
    save_recognizer(loaded, alphabet, tmp_path / "copy")
    again, _ = load_recognizer(tmp_path / "copy")
    torch.testing.assert_close(again(units, lengths)[0], loaded(units, lengths)[0])


def test_rerun_resumes_from_final_checkpoint(trained):
    # The run directory's last checkpoint is at max_steps, so nothing is trained again:
    # another seed would give other weights if training restarted from scratch.
    model = train_recognizer(
        trained["train_pairs"],
        trained["alphabet"],
        trained["config"],
        dataclasses.replace(trained["train_cfg"], seed=1),
        trained["run_dir"],
    )
    for (name, a), b in zip(model.state_dict().items(), trained["model"].state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_load_rejects_other_models(tmp_path):
    torch.manual_seed(0)
    tower = DecoderTower(DecoderConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2))
    save_model(tower, tmp_path / "tower")
    (tmp_path / "tower" / "alphabet.json").write_text(json.dumps(CharAlphabet(["a"]).to_dict()))
    with pytest.raises(ValueError, match="'DecoderTower' checkpoint, expected 'UnitRecognizer'"):
        load_recognizer(tmp_path / "tower")
    save_model(tiny_model(), tmp_path / "no_alphabet")
    with pytest.raises(FileNotFoundError, match=r"alphabet\.json"):
        load_recognizer(tmp_path / "no_alphabet")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_recognizer(tmp_path / "missing")


def test_train_recognizer_checks_inputs(tmp_path):
    alphabet = CharAlphabet(list(CHARS))
    cfg = TrainConfig(max_steps=1, batch_size=2, warmup_steps=0, progress="off", device="cpu")
    pairs = [([3, 4], "ab"), ([5, 6], "cd")]
    with pytest.raises(ValueError, match="num_chars=5 must equal"):
        train_recognizer(pairs, alphabet, tiny_config(num_chars=5), cfg, tmp_path / "a")
    with pytest.raises(ValueError, match="unit id 40"):
        train_recognizer([([3, 40], "ab"), *pairs], alphabet, tiny_config(), cfg, tmp_path / "b")
    # "aa" needs 3 frames; one unit with upsample=2 gives 2: warned, then trained anyway.
    with pytest.warns(UserWarning, match="1 of 3 pairs"):
        train_recognizer([([3], "aa"), *pairs], alphabet, tiny_config(), cfg, tmp_path / "c")


def test_unit_noise_replaces_about_the_requested_share():
    from multitower.data.charset import CharAlphabet
    from multitower.experiments.zipper_speech_text.recognizer import UnitTranscriptDataset

    alphabet = CharAlphabet.from_transcripts(["ab"])
    units = list(range(3, 13)) * 100
    clean = UnitTranscriptDataset([(units, "ab")], alphabet)
    noisy = UnitTranscriptDataset([(units, "ab")], alphabet, unit_noise=0.2, vocab_size=50)
    assert torch.equal(clean[0][0], torch.tensor(units))
    got = noisy[0][0]
    changed = (got != torch.tensor(units)).float().mean().item()
    assert 0.12 < changed < 0.28
    assert int(got.min()) >= 3 and int(got.max()) < 50
    with pytest.raises(ValueError, match="unit_noise"):
        UnitTranscriptDataset([(units, "ab")], alphabet, unit_noise=1.5, vocab_size=50)
