"""The TTS scorer end to end: train a tiny recogniser, tune its beam + LM decoder, save, load."""

from __future__ import annotations

import json
import random

import pytest
import torch

from multitower.data.charset import CharAlphabet
from multitower.data.ngram_lm import NgramLM
from multitower.experiments.zipper_speech_text.recognizer import (
    UnitTranscriptDataset,
    frame_log_probs,
    load_recognizer,
    train_recognizer,
    transcribe,
)
from multitower.experiments.zipper_speech_text.text_decoder import (
    TextDecoder,
    load_decoder,
    save_decoder,
    tune_decoder,
    word_error_rate,
)
from multitower.models.unit_recognizer import UnitRecognizerConfig
from multitower.train.trainer import TrainConfig

WORDS = ["cab", "dig", "fee", "hag", "bad", "egg", "gib", "ice"]
UNIT_VOCAB = 3 + 2 * 9


def sentences(n: int, rng: random.Random) -> list[str]:
    # a toy grammar: a word from the first half, then one to three from the second
    return [
        " ".join([rng.choice(WORDS[:4]), *rng.choices(WORDS[4:], k=rng.randint(1, 3))])
        for _ in range(n)
    ]


def speak(text: str, codes: dict[str, list[int]], rng: random.Random, noise: float) -> list[int]:
    """Units of a text: each character's code units, some replaced by random ones."""
    units = [u for c in text for u in codes[c]]
    return [rng.randrange(3, UNIT_VOCAB) if rng.random() < noise else u for u in units]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    rng = random.Random(0)
    chars = sorted(set("".join(WORDS)) | {" "})
    pool = list(range(3, UNIT_VOCAB))
    rng.shuffle(pool)
    codes = {c: [pool[i]] for i, c in enumerate(chars)}
    train = [(speak(t, codes, rng, 0.05), t) for t in sentences(600, rng)]
    valid = [(speak(t, codes, rng, 0.25), t) for t in sentences(30, rng)]
    test = [(speak(t, codes, rng, 0.25), t) for t in sentences(30, rng)]
    alphabet = CharAlphabet.from_transcripts(t for _, t in train)
    config = UnitRecognizerConfig(
        unit_vocab_size=UNIT_VOCAB,
        num_chars=alphabet.num_classes,
        d_model=32,
        num_layers=1,
        num_heads=2,
    )
    train_cfg = TrainConfig(
        max_steps=120,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        weight_decay=0.0,
        ckpt_every=0,
        progress="off",
        device="cpu",
        precision="fp32",
        log_every=60,
    )
    run_dir = tmp_path_factory.mktemp("scorer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = train_recognizer(train, alphabet, config, train_cfg, run_dir, mask_prob=0.1)
    torch.set_num_threads(threads)
    lm = NgramLM(sentences(500, random.Random(1)), order=2)
    return {
        "model": model,
        "alphabet": alphabet,
        "valid": valid,
        "test": test,
        "lm": lm,
        "run_dir": run_dir,
    }


def test_tuned_beam_lm_decoder_beats_greedy_and_survives_save_load(scorer):
    model, alphabet, lm = scorer["model"], scorer["alphabet"], scorer["lm"]
    valid_lp = frame_log_probs(model, [u for u, _ in scorer["valid"]])
    base = TextDecoder(alphabet, beam_size=8, lexicon=WORDS, lm=lm)
    tuned, grid = tune_decoder(
        base,
        valid_lp,
        [t for _, t in scorer["valid"]],
        lm_weights=(0.0, 0.5, 1.0),
        word_bonuses=(0.0, 1.0),
    )
    assert len(grid) == 6
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    assert (tuned.lm_weight, tuned.word_bonus) == (best["lm_weight"], best["word_bonus"])

    units = [u for u, _ in scorer["test"]]
    refs = [t for _, t in scorer["test"]]
    greedy = transcribe(model, alphabet, units)
    beam = transcribe(model, alphabet, units, decoder=tuned)
    # every unit of 25% is random at test time: greedy misspells, the lexicon snaps back
    assert word_error_rate(refs, beam) < word_error_rate(refs, greedy)
    assert all(w in WORDS for h in beam for w in h.split())

    save_decoder(tuned, scorer["run_dir"])
    loaded_model, loaded_alphabet = load_recognizer(scorer["run_dir"])
    loaded = load_decoder(scorer["run_dir"], loaded_alphabet)
    assert loaded.describe() == tuned.describe()
    assert transcribe(loaded_model, loaded_alphabet, units, decoder=loaded) == beam


def test_greedy_text_decoder_matches_plain_transcribe_and_missing_file_means_greedy(
    scorer, tmp_path
):
    model, alphabet = scorer["model"], scorer["alphabet"]
    units = [u for u, _ in scorer["test"]] + [[]]
    assert load_decoder(tmp_path, alphabet).beam_size is None
    assert transcribe(model, alphabet, units, decoder=TextDecoder(alphabet)) == transcribe(
        model, alphabet, units
    )
    assert transcribe(model, alphabet, [[]], decoder=TextDecoder(alphabet, beam_size=4)) == [""]


def test_decoder_options_are_checked(scorer, tmp_path):
    alphabet = scorer["alphabet"]
    with pytest.raises(ValueError, match="beam search"):
        TextDecoder(alphabet, lexicon=WORDS)
    with pytest.raises(ValueError, match="beam_size"):
        TextDecoder(alphabet, beam_size=0)
    with pytest.raises(ValueError, match="another alphabet"):
        transcribe(scorer["model"], alphabet, [[3]], decoder=TextDecoder(CharAlphabet(list("ab "))))
    (tmp_path / "decoder.json").write_text(json.dumps({"beam_size": 4}))
    with pytest.raises(ValueError, match=r"decoder\.json"):
        load_decoder(tmp_path, alphabet)


def test_time_masking_hides_about_mask_prob_of_the_units_in_spans():
    alphabet = CharAlphabet(list("ab"))
    data = UnitTranscriptDataset(
        [(list(range(3, 3003)), "ab")], alphabet, mask_prob=0.3, mask_span=4
    )
    torch.manual_seed(0)
    units, _ = data[0]
    masked = (units == 0).tolist()
    # 1 - (1 - p / span) ** span of the units, in runs of at least span units
    assert abs(sum(masked) / len(masked) - (1 - (1 - 0.3 / 4) ** 4)) < 0.03
    runs, n = [], 0
    for m in [*masked, False]:
        if m:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert min(runs[:-1]) >= 4  # the last run may be cut by the end
    with pytest.raises(ValueError, match="mask_prob"):
        UnitTranscriptDataset([([3], "a")], alphabet, mask_prob=1.0)
