"""The speech-text experiment end to end through the real CLI, on the tiny recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from multitower.cli.main import main
from multitower.experiments.zipper_speech_text.config import SpeechTextConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "zipper_speech_text_tiny.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("speech") / "run"
    assert main(["run", str(TINY), "--run-dir", str(run_dir), "--quiet", "--jobs", "1"]) == 0
    return run_dir


def test_pipeline_writes_results_and_every_model_beats_its_start(tiny_run):
    summary = json.loads((tiny_run / "results" / "results.json").read_text())
    runs = {(r["system"], r["fraction"], r["steps"]) for r in summary["results"]}
    assert runs == {
        ("zipper", 0.5, 20),
        ("baseline", 0.5, 20),
        ("zipper", 1.0, 40),
        ("zipper_frozen_text", 1.0, 40),
        ("baseline", 1.0, 40),
    }
    for r in summary["results"]:
        assert r["test_loss_final"] < r["test_loss_start"], r
        # the kept weights are those of an evaluated step (every 10 and the last)
        assert r["selected_step"] % 10 == 0 and 0 < r["selected_step"] <= r["steps"], r
        assert r["valid_loss"] > 0
    assert (tiny_run / "results" / "results.md").read_text().startswith("| system |")
    assert (tiny_run / "results" / "wer_vs_fraction.png").stat().st_size > 1000
    assert (tiny_run / "results" / "learning_curves.png").stat().st_size > 1000
    # the unaligned split fed only the unit tokenizer and the speech tower
    assert (tiny_run / "units" / "tokenizer").is_dir()
    assert (tiny_run / "config.yaml").is_file()


def test_the_grammar_settings_shape_the_generated_text_corpus(tmp_path):
    from multitower.config import build_dataclass
    from multitower.data import wordlists
    from multitower.experiments.zipper_speech_text.experiment import SpeechTextExperiment

    raw = {"corpus": {"n_text": 1500, "words_per_list": 10, "max_words": 12}}
    experiment = SpeechTextExperiment(build_dataclass(SpeechTextConfig, raw, ""), tmp_path)
    text = experiment.text_corpus(exclude=set())
    assert len(text) > 1000
    assert max(len(s.split()) for s in text) <= 12  # corpus.max_words
    words = {w for s in text for w in s.split()}
    # corpus.words_per_list: 10 keeps the first 10 people, none of the rest
    assert not words & (set(wordlists.PEOPLE[10:]) - set(wordlists.PEOPLE[:10]))
    assert words & set(wordlists.PEOPLE[:10])
    # the speech corpus takes the same grammar (tests/data/test_speech_corpus.py)
    speech = experiment.cfg.corpus.speech_corpus_config(seed=0)
    assert (speech.words_per_list, speech.max_words) == (10, 12)


def test_reported_wers_are_those_of_the_saved_model(tiny_run):
    """Re-evaluating a saved fine-tuned model on the test split gives results.json's WERs.

    This fails if the saved weights are not the evaluated ones (e.g. the best-step
    checkpoint), or if the WERs were computed on other hypotheses or references.
    """
    from multitower.config import build_dataclass, load_config
    from multitower.data.tokenizer import TextTokenizer
    from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
    from multitower.experiments.zipper_speech_text.evaluate import evaluate_system
    from multitower.experiments.zipper_speech_text.experiment import (
        SpeechTextExperiment,
        evaluation_pairs,
    )
    from multitower.experiments.zipper_speech_text.recognizer import load_recognizer
    from multitower.experiments.zipper_speech_text.text_decoder import load_decoder
    from multitower.models.pretrained import load_pretrained

    raw = load_config(tiny_run / "config.yaml")
    raw.pop("experiment")
    cfg = build_dataclass(SpeechTextConfig, raw, "")
    splits = SpeechTextExperiment(cfg, tiny_run, quiet=True).corpus()  # the built corpus
    units = json.loads((tiny_run / "units" / "encoded.json").read_text())
    text_tok = TextTokenizer.load(tiny_run / "text" / "tokenizer.json")
    test, references = evaluation_pairs(splits, units, text_tok, cfg.eval.max_test)
    recognizer, alphabet = load_recognizer(tiny_run / "recognizer")
    decoder = load_decoder(tiny_run / "recognizer", alphabet)
    summary = json.loads((tiny_run / "results" / "results.json").read_text())
    # the tiny Zipper's hypotheses are degenerate; the baselines' differ per fraction
    for system, fraction in (("zipper", 1.0), ("baseline", 0.5)):
        model = load_pretrained(tiny_run / "finetune" / f"{system}_{fraction:g}" / "model")
        metrics = evaluate_system(
            model, test, references, text_tok, recognizer, alphabet, cfg.eval, decoder=decoder
        )
        reported = next(
            r for r in summary["results"] if (r["system"], r["fraction"]) == (system, fraction)
        )
        # WERs, the first hypotheses and the model-specific test losses, exactly
        assert metrics == {k: reported[k] for k in metrics}, system


def test_tts_scorer_is_tuned_on_held_out_pairs_and_its_floor_reported(tiny_run):
    stages = json.loads((tiny_run / "stages.json").read_text())
    decoder = stages["recognizer_decoder"]
    # the default design: beam search + lexicon + 3-gram LM, weights from a grid
    # searched on the valid_pairs held out of the recogniser's training
    assert decoder["decoder"].startswith("beam 64 + lexicon + 3-gram LM")
    assert decoder["tuned_on"] == 8 and len(decoder["grid"]) == 4
    floor = stages["recognizer_eval"]
    assert floor["decoder"] == decoder["decoder"]
    summary = json.loads((tiny_run / "results" / "results.json").read_text())
    assert summary["recognizer_wer_on_real_units"] == floor["wer_on_real_units"]
    saved = json.loads((tiny_run / "recognizer" / "decoder.json").read_text())
    assert saved["beam_size"] == 64 and saved["lm"]["order"] == 3


def test_rerun_skips_finished_stages_and_redoes_a_missing_one(tiny_run, capsys):
    stages = json.loads((tiny_run / "stages.json").read_text())
    before = stages["finetune_zipper_1"]
    del stages["finetune_baseline_1"]
    (tiny_run / "stages.json").write_text(json.dumps(stages))
    shutil.rmtree(tiny_run / "finetune" / "baseline_1")
    # started with --quiet, resumed without it: how progress shows is not the config
    assert main(["run", str(TINY), "--run-dir", str(tiny_run)]) == 0
    after = json.loads((tiny_run / "stages.json").read_text())
    assert after["finetune_zipper_1"] == before  # not retrained
    assert "finetune_baseline_1" in after
    assert (tiny_run / "finetune" / "baseline_1" / "model" / "model.safetensors").is_file()
    # the resumed run's lines carry each stage's own place, not the finished stages + 1
    err = capsys.readouterr().err
    assert "(stage 1 of 14) corpus: " in err
    assert "(stage 14 of 14) finetune baseline on 100% of the aligned pairs" in err  # the last


def test_parallel_finetunes_give_the_rows_of_sequential_ones(tiny_run):
    """Two fine-tunes redone in two worker processes: each row equals the one the
    sequential run recorded (same seeds, one thread each), and the parent, the only
    writer of stages.json, recorded both."""
    stages = json.loads((tiny_run / "stages.json").read_text())
    keys = ["finetune_zipper_0.5", "finetune_baseline_0.5"]
    before = {k: stages.pop(k) for k in keys}
    (tiny_run / "stages.json").write_text(json.dumps(stages))
    for k in keys:
        shutil.rmtree(tiny_run / "finetune" / k.removeprefix("finetune_"))
    args = [
        "run",
        str(TINY),
        "--run-dir",
        str(tiny_run),
        "--quiet",
        "--jobs",
        "2",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    after = json.loads((tiny_run / "stages.json").read_text())

    def timeless(rows):  # a row's wall-clock seconds differ from run to run
        return {k: {f: v for f, v in row.items() if f != "seconds"} for k, row in rows.items()}

    assert timeless({k: after[k] for k in keys}) == timeless(before)
    assert all(after[k]["seconds"] > 0 for k in keys)
    log = (tiny_run / "run.log").read_text()
    assert "fine-tuning 2 systems in 2 processes" in log
    assert "fine-tunes: 1 of 2 done" in log and "min left" in log
    assert "fine-tunes: 2 of 2 done" in log


def test_finetune_eta_scales_the_finished_time_per_step():
    from multitower.experiments.zipper_speech_text.experiment import FinetuneETA

    eta = FinetuneETA({("a", 1.0): 1000, ("b", 1.0): 1000, ("c", 0.1): 200}, jobs=2)
    first = eta.finished(("a", 1.0), 600.0)  # 0.6 s per step; 1,200 steps left on 2 processes
    assert first.startswith("fine-tunes: 1 of 3 done") and first.endswith("about 6 min left")
    second = eta.finished(("b", 1.0), 600.0)  # 200 steps left on one process: 2 min
    assert second.endswith("about 2 min left")
    assert "left" not in eta.finished(("c", 0.1), 100.0)


def test_finetune_eta_while_running_counts_only_this_runs_steps(tmp_path, monkeypatch):
    from multitower.experiments.zipper_speech_text import eta as eta_module
    from multitower.experiments.zipper_speech_text.eta import FinetuneETA, trained_steps

    clock = [1000.0]
    monkeypatch.setattr(eta_module.time, "time", lambda: clock[0])
    # "b" resumes at step 400 of 1,000; "c" has not started
    eta = FinetuneETA({("a", 1.0): 1000, ("b", 1.0): 1000, ("c", 0.1): 200}, 2, {("b", 1.0): 400})
    clock[0] += 600.0  # 10 min: a trained 300 steps, b 300 more (to 700)
    line = eta.progress({("a", 1.0): 300, ("b", 1.0): 700})
    # 600 steps in 600 s; 700 + 300 + 200 = 1,200 steps left: 20 min
    assert line == "fine-tunes: 0 of 3 done, 1,000 of 2,200 steps (10.0 min), about 20 min left"
    assert "left" not in FinetuneETA({("a", 1.0): 10}, 1).progress({})  # nothing trained yet
    # the last step a fine-tune logged, past a line still being written
    train = tmp_path / "train"
    assert trained_steps(train) == 0
    train.mkdir()
    (train / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 3.1}\n{"step": 20, "loss": 2.9}\n{"st'
    )
    assert trained_steps(train) == 20


def test_run_dir_with_another_config_is_refused(tiny_run, capsys):
    rc = main(["run", str(TINY), "finetune.max_steps=41", "--run-dir", str(tiny_run), "--quiet"])
    assert rc == 1
    assert "holds a run with another config" in capsys.readouterr().err


def test_asr_and_tts_commands(tiny_run, tmp_path, capsys):
    wav = sorted((tiny_run / "corpus" / "test").rglob("*.flac"))[0]
    assert main(["asr", str(wav), "--run-dir", str(tiny_run)]) == 0
    capsys.readouterr()
    out = tmp_path / "out.wav"
    assert main(["tts", "the dog runs", "-o", str(out), "--run-dir", str(tiny_run)]) == 0
    assert out.stat().st_size > 1000
    capsys.readouterr()
    args = ["tts", "the dog runs", "-o", str(out), "--run-dir", str(tiny_run), "--check"]
    assert main(args) == 0
    heard = capsys.readouterr().out.splitlines()[-1]
    assert heard.startswith("heard: ") and "against 'the dog runs'" in heard, heard
    # the WER is printed in percent: e.g. 1 word wrong of 3 is 33.3%, not 0.3%
    from multitower.experiments.zipper_speech_text.evaluate import wer

    said = heard.split("'")[1]
    assert f"(WER {100 * wer(['the dog runs'], [said]):.1f}% " in heard, heard
    assert (
        main(["tts", "caf\u00e9 7", "-o", str(tmp_path / "x.wav"), "--run-dir", str(tiny_run)]) == 1
    )
    assert "cannot encode" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    assert main(["asr", str(bad), "--run-dir", str(tiny_run)]) == 1
    assert main(["asr", str(wav), "--run-dir", str(tmp_path)]) == 1
    assert "inference.json is missing" in capsys.readouterr().err
    assert main(["asr", str(wav), "--run-dir", str(tiny_run), "--model", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_bad_experiment_config_is_reported_before_any_work(tmp_path, capsys):
    rc = main(
        [
            "run",
            str(TINY),
            "fractions=[0.0]",
            "systems=[zipper,gpt]",
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "fractions must lie in (0, 1]" in err or "systems" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_scorer_corpus_adds_pairs_without_test_or_held_out_sentences(tmp_path):
    from multitower.config import build_dataclass, load_config
    from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
    from multitower.experiments.zipper_speech_text.experiment import SpeechTextExperiment

    raw = load_config(TINY, ["recognizer.scorer_corpus=12", "recognizer.train.max_steps=5"])
    raw.pop("experiment")
    exp = SpeechTextExperiment(build_dataclass(SpeechTextConfig, raw, ""), tmp_path, quiet=True)
    splits = exp.corpus()
    tok = exp.unit_tokenizer(splits["unaligned"])
    test_texts = {t for _, t, _ in splits["test"]}
    pairs = exp.scorer_corpus(tok, test_texts)
    info = exp.stages.get("scorer_corpus")
    assert info["pairs"] + info["dropped"] == 12 and len(pairs) == info["pairs"] > 0
    assert not {t for _, t in pairs} & test_texts
    assert all(u and min(u) >= 3 for u, _ in pairs)
    assert exp.scorer_corpus(tok, test_texts) == pairs  # cached


def test_asr_reports_conversions_and_refuses_short_silent_and_directory_inputs(
    tiny_run, tmp_path, multitower_cli
):
    flac = sorted((tiny_run / "corpus" / "test").rglob("*.flac"))[0]
    speech, rate = sf.read(flac, dtype="float32")
    assert rate == 16000
    sf.write(tmp_path / "ref.wav", speech, 16000)
    # the same speech at 8 kHz, and as stereo: converted, said so, and still transcribed
    sf.write(tmp_path / "low.wav", speech[::2], 8000)
    sf.write(tmp_path / "stereo.wav", np.stack([speech, speech], axis=1), 16000)
    done = multitower_cli(
        "asr", str(tmp_path / "ref.wav"), str(tmp_path / "stereo.wav"), str(tmp_path / "low.wav"),
        "--run-dir", str(tiny_run),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'low.wav'}: resampled 8000 Hz to 16000 Hz" in done.stderr
    assert f"{tmp_path / 'stereo.wav'}: down-mixed 2 channels to mono" in done.stderr
    assert "ref.wav:" not in done.stderr  # nothing to convert, nothing said
    rows = dict(line.split("\t") for line in done.stdout.splitlines())
    assert rows[str(tmp_path / "stereo.wav")] == rows[str(tmp_path / "ref.wav")]  # same samples

    sf.write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    done = multitower_cli("asr", str(tmp_path / "silent.wav"), "--run-dir", str(tiny_run))
    assert done.returncode == 0, done.stderr
    # one file prints path<TAB>text too, as several do
    assert done.stdout.splitlines() == [f"{tmp_path / 'silent.wav'}\t(no speech)"]
    assert "silence, not transcribed" in done.stderr

    sf.write(tmp_path / "blip.wav", speech[:1600], 16000)  # 0.1 s
    done = multitower_cli("asr", str(tmp_path / "blip.wav"), "--run-dir", str(tiny_run))
    assert done.returncode == 1
    assert "0.10 s of audio is shorter than --min-seconds 0.25" in done.stderr

    done = multitower_cli("asr", str(tmp_path), "--run-dir", str(tiny_run))
    assert done.returncode == 1
    assert f"{tmp_path}: is a directory, not an audio file" in done.stderr


def test_tts_refuses_a_text_longer_than_the_text_tower(tiny_run, tmp_path, multitower_cli):
    text = " ".join(["the red bird sings"] * 80)  # far past the tiny text tower's 256
    done = multitower_cli("tts", text, "-o", str(tmp_path / "x.wav"), "--run-dir", str(tiny_run))
    assert done.returncode == 1
    assert "in tower 'text', longer than its max_seq_len 256" in done.stderr
    assert not (tmp_path / "x.wav").exists()


def test_tts_length_is_capped_from_the_text_and_the_cap_is_reported(
    tiny_run, tmp_path, multitower_cli
):
    from multitower.experiments.zipper_speech_text.speech_rate import (
        speech_length_cap,
        units_per_character,
    )

    rate = units_per_character(tiny_run)
    encoded = json.loads((tiny_run / "units" / "encoded.json").read_text())["aligned"]
    assert 0.2 < rate < 20
    # the cap holds every real aligned utterance of the corpus it was measured on
    from multitower.data.speech.librispeech import read_librispeech
    from multitower.data.text import normalize_text

    texts = [
        normalize_text(u.transcript) for u in read_librispeech(tiny_run / "corpus" / "aligned")
    ]
    assert all(len(u) <= speech_length_cap(t, rate) for t, u in zip(texts, encoded))

    cap = speech_length_cap("the red bird sings", rate)
    done = multitower_cli(
        "tts", "The red bird sings!", "-o", str(tmp_path / "a.wav"), "--run-dir", str(tiny_run)
    )
    assert done.returncode == 0, done.stderr
    units = int(done.stdout.split("(")[1].split(" units")[0])
    assert units <= cap < 256 - 2  # well below the speech tower's room
    hit = f"length cap hit: the model did not end the speech itself; cut at {cap} units"
    assert (hit in done.stdout) == (units == cap), done.stdout


def test_run_log_holds_the_stages_and_progress_lines_of_a_quiet_run(tiny_run):
    log = (tiny_run / "run.log").read_text()
    assert "(stage 1 of 14) corpus: " in log
    assert "speech corpus (stage 1 of 14): 104/104 (100%)" in log
    assert "train pretrain_text (stage 6 of 14): 60/60 (100%) | loss " in log
    # each stage its own place in plan(), not the finished stages plus one: the
    # recogniser (8th) and its decoder tuning (9th) run before the speech tower (7th)
    # with --jobs 1, while pretrain_speech is still unfinished
    assert "train recognizer (stage 8 of 14): " in log
    assert "(stage 9 of 14) recognizer: tuning the decoder on " in log
    assert "train pretrain_speech (stage 7 of 14): " in log
    assert "train zipper_1 (stage 12 of 14): 40/40 (100%) | loss " in log
    assert "] done: results in " in log  # after the last stage, in none


def test_plot_on_an_experiment_directory_plots_every_stage(tiny_run, tmp_path, multitower_cli):
    done = multitower_cli("plot", str(tiny_run), "--out", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    stages = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert stages == sorted(
        ["pretrain_text", "pretrain_speech", "recognizer"]
        + [f"finetune_{r}" for r in ("zipper_0.5", "baseline_0.5", "zipper_1")]
        + [f"finetune_{r}" for r in ("zipper_frozen_text_1", "baseline_1")]
    )
    png = tmp_path / "plots" / "finetune_zipper_1" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in done.stdout.splitlines()


@pytest.mark.slow
def test_the_large_recipe_runs_at_toy_size_with_time_aligned_cross_attention(tmp_path):
    """configs/zipper_speech_text_large.yaml end to end on CPU with toy sizes given as
    overrides (about a minute): every stage, two parallel fine-tunes, and a saved
    Zipper whose cross-attention places text at the measured units per text id
    and carries the distance bias."""
    from multitower.models.pretrained import load_pretrained

    large = ROOT / "configs" / "zipper_speech_text_large.yaml"
    toy = (
        "corpus.n_text=300 corpus.n_unaligned=48 corpus.n_aligned=48 corpus.n_test=8 "
        "valid_pairs=8 text_tokenizer.vocab_size=300 units.codebook_size=32 "
        "text_tower.d_model=32 text_tower.num_layers=2 text_tower.num_heads=2 "
        "speech_tower.d_model=32 speech_tower.num_layers=2 speech_tower.num_heads=2 "
        "pretrain_text.max_steps=10 pretrain_text.warmup_steps=2 pretrain_text.batch_size=16 "
        "pretrain_speech.max_steps=10 pretrain_speech.warmup_steps=2 "
        "pretrain_speech.batch_size=16 finetune.batch_size=16 finetune.eval_every=5 "
        "finetune.warmup_steps=2 recognizer.d_model=32 recognizer.num_layers=1 "
        "recognizer.num_heads=2 recognizer.train.max_steps=10 recognizer.train.warmup_steps=2 "
        "recognizer.train.batch_size=16 fractions=[0.5,1.0] finetune_steps=[5,10] "
        "systems=[zipper,baseline] eval.max_test=8 eval.batch_size=8 eval.max_new_text=16 "
        "eval.max_new_speech=40"
    ).split()
    run_dir = tmp_path / "run"
    args = ["run", str(large), *toy, "--run-dir", str(run_dir), "--quiet", "--jobs", "2"]
    assert main(args) == 0
    summary = json.loads((run_dir / "results" / "results.json").read_text())
    assert {(r["system"], r["fraction"]) for r in summary["results"]} == {
        ("zipper", 0.5), ("zipper", 1.0), ("baseline", 0.5), ("baseline", 1.0)
    }  # fmt: skip
    config = load_pretrained(run_dir / "finetune" / "zipper_1" / "model").config
    scales = config.position_scales
    assert scales["speech"] == 1.0 and 1.0 < scales["text"] < 20.0
    assert config.cross_distance_bias


def test_unit_encoding_resumes_from_its_finished_shards(tmp_path, monkeypatch):
    """An interrupted encoding stage keeps its written shards: a rerun encodes only the
    rest, and a shard holding other utterances (or unreadable) is encoded again."""
    from multitower.experiments.zipper_speech_text import experiment as ex

    monkeypatch.setattr(ex, "ENCODE_SHARD", 2)
    monkeypatch.setattr(ex, "read_audio", lambda path, rate: path)
    calls: list[str] = []

    def fake_ids(tok, audio):
        calls.append(audio.name)
        if audio.name == "u3.flac" and len(calls) == 4:
            raise KeyboardInterrupt  # interrupted inside the second shard
        return [int(audio.stem[1:])]

    monkeypatch.setattr(ex, "speech_ids", fake_ids)
    tok = SimpleNamespace(config=SimpleNamespace(sample_rate=16000))
    items = [(f"u{i}", "t", tmp_path / f"u{i}.flac") for i in range(5)]
    experiment = ex.SpeechTextExperiment(SpeechTextConfig(), tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        experiment.encode_units(tok, {"aligned": items})
    shards = tmp_path / "run" / "units" / "encoding"
    assert sorted(p.name for p in shards.iterdir()) == ["aligned_00000.json"]
    calls.clear()
    encoded = experiment.encode_units(tok, {"aligned": items})
    assert encoded == {"aligned": [[0], [1], [2], [3], [4]]}
    assert calls == ["u2.flac", "u3.flac", "u4.flac"]  # the first shard was not redone
    assert not shards.exists() and experiment.stages.get("encode_units")
    # a shard of other utterances is not reused
    ex.write_json_atomic(
        shards / "aligned_00000.json", {"utterances": ["x", "y"], "units": [[9], [9]]}
    )
    assert ex._read_shard(shards / "aligned_00000.json", ["u0", "u1"]) is None
    (shards / "aligned_00000.json").write_text("{not json")
    assert ex._read_shard(shards / "aligned_00000.json", ["u0", "u1"]) is None


def test_length_grouping_benchmark_runs_on_a_finished_run(tiny_run):
    import re
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "length_grouping.py"
    args = [
        sys.executable,
        str(script),
        "--run-dir",
        str(tiny_run),
        "--pairs",
        "2",
        "--warmup",
        "0",
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
    m = re.fullmatch(r"padding_plain=(\S+) padding_grouped=(\S+) step_ratio=(\S+)", out[-1])
    assert m, out
    plain, grouped, ratio = (float(x) for x in m.groups())
    assert 0 <= grouped < plain < 1 and ratio > 0


@pytest.mark.parametrize(
    "group, extra",
    [("0", []), ("20", ["--distance-bias", "--directions", "asr,tts"])],
    ids=["asr", "both_directions_distance_bias"],
)
def test_cross_modal_probe_runs_on_a_finished_run(tiny_run, group, extra):
    import re
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "cross_modal_probe.py"
    args = [sys.executable, str(script), "--run-dir", str(tiny_run), "--steps", "3"]
    args += ["--batch-size", "8", "--eval-every", "3", "--n-test", "2"]
    args += ["--group-by-length", group, "--position-scale", "auto", *extra]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
    assert f"group_by_length={group}" in out[0]
    assert (f"distance_bias={bool(extra)}") in out[0]
    tts = [line for line in out if line.startswith("tts_loss_matched=")]
    assert len(tts) == (1 if extra else 0), out
    if extra:
        assert re.fullmatch(r"tts_loss_matched=\S+ tts_loss_mismatched=\S+ tts_wer=\S+", tts[0])
    m = re.fullmatch(r"asr_loss_matched=(\S+) asr_loss_mismatched=(\S+) asr_wer=(\S+)", out[-1])
    assert m, out
    assert all(float(x) >= 0 for x in m.groups())


def test_tts_decoding_benchmark_runs_on_a_finished_run(tiny_run):
    import re
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "tts_decoding.py"
    out = (
        subprocess.run(
            [
                sys.executable,
                str(script),
                "--run-dir",
                str(tiny_run),
                "--n",
                "4",
                "--samples",
                "2",
                "--temperatures",
                "0.7",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    m = re.fullmatch(r"greedy_wer=(\S+) best_sampled_wer=(\S+) best_of_k_wer=(\S+)", out[-1])
    assert m, out
    greedy, one, best = (float(x) for x in m.groups())
    assert best <= one + 1e-9  # the best of the draws is never worse than their mean
    assert greedy >= 0

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from tts_decoding import errors_per_sentence
    finally:
        sys.path.pop(0)
    assert errors_per_sentence(["a b c", "a b"], ["a x c d", ""]) == [2, 2]
