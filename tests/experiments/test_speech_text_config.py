"""Config of the speech-text experiment: per-fraction steps, per-system fractions, the table."""

from __future__ import annotations

import pytest

from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
from multitower.experiments.zipper_speech_text.evaluate import results_table


def test_runs_and_steps_follow_fractions_and_system_fractions() -> None:
    cfg = SpeechTextConfig(
        fractions=(0.1, 1.0),
        finetune_steps=(30, 300),
        systems=("zipper", "zipper_frozen_text", "baseline"),
        system_fractions={"zipper_frozen_text": (1.0,)},
    )
    assert cfg.runs(0.1) == ["zipper", "baseline"]
    assert cfg.runs(1.0) == ["zipper", "zipper_frozen_text", "baseline"]
    assert cfg.steps(0.1) == 30 and cfg.steps(1.0) == 300
    plain = SpeechTextConfig(fractions=(0.5,))
    assert plain.steps(0.5) == plain.finetune.max_steps
    assert plain.runs(0.5) == list(plain.systems)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"finetune_steps": (10,)}, "one entry per fraction"),
        ({"finetune_steps": (10, 0, 5)}, "must be >= 1"),
        ({"system_fractions": {"zipper_frozen_text": (0.5,)}}, "subset of fractions"),
        ({"system_fractions": {"zipper_frozen_text": ()}}, "subset of fractions"),
        (
            {"systems": ("zipper",), "system_fractions": {"baseline": (1.0,)}},
            "not one of the systems",
        ),
    ],
)
def test_bad_schedules_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpeechTextConfig(fractions=(0.01, 0.1, 1.0), **kwargs)


def test_results_table_shows_losses_and_their_input_dependence() -> None:
    row = {
        "system": "zipper",
        "fraction": 0.1,
        "pairs": 400,
        "steps": 400,
        "selected_step": 150,
        "asr_wer": 0.9,
        "tts_wer": 1.0,
        "asr_loss_matched": 2.5,
        "asr_loss_mismatched": 2.75,
        "tts_loss_matched": 4.0,
        "tts_loss_mismatched": 3.875,
    }
    old = {k: v for k, v in row.items() if "loss" not in k and "step" not in k}
    table = results_table({"results": [row, old], "recognizer_wer_on_real_units": 0.5})
    lines = table.splitlines()
    assert (
        lines[2]
        == "| zipper | 10% | 400 | 400 (150) | 90.0 | 100.0 | 2.500 (+0.250) | 4.000 (-0.125) |"
    )
    assert lines[3] == "| zipper | 10% | 400 | - | 90.0 | 100.0 | - | - |"
    assert "50.0" in lines[-1]


def test_best_checkpoint_keeps_the_lowest_validation_loss_across_restarts(tmp_path) -> None:
    import torch

    from multitower.experiments.zipper_speech_text.pairs import (
        PairedDirections,
        interleaved_collate,
        mean_loss,
    )
    from multitower.models.decoder import DecoderConfig
    from multitower.models.pretrained import load_pretrained
    from multitower.models.zipper import Zipper, ZipperConfig
    from multitower.train.stages import BestCheckpoint

    torch.manual_seed(0)
    towers = {
        "speech": DecoderConfig(vocab_size=20, d_model=16, num_layers=2, num_heads=2),
        "text": DecoderConfig(vocab_size=24, d_model=16, num_layers=2, num_heads=2),
    }
    model = Zipper(ZipperConfig(towers, cross_attention_every=1))
    pairs = [([3 + i % 15, 4, 5 + i % 7], [3, 4 + i % 11]) for i in range(6)]
    valid = PairedDirections(pairs)
    collate = interleaved_collate(model.modalities)
    best = BestCheckpoint(tmp_path / "best", lambda m: mean_loss(m, valid, collate))
    first = best(model, 10)["valid_loss"]
    assert best.record == {"step": 10, "valid_loss": first}
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # a much worse model (huge tied embeddings): not kept
        for name, p in model.named_parameters():
            if "embed" in name:
                p.mul_(50.0)
    worse = best(model, 20)["valid_loss"]
    assert worse > first and best.record["step"] == 10
    again = BestCheckpoint(
        tmp_path / "best", lambda m: mean_loss(m, valid, collate)
    )  # a resumed run
    assert again.record == best.record
    reloaded = load_pretrained(tmp_path / "best" / "model", Zipper)
    for k, v in reloaded.state_dict().items():
        torch.testing.assert_close(v, kept[k])
    assert mean_loss(reloaded, valid, collate) == pytest.approx(first)


