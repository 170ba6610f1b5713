"""Hugging Face causal LMs as Zipper towers: logit and decoding parity with the HF model,
causality, freezing, strict loading, saving only the fusion, the missing-extra message.

Every HF model is a tiny randomly initialised config built here; nothing is downloaded.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from multitower.generation import generate  # noqa: E402
from multitower.interleave import Segment, collate_interleaved  # noqa: E402
from multitower.losses import interleaved_next_token_loss  # noqa: E402
from multitower.models.decoder import DecoderConfig, DecoderTower  # noqa: E402
from multitower.models.hf_tower import (  # noqa: E402
    HFTower,
    HFTowerConfig,
    hf_tower_config,
    load_hf_tower,
)
from multitower.models.pretrained import load_pretrained, save_pretrained  # noqa: E402
from multitower.models.zipped import load_zipped, save_zipped, zip_towers  # noqa: E402
from multitower.models.zipper import Zipper, ZipperConfig  # noqa: E402

PAD, BOS, EOS = 0, 1, 2
VOCAB = 61
IDS = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS, "vocab_size": VOCAB}
# A wide init so that greedy decoding of a random model does not repeat one token.
INIT = {"initializer_range": 0.3}
SPEECH = DecoderConfig(vocab_size=30, d_model=24, num_layers=2, num_heads=4, max_seq_len=64)


def tiny_hf(arch: str, seed: int = 0, **overrides):
    """A tiny randomly initialised HF causal LM in eval mode."""
    torch.manual_seed(seed)
    t = transformers
    rotary = {
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "num_attention_heads": 4,
        **IDS,
        **INIT,
    }
    if arch == "gpt2":  # learned positions, LayerNorm, fused qkv (Conv1D)
        kw = {"n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64, **IDS, **INIT}
        model = t.GPT2LMHeadModel(t.GPT2Config(**{**kw, **overrides}))
    elif arch == "llama":  # RoPE, RMSNorm, grouped-query attention
        kw = {"hidden_size": 32, "num_hidden_layers": 3, "num_key_value_heads": 2, **rotary}
        model = t.LlamaForCausalLM(t.LlamaConfig(**{**kw, **overrides}))
    elif arch == "qwen2":  # as Llama, with biases on q/k/v
        kw = {"hidden_size": 48, "num_hidden_layers": 2, "num_key_value_heads": 2, **rotary}
        model = t.Qwen2ForCausalLM(t.Qwen2Config(**{**kw, **overrides}))
    elif arch == "gemma":  # scaled embeddings, (1 + w) RMSNorm, one key/value head
        kw = {"hidden_size": 32, "num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 8}
        model = t.GemmaForCausalLM(t.GemmaConfig(**{**kw, **rotary, **overrides}))
    else:
        raise AssertionError(arch)
    return model.eval()


def tower_of(hf) -> HFTower:
    """An HFTower of a copy of ``hf`` (same attention implementation; ``hf`` stays the reference)."""
    tower = HFTower(hf_tower_config(hf), copy.deepcopy(hf))
    assert tower.hf_config._attn_implementation == hf.config._attn_implementation
    return tower


def zip_with_speech(
    hf, *, gates: float = 0.0, projection: str = "residual", seed: int = 1
) -> Zipper:
    torch.manual_seed(seed)
    tower = tower_of(hf)
    config = ZipperConfig(
        {"text": tower.config, "speech": SPEECH},
        cross_attention_every=1,
        input_projection=projection,
    )
    model = Zipper(config, towers={"text": tower})
    with torch.no_grad():
        for g in model.gate_parameters():
            g.fill_(gates)
    return model.eval()


ARCHS = ["gpt2", "llama", "qwen2", "gemma"]
EXAMPLES = [
    [Segment("speech", [5, 6, 7, 8]), Segment("text", [3, 4, 5, 9, 10])],
    [Segment("text", [7, 8]), Segment("speech", [10, 11, 12])],
    [Segment("text", [9, 11, 12]), Segment("speech", [4]), Segment("text", [6, 7, 8, 13])],
]


@pytest.mark.parametrize(
    ("arch", "attention"), [(a, "sdpa") for a in ARCHS] + [("gpt2", "eager"), ("llama", "eager")]
)
def test_zero_gate_residual_zip_gives_exactly_the_hf_logits(arch, attention):
    hf = tiny_hf(arch, attn_implementation=attention)
    model = zip_with_speech(hf)
    assert set(model.towers["text"].state_dict()) == set(hf.state_dict())  # HF names kept
    batch = collate_interleaved(EXAMPLES, model.modalities)
    with torch.no_grad():
        got = model(batch)["text"]
        want = hf(batch["text"].tokens).logits  # right padding: causal, pads come last
    if (arch, attention) == ("gpt2", "eager"):  # equal to float rounding (~1e-6), not bitwise
        torch.testing.assert_close(got, want)
    else:
        assert torch.equal(got, want)
    # the fusion blocks did run: with gates open the logits move
    open_model = zip_with_speech(hf, gates=1.0)
    with torch.no_grad():
        assert not torch.allclose(open_model(batch)["text"], want)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_greedy_decoding_equals_uncached_and_the_hf_generate(arch):
    hf = tiny_hf(arch)
    model = zip_with_speech(hf)
    prompts = [
        [Segment("text", [5, 6, 7])],
        [Segment("text", [8, 9, 10, 11, 12, 13])],
        [Segment("text", [20])],
    ]
    n = 12
    cached = generate(model, prompts, ["text"], max_new_tokens=n, use_cache=True)
    full = generate(model, prompts, ["text"], max_new_tokens=n, use_cache=False)
    assert cached == full
    for prompt, out in zip(prompts, cached):
        ids = torch.tensor([[BOS, *prompt[0].tokens, EOS, BOS]])  # prompt segment, then bos
        new = hf.generate(
            ids,
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=EOS,
            pad_token_id=PAD,
            suppress_tokens=[PAD, BOS],  # never sampled by Zipper's decoding
        )[0, ids.shape[1] :].tolist()
        new = new[: new.index(EOS)] if EOS in new else new
        assert list(out[0].tokens) == new
    assert len({t for out in cached for t in out[0].tokens}) > 3  # not one repeated token


@pytest.mark.parametrize(
    ("arch", "attention"), [("gpt2", "sdpa"), ("llama", "sdpa"), ("llama", "eager")]
)
def test_cross_modal_decoding_with_open_gates_is_cache_exact(arch, attention):
    hf = tiny_hf(arch, attn_implementation=attention)
    assert hf.config._attn_implementation == attention
    model = zip_with_speech(hf, gates=0.7, projection="paper")
    prompts = [[Segment("speech", [5, 6, 7])], [Segment("text", [8, 9]), Segment("speech", [4])]]
    outputs = ["text", "speech"]
    cached = generate(model, prompts, outputs, max_new_tokens=6, use_cache=True)
    full = generate(model, prompts, outputs, max_new_tokens=6, use_cache=False)
    assert cached == full


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_changing_a_later_token_never_changes_earlier_logits_with_gates_open(arch):
    model = zip_with_speech(tiny_hf(arch), gates=1.0, projection="paper").double()
    base = [Segment("text", [3, 4, 5]), Segment("speech", [6, 7, 8]), Segment("text", [9, 10])]
    with torch.no_grad():
        ref = model(collate_interleaved([base], model.modalities))
        # the changed speech token is speech's 4th (global position 8, after text's 0..4)
        later = [base[0], Segment("speech", [6, 7, 20]), base[2]]
        out = model(collate_interleaved([later], model.modalities))
        torch.testing.assert_close(out["text"][:, :5], ref["text"][:, :5], rtol=0, atol=0)
        torch.testing.assert_close(out["speech"][:, :3], ref["speech"][:, :3], rtol=0, atol=0)
        # ...while text after it does see the change (cross-attention is live)
        assert not torch.equal(out["text"][:, 5:], ref["text"][:, 5:])
        earlier_text = [Segment("text", [3, 4, 30]), base[1], base[2]]
        out = model(collate_interleaved([earlier_text], model.modalities))
        assert not torch.equal(out["speech"], ref["speech"])


def test_towers_of_different_widths_and_depths_zip_with_each_other():
    gpt2, llama = tiny_hf("gpt2"), tiny_hf("llama", hidden_size=48, num_hidden_layers=2)
    model = zip_towers({"text": gpt2, "other": llama}, fusion={"cross_attention_every": 1})
    with torch.no_grad():
        for g in model.gate_parameters():
            g.fill_(0.5)
    model.eval()
    assert (model.config.towers["text"].d_model, model.config.towers["other"].d_model) == (32, 48)
    prompts = [[Segment("text", [5, 6, 7])], [Segment("other", [8]), Segment("text", [9])]]
    cached = generate(model, prompts, ["other", "text"], max_new_tokens=5, use_cache=True)
    full = generate(model, prompts, ["other", "text"], max_new_tokens=5, use_cache=False)
    assert cached == full


def test_a_frozen_hf_tower_stays_bit_identical_after_a_training_step():
    model = zip_with_speech(tiny_hf("llama"), gates=0.5).train()
    model.freeze_towers(["text"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    batch = collate_interleaved(
        EXAMPLES, model.modalities, loss_weights={"text": 1.0, "speech": 1.0}
    )
    loss = interleaved_next_token_loss(model(batch), batch)
    loss.backward()
    assert all(p.grad is None for p in model.towers["text"].parameters())
    opt.step()
    after = model.state_dict()
    text = [k for k in after if k.startswith("towers.text.")]
    assert text and all(torch.equal(after[k], before[k]) for k in text)
    changed = [
        k
        for k in after
        if k.startswith(("fusion.", "towers.speech.")) and not torch.equal(after[k], before[k])
    ]
    assert any(k.startswith("fusion.") for k in changed)
    assert any(k.startswith("towers.speech.") for k in changed)


def test_load_hf_tower_reads_a_local_folder_and_lists_every_mismatched_key(tmp_path):
    import safetensors.torch

    hf = tiny_hf("gpt2")
    hf.save_pretrained(tmp_path / "good")
    tower = load_hf_tower(tmp_path / "good")
    for k, v in hf.state_dict().items():
        assert torch.equal(tower.state_dict()[k], v), k
    bad = tmp_path / "bad"
    hf.save_pretrained(bad)
    path = next(bad.glob("*.safetensors"))
    state = safetensors.torch.load_file(path)
    del state["transformer.h.0.ln_1.bias"]
    state["transformer.h.0.extra"] = torch.zeros(3)
    state["transformer.h.1.ln_2.weight"] = torch.zeros(7)
    safetensors.torch.save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        load_hf_tower(bad)
    message = str(err.value)
    assert "3 difference(s)" in message
    assert "missing key 'transformer.h.0.ln_1.bias'" in message
    assert "unexpected key 'transformer.h.0.extra'" in message
    assert "shape mismatch for 'transformer.h.1.ln_2.weight'" in message


def test_only_local_safetensors_folders_are_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_hf_tower("openai-community/gpt2")
    hf = tiny_hf("gpt2")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps(hf.config.to_dict()))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"\.bin checkpoints are not read"):
        load_hf_tower(tmp_path / "pickled")


def test_special_ids_must_be_three_different_ids():
    gpt2 = tiny_hf("gpt2", bos_token_id=5, eos_token_id=5)
    with pytest.raises(ValueError, match="three different ids"):
        hf_tower_config(gpt2)
    assert hf_tower_config(gpt2, eos_id=EOS).eos_id == EOS
    with pytest.raises(ValueError, match="pad_id: the HF config has no pad_token_id"):
        hf_tower_config(tiny_hf("gpt2", pad_token_id=None))
    with pytest.raises(ValueError, match=r"hf_config\.model_type 'bert' is not supported"):
        HFTowerConfig({"model_type": "bert"}, PAD, BOS, EOS)


def zipped_from_folders(tmp_path, *, freeze: bool = True) -> Zipper:
    hf = tiny_hf("qwen2")
    hf.save_pretrained(tmp_path / "text_lm")
    torch.manual_seed(3)
    save_pretrained(DecoderTower(SPEECH), tmp_path / "speech_lm")
    model = zip_towers(
        {"text": tmp_path / "text_lm", "speech": tmp_path / "speech_lm"},
        fusion={"cross_attention_every": 1},
    )
    if freeze:
        model.freeze_towers(["text", "speech"])
    with torch.no_grad():
        for p in model.fusion_parameters():
            p.add_(0.1 * torch.randn_like(p))  # as if trained
    return model.eval()


def test_save_zipped_writes_only_the_fusion_and_a_manifest_and_reload_rebuilds(tmp_path):
    model = zipped_from_folders(tmp_path)
    save_zipped(model, tmp_path / "zip")
    import safetensors.torch

    keys = safetensors.torch.load_file(tmp_path / "zip" / "fusion.safetensors").keys()
    assert keys and all(k.startswith("fusion.") for k in keys)
    manifest = json.loads((tmp_path / "zip" / "towers.json").read_text())["towers"]
    assert manifest["text"]["kind"] == "hf"
    assert manifest["text"]["path"] == str((tmp_path / "text_lm").resolve())
    assert manifest["speech"]["kind"] == "multitower"
    assert all(len(e["sha256"]) == 64 for e in manifest.values())
    again = load_zipped(tmp_path / "zip").eval()
    batch = collate_interleaved(EXAMPLES, model.modalities)
    with torch.no_grad():
        want, got = model(batch), again(batch)
    for name in want:
        assert torch.equal(got[name], want[name])
    assert not any(p.requires_grad for p in again.towers.parameters())


def test_a_changed_source_folder_is_refused_on_reload(tmp_path):
    model = zipped_from_folders(tmp_path)
    save_zipped(model, tmp_path / "zip")
    config = json.loads((tmp_path / "text_lm" / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (tmp_path / "text_lm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"differs from the .* recorded when the model was zipped"):
        load_zipped(tmp_path / "zip")


def test_unfrozen_and_in_memory_towers_are_stored(tmp_path):
    model = zipped_from_folders(tmp_path, freeze=False)
    with torch.no_grad():
        next(model.towers["text"].parameters()).add_(1.0)  # fine-tuned: the folder is stale
    save_zipped(model, tmp_path / "zip")
    manifest = json.loads((tmp_path / "zip" / "towers.json").read_text())["towers"]
    assert manifest == {"text": {"kind": "stored"}, "speech": {"kind": "stored"}}
    again = load_zipped(tmp_path / "zip").eval()
    batch = collate_interleaved(EXAMPLES, model.modalities)
    with torch.no_grad():
        assert torch.equal(again(batch)["text"], model(batch)["text"])


def test_save_pretrained_round_trips_a_zipper_with_an_hf_tower(tmp_path):
    model = zip_with_speech(tiny_hf("gemma"), gates=0.3)
    save_pretrained(model, tmp_path / "z")
    again = load_pretrained(tmp_path / "z", Zipper).eval()
    assert again.config == model.config
    batch = collate_interleaved(EXAMPLES, model.modalities)
    with torch.no_grad():
        assert torch.equal(again(batch)["text"], model(batch)["text"])


def test_zip_towers_rejects_unknown_fusion_keys_and_towers():
    with pytest.raises(ValueError, match="fusion: unknown key"):
        zip_towers({"text": tiny_hf("gpt2"), "speech": DecoderTower(SPEECH)}, fusion={"gate": 1})
    with pytest.raises(ValueError, match="special_ids: unknown tower"):
        zip_towers({"text": tiny_hf("gpt2")}, special_ids={"image": {"bos_id": 1}})
    with pytest.raises(ValueError, match="towers\\['text'\\]: expected a folder"):
        zip_towers({"text": 3, "speech": DecoderTower(SPEECH)})


def test_a_bad_hf_tower_field_in_a_saved_config_is_named(tmp_path):
    from multitower.config import ConfigError

    save_pretrained(zip_with_speech(tiny_hf("gpt2")), tmp_path / "z")
    path = tmp_path / "z" / "config.json"
    data = json.loads(path.read_text())
    data["towers"]["text"]["bos_id"] = "1"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"Zipper: towers\.text\.bos_id: expected int, got '1'"):
        load_pretrained(tmp_path / "z")


@pytest.mark.parametrize(("arch", "tied"), [("gpt2", True), ("llama", False)])
def test_vocabulary_expansion_of_an_hf_tower_keeps_its_logits_and_round_trips(arch, tied, tmp_path):
    from multitower.models.baseline import VocabExpansionLM, expand_vocabulary

    hf = tiny_hf(arch, tie_word_embeddings=tied)
    tower = tower_of(hf)
    joint = expand_vocabulary(
        tower, "text", {"speech": 30}, generator=torch.Generator().manual_seed(0)
    ).eval()
    assert (
        joint.config.tower.vocab_size == VOCAB + 30 and joint.modalities["speech"].offset == VOCAB
    )
    tokens = torch.tensor([[BOS, 5, 6, 7, 8, EOS]])
    with torch.no_grad():
        logits = joint.tower(tokens)
        assert torch.equal(logits[..., :VOCAB], hf(tokens).logits)  # old rows and weights kept
    grown = [k for k, v in joint.tower.state_dict().items() if v.shape[0] == VOCAB + 30]
    # GPT-2's head is its embedding; Llama's untied head grows too
    assert sorted(grown) == sorted(
        ["transformer.wte.weight", "lm_head.weight"]
        if arch == "gpt2"
        else ["model.embed_tokens.weight", "lm_head.weight"]
    )
    for key in grown:
        new_rows = joint.tower.state_dict()[key][VOCAB:]
        mean = tower.state_dict()[key].mean(0)
        assert (new_rows - mean).abs().max() < 0.15  # mean + normal(0, 0.02) noise
        assert new_rows.std(0).mean() > 0.005  # and not one repeated row
    embed, head = (joint.tower.state_dict()[k] for k in grown)
    assert torch.equal(embed, head) == tied
    save_pretrained(joint, tmp_path / "joint")
    again = load_pretrained(tmp_path / "joint", VocabExpansionLM).eval()
    batch = collate_interleaved(
        [[Segment("text", [5, 6]), Segment("speech", [3, 4, 5])]], joint.modalities
    )
    with torch.no_grad():
        assert torch.equal(again(batch)["joint"], joint(batch)["joint"])
    cached = generate(again, [[Segment("speech", [5, 6, 7])]], ["text"], max_new_tokens=6)
    full = generate(
        again, [[Segment("speech", [5, 6, 7])]], ["text"], max_new_tokens=6, use_cache=False
    )
    assert cached == full
