"""The speech-text experiment with a Hugging Face text tower read from a local folder
(``text_tower_source``), end to end through the real CLI on the tiny recipe.

The HF model is a tiny randomly initialised Llama saved to a temporary folder with a
byte-level BPE tokenizer trained here; its special ids sit at the end of the
vocabulary (not 0, 1, 2) and its embedding has padding rows past the tokenizer's
ids, so nothing downstream may assume the experiment's own tokenizer layout.
Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from multitower.cli.main import main  # noqa: E402
from multitower.data.sentences import generate_sentences  # noqa: E402
from multitower.models.io import load_safetensors  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "zipper_speech_text_tiny.yaml"
PAD, BOS, EOS = 400, 401, 402  # after the 400 trained tokens
MODEL_VOCAB = 416  # padded past the tokenizer's 403 ids
# The tiny recipe with one fraction and few steps (about a minute on one core).
FAST = [
    "fractions=[1.0]",
    "finetune_steps=[8]",
    "finetune.eval_every=4",
    "systems=[zipper,zipper_frozen_text,baseline]",
    "system_fractions={}",
    "pretrain_speech.max_steps=10",
    "recognizer.train.max_steps=10",
    "recognizer.lm_weights=[0.5]",
    "recognizer.word_bonuses=[1.0]",
    "eval.max_new_text=8",
    "eval.max_new_speech=20",
]


def save_tiny_hf_model(folder: Path, *, tokenizer: bool = True, **config: object) -> Path:
    """A tiny random Llama + byte-level BPE tokenizer, as transformers' save_pretrained writes."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=PAD,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(generate_sentences(300, seed=5), trainer=trainer)
    assert tok.get_vocab_size() == PAD
    tok.add_special_tokens(["<|pad|>", "<|bos|>", "<|eos|>"])
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(
        **{
            "vocab_size": MODEL_VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "pad_token_id": PAD,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "tie_word_embeddings": False,
            **config,
        }
    )
    transformers.LlamaForCausalLM(hf_config).save_pretrained(folder)
    if tokenizer:
        tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the HF model folder, a finished run zipping it)."""
    root = tmp_path_factory.mktemp("hf_speech")
    folder = save_tiny_hf_model(root / "tiny-llama")
    run_dir = root / "run"
    args = ["run", str(TINY), *FAST, f"text_tower_source={folder}"]
    assert main([*args, "--run-dir", str(run_dir), "--quiet", "--jobs", "1"]) == 0
    return folder, run_dir


def test_the_text_tower_is_the_folder_s_and_every_stage_runs(hf_run):
    from multitower.data.tokenizer import TextTokenizer
    from multitower.models.hf_tower import folder_sha256
    from multitower.models.pretrained import load_pretrained

    folder, run_dir = hf_run
    stages = json.loads((run_dir / "stages.json").read_text())
    # not pre-trained: recorded as read from the folder, with its hash
    assert stages["pretrain_text"] == {"source": str(folder), "sha256": folder_sha256(folder)}
    assert not (run_dir / "pretrain_text").exists()
    assert stages["text_tokenizer"]["source"] == str(folder / "tokenizer.json")
    tok = TextTokenizer.load(run_dir / "text" / "tokenizer.json")
    assert (tok.kind, tok.pad_id, tok.bos_id, tok.eos_id) == ("hf", PAD, BOS, EOS)
    assert tok.vocab_size == MODEL_VOCAB
    assert "text tower: " in (run_dir / "run.log").read_text()

    summary = json.loads((run_dir / "results" / "results.json").read_text())
    assert {(r["system"], r["fraction"]) for r in summary["results"]} == {
        ("zipper", 1.0),
        ("zipper_frozen_text", 1.0),
        ("baseline", 1.0),
    }
    for r in summary["results"]:
        assert r["test_loss_final"] < r["test_loss_start"], r
    assert (run_dir / "results" / "results.md").read_text().startswith("| system |")

    weights, _ = load_safetensors(folder / "model.safetensors")
    frozen = load_pretrained(run_dir / "finetune" / "zipper_frozen_text_1" / "model")
    text = frozen.towers["text"].state_dict()
    assert frozen.config.towers["text"].hf_config["model_type"] == "llama"
    assert set(text) == set(weights)  # the HF names, every one
    assert all(torch.equal(text[k], weights[k]) for k in weights)  # bit-identical
    trained = load_pretrained(run_dir / "finetune" / "zipper_1" / "model").towers["text"]
    assert not all(torch.equal(trained.state_dict()[k], weights[k]) for k in weights)
    baseline = load_pretrained(run_dir / "finetune" / "baseline_1" / "model")
    modalities = baseline.modalities
    assert (modalities["text"].bos_id, modalities["speech"].offset) == (BOS, MODEL_VOCAB)


def test_asr_and_tts_on_the_finished_run_without_the_folder(
    hf_run, tmp_path, capsys, multitower_cli
):
    """The fine-tuned models hold their whole text tower: with the HF folder gone, both
    commands still load them (asr in a fresh process) and run."""
    folder, run_dir = hf_run
    wav = sorted((run_dir / "corpus" / "test").rglob("*.flac"))[0]
    hidden = folder.with_name("hidden")
    folder.rename(hidden)
    try:
        done = multitower_cli("asr", str(wav), "--run-dir", str(run_dir))  # zipper_1
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{wav}\t"), done.stdout
        assert main(["asr", str(wav), "--run-dir", str(run_dir), "--model", "baseline_1"]) == 0
        for model in ("zipper_1", "baseline_1"):
            out = tmp_path / f"{model}.wav"
            args = ["tts", "the dog runs", "-o", str(out), "--run-dir", str(run_dir)]
            assert main([*args, "--model", model]) == 0
            assert out.stat().st_size > 100
            assert f"with model {model}" in capsys.readouterr().out
    finally:
        hidden.rename(folder)


def _run(tmp_path: Path, *overrides: str) -> int:
    args = ["run", str(TINY), *FAST, *overrides, "--run-dir", str(tmp_path / "r"), "--quiet"]
    return main(args)


def _refused(tmp_path: Path, capsys, *overrides: str) -> str:
    assert _run(tmp_path, *overrides) != 0
    assert not (tmp_path / "r").exists()  # refused before any work
    return capsys.readouterr().err


def test_a_missing_folder_or_file_is_named_before_any_work(tmp_path, capsys):
    err = _refused(tmp_path, capsys, f"text_tower_source={tmp_path / 'nope'}")
    assert f"text_tower_source: {tmp_path / 'nope'} is not a folder" in err
    folder = save_tiny_hf_model(tmp_path / "m", tokenizer=False)
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}")
    assert "text_tower_source: " in err and "lacks tokenizer.json" in err
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").unlink()
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}")
    assert "lacks *.safetensors" in err


def test_a_model_that_is_not_a_causal_lm_is_refused(tmp_path, capsys):
    folder = save_tiny_hf_model(tmp_path / "m")
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "architectures": ["LlamaModel"]}))
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}")
    assert (
        f"text_tower_source: {folder / 'config.json'} describes ['LlamaModel'], not a causal LM"
        in err
    )
    (folder / "config.json").write_text(json.dumps({**data, "model_type": "bert"}))
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}")
    assert "not a causal LM of a supported family (gemma, gpt2, llama, qwen2)" in err


def test_missing_transformers_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    folder = save_tiny_hf_model(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}")
    assert "text_tower_source: loading" in err and "pip install 'multitower[hf]'" in err


def test_special_ids_must_be_three_different_ids_of_the_tokenizer(tmp_path, capsys):
    folder = save_tiny_hf_model(tmp_path / "m", pad_token_id=None)
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}")
    assert "has no usable pad_token_id (None); set text_tower_special_ids.pad_id" in err
    source = f"text_tower_source={folder}"
    err = _refused(tmp_path, capsys, source, f"text_tower_special_ids={{pad_id: {EOS}}}")
    assert "pad_id, bos_id and eos_id must be three different ids" in err
    assert "text_tower_special_ids" in err
    # an id of the model's padding rows has no token
    err = _refused(tmp_path, capsys, source, "text_tower_special_ids={pad_id: 410}")
    assert "tokenizer.json: pad_id=410 is not an id of the tokenizer" in err
    # accepted: the check passes with the id given
    from multitower.config import build_dataclass, load_config
    from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
    from multitower.experiments.zipper_speech_text.hf_text_tower import check_text_tower_source

    raw = load_config(TINY, [source, f"text_tower_special_ids={{pad_id: {PAD}}}"])
    raw.pop("experiment")
    checked = check_text_tower_source(build_dataclass(SpeechTextConfig, raw, ""))
    assert checked is not None and checked.special_ids == {
        "pad_id": PAD,
        "bos_id": BOS,
        "eos_id": EOS,
    }


def test_a_tokenizer_that_cannot_give_normalised_text_back_is_refused(tmp_path, capsys):
    folder = save_tiny_hf_model(tmp_path / "m")
    # a word-level tokenizer that knows only some words: "z" comes back as nothing
    vocab = {"<|pad|>": 0, "<|bos|>": 1, "<|eos|>": 2, "[UNK]": 3, "the": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|pad|>", "<|bos|>", "<|eos|>", "[UNK]"])
    tok.save(str(folder / "tokenizer.json"))
    ids = "text_tower_special_ids={pad_id: 0, bos_id: 1, eos_id: 2}"
    err = _refused(tmp_path, capsys, f"text_tower_source={folder}", ids)
    assert f"text_tower_source: {folder / 'tokenizer.json'}: the tokenizer does not give" in err
    assert "lower case a-z, space and apostrophe" in err


def test_fusion_settings_are_checked_against_the_hf_tower_s_depth(tmp_path, capsys):
    folder = save_tiny_hf_model(tmp_path / "m")
    # the tiny recipe's own text tower section has 4 layers: only the HF model's 2 count
    err = _refused(
        tmp_path,
        capsys,
        f"text_tower_source={folder}",
        "fusion.cross_attention_every=3",
        "text_tower.num_layers=4",
        "speech_tower.num_layers=4",
    )
    assert "fusion: cross_attention_every=3 must lie in [1, 2]" in err


def test_a_changed_folder_is_refused_when_a_run_resumes(tmp_path, capsys):
    from multitower.config import build_dataclass, load_config
    from multitower.errors import UserError
    from multitower.experiments.zipper_speech_text.config import SpeechTextConfig
    from multitower.experiments.zipper_speech_text.hf_text_tower import (
        check_text_tower_source,
        load_text_tower,
    )
    from multitower.train.stages import Stages

    folder = save_tiny_hf_model(tmp_path / "m")
    raw = load_config(TINY, [f"text_tower_source={folder}"])
    raw.pop("experiment")
    cfg = build_dataclass(SpeechTextConfig, raw, "")
    source = check_text_tower_source(cfg)
    assert source is not None
    stages = Stages(tmp_path)
    tower = load_text_tower(cfg, source.tokenizer, stages)
    assert tower.config.bos_id == BOS
    save_tiny_hf_model(folder, initializer_range=0.5)  # other weights, same layout
    with pytest.raises(UserError, match=r"text_tower_source: .*differs from the .* recorded"):
        load_text_tower(cfg, source.tokenizer, Stages(tmp_path))