def test_a_config_built_in_python_checks_its_fusion_against_its_towers() -> None:
    from dataclasses import replace

    from multitower.models.zipper import ZipperConfig

    base = SpeechTextConfig()
    shallow = replace(base.text_tower, num_layers=2)
    cfg = SpeechTextConfig(text_tower=shallow, speech_tower=shallow)
    assert cfg.fusion.towers == {"speech": shallow, "text": shallow}
    with pytest.raises(ValueError, match=r"fusion: cross_attention_every=3 must lie in \[1, 2\]"):
        SpeechTextConfig(
            text_tower=shallow,
            speech_tower=shallow,
            fusion=ZipperConfig(dict(base.fusion.towers), cross_attention_every=3),
        )


def test_recognizer_scorer_fields_are_validated():
    from multitower.config import build_dataclass

    def section(**values):  # through the whole config: it fills the run-time sizes
        return build_dataclass(SpeechTextConfig, {"recognizer": values}, "").recognizer

    assert section(beam_size=0, lexicon=False, lm_order=0).beam_size == 0
    for bad in (
        {"beam_size": 0},  # greedy cannot use the lexicon or the LM
        {"beam_size": -1},
        {"mask_prob": 1.0},
        {"mask_span": 0},
        {"lm_weights": ()},
        {"scorer_corpus": -1},
    ):
        with pytest.raises(ValueError, match="recognizer"):
            section(**bad)


def test_tts_beam_search_settings_are_validated():
    from multitower.config import build_dataclass

    def section(**values):
        return build_dataclass(SpeechTextConfig, {"eval": values}, "").eval

    assert section().tts_beam_size == 4  # the recipe's synthesis is beam search
    assert section(tts_beam_size=1, temperature=0.8, top_k=20).temperature == 0.8
    for bad, message in (
        ({"tts_beam_size": 0}, "tts_beam_size must be >= 1"),
        ({"tts_length_penalty": -0.5}, "tts_length_penalty must be >= 0"),
        ({"temperature": 0.8}, "takes no temperature or top_k"),
        ({"top_k": 5}, "takes no temperature or top_k"),
    ):
        with pytest.raises(ValueError, match=message):
            section(**bad)


def test_time_positions_are_checked_and_scale_text_by_units_per_token() -> None:
    from multitower.experiments.zipper_speech_text.experiment import time_scales
    from multitower.models.zipper import ZipperConfig

    with pytest.raises(ValueError, match="cross_attention_positions='clock'; allowed"):
        SpeechTextConfig(cross_attention_positions="clock")
    towers = SpeechTextConfig().fusion.towers
    both = ZipperConfig(towers, position_scales={"speech": 1.0, "text": 3.0})
    with pytest.raises(ValueError, match="set one of them"):
        SpeechTextConfig(cross_attention_positions="time", fusion=both)
    biased = ZipperConfig(towers, cross_distance_bias=True)
    with pytest.raises(ValueError, match="cross_distance_bias measures distances in time"):
        SpeechTextConfig(cross_attention_positions="none", fusion=biased)
    assert SpeechTextConfig(
        cross_attention_positions="time", fusion=biased
    ).fusion.cross_distance_bias
    # (8 + 2 + 4 + 2) speech ids over (2 + 2 + 2 + 2) text ids, bos and eos counted
    pairs = [([5] * 8, [7, 8]), ([5] * 4, [9, 9])]
    assert time_scales(pairs) == {"speech": 1.0, "text": 16 / 8}


def test_the_large_gpu_recipe_is_a_valid_config_that_shrinks_to_toy_size() -> None:
    """configs/zipper_speech_text_large.yaml is checked like any config, and the same
    file with toy sizes given as overrides still validates (what the CPU can try)."""
    from pathlib import Path

    from multitower.config import build_dataclass, load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "zipper_speech_text_large.yaml"
    raw = load_config(path)
    assert raw.pop("experiment") == "zipper_speech_text"
    cfg = build_dataclass(SpeechTextConfig, raw, "")
    assert cfg.cross_attention_positions == "time"
    assert cfg.corpus.n_aligned == 40000 and cfg.text_tower.d_model == 512
    assert {cfg.pretrain_text.device, cfg.finetune.device} == {"auto"}
    toy = load_config(
        path,
        [
            "corpus.n_text=200", "corpus.n_unaligned=48", "corpus.n_aligned=48",
            "corpus.n_test=8", "valid_pairs=8", "text_tower.d_model=32",
            "speech_tower.d_model=32", "finetune.batch_size=16", "pretrain_speech.batch_size=16",
            "recognizer.train.batch_size=16", "fractions=[0.5,1.0]", "finetune_steps=[5,10]",
        ],
    )  # fmt: skip
    toy.pop("experiment")
    assert build_dataclass(SpeechTextConfig, toy, "").corpus.n_aligned == 48


def _zipper_and_pairs():
    import torch

    from multitower.models.decoder import DecoderConfig
    from multitower.models.zipper import Zipper, ZipperConfig

    torch.manual_seed(0)
    towers = {
        "speech": DecoderConfig(vocab_size=20, d_model=16, num_layers=2, num_heads=2),
        "text": DecoderConfig(vocab_size=24, d_model=16, num_layers=2, num_heads=2),
    }
    model = Zipper(ZipperConfig(towers, cross_attention_every=1))
    # speech outputs 3-4x longer than text outputs, as in the recipe
    pairs = [([3 + (i + j) % 15 for j in range(9 + i % 4)], [3, 4 + i % 11]) for i in range(6)]
    return model, pairs


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.8, 0.2), (1.0, 0.0)])
def test_direction_shares_mix_each_directions_own_mean_loss(shares) -> None:
    import torch

    from multitower.experiments.zipper_speech_text.pairs import (
        PairedDirections,
        interleaved_collate,
    )
    from multitower.losses import interleaved_next_token_loss

    model, pairs = _zipper_and_pairs()
    model.eval()
    asr, tts = shares

    def loss(items, collate):
        batch = collate(items)
        with torch.no_grad():
            return float(interleaved_next_token_loss(model(batch), batch)), batch

    plain = interleaved_collate(model.modalities)
    both = [PairedDirections(pairs)[i] for i in range(12)]
    asr_mean, _ = loss([x for x in both if "text" in x.loss_weights], plain)
    tts_mean, _ = loss([x for x in both if "speech" in x.loss_weights], plain)
    token_mean, plain_batch = loss(both, plain)
    mixed, batch = loss(both, interleaved_collate(model.modalities, {"text": asr, "speech": tts}))
    assert mixed == pytest.approx(asr * asr_mean + tts * tts_mean, rel=1e-5)
    assert mixed != pytest.approx(token_mean, rel=1e-3)  # token weighting favours speech
    total = sum(float(tb.loss_weights.sum()) for tb in batch.values())
    assert total == pytest.approx(sum(float(tb.loss_weights.sum()) for tb in plain_batch.values()))
    # a batch of one direction only keeps plain weights for it
    only_asr = [x for x in both if "text" in x.loss_weights]
    if asr > 0:
        alone, _ = loss(
            only_asr, interleaved_collate(model.modalities, {"text": asr, "speech": tts})
        )
        assert alone == pytest.approx(asr_mean, rel=1e-5)


def test_direction_shares_bad_values_are_errors() -> None:
    from multitower.experiments.zipper_speech_text.pairs import interleaved_collate

    model, _ = _zipper_and_pairs()
    for bad in ({"text": 1.0, "image": 1.0}, {"text": -1.0}, {"text": 0.0, "speech": 0.0}):
        with pytest.raises(ValueError, match="shares must map modalities"):
            interleaved_collate(model.modalities, bad)
    for shares in ({"asr": 1.0}, {"asr": 0.5, "tts": -0.1}, {"asr": 0, "tts": 0}):
        with pytest.raises(ValueError, match="direction_shares must give asr and tts"):
            SpeechTextConfig(direction_shares=shares)
    cfg = SpeechTextConfig(direction_shares={"asr": 0.7, "tts": 0.3})
    assert cfg.loss_shares() == {"text": 0.7, "speech": 0.3}
    assert SpeechTextConfig().loss_shares() is None


def test_corpus_grammar_settings_are_checked_and_passed_to_the_corpus() -> None:
    from multitower.config import ConfigError, build_dataclass

    def corpus(**values):
        return build_dataclass(SpeechTextConfig, {"corpus": values}, "").corpus

    c = corpus(words_per_list=10, max_words=12)
    speech = c.speech_corpus_config(seed=3)
    assert (speech.words_per_list, speech.max_words, speech.seed) == (10, 12, 3)
    assert corpus().speech_corpus_config(seed=0).words_per_list is None
    for bad, field in (({"words_per_list": 1}, "words_per_list"), ({"max_words": 2}, "max_words")):
        with pytest.raises((ValueError, ConfigError), match=field):
            corpus(**bad)
    with pytest.raises(ConfigError, match=r"corpus\.words_per_list"):
        corpus(words_per_list="ten")
