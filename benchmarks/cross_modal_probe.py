"""How fast does a fused system start to use the other modality?

Fine-tunes one system of the speech-text experiment on one direction (ASR by
default), starting from the pre-trained towers of a finished (or partly
finished) ``multitower run configs/zipper_speech_text.yaml`` run directory, and
every ``--eval-every`` steps prints the test loss with the right input and with
a wrong one (each utterance paired with the next transcript). The difference is
what the system gets from the other modality; zero means its fine-tuning gains
are unimodal. At the end it prints the greedy ASR WER on the test subset.

It answers the questions the full recipe's table cannot at its budget: which
input projection, gate learning rate or cross-attention interval lets Zipper
learn cross-modal use fastest, and how that compares with the
vocabulary-expansion baseline at the same number of steps.

Run (after the recipe's pre-training stages)::

    python benchmarks/cross_modal_probe.py --run-dir runs/zipper_speech_text \\
        --system zipper --input-projection residual --gate-lr 1e-2 --steps 600

Last line: ``asr_loss_matched=<x> asr_loss_mismatched=<y> asr_wer=<z>``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from multitower.data.speech.librispeech import read_librispeech
from multitower.data.tokenizer import TextTokenizer
from multitower.experiments.zipper_speech_text.config import SYSTEMS
from multitower.experiments.zipper_speech_text.evaluate import (
    input_dependence,
    synthesize_units,
    transcribe_units,
    wer,
)
from multitower.experiments.zipper_speech_text.experiment import build_system
from multitower.experiments.zipper_speech_text.pairs import (
    InterleavedLMTask,
    PairedDirections,
    interleaved_collate,
)
from multitower.models.decoder import DecoderTower
from multitower.models.pretrained import load_pretrained
from multitower.models.zipper import ZipperConfig
from multitower.train.data import epoch_order
from multitower.train.optim import build_optimizer, lr_factor


class _Decode:
    batch_size = 50
    max_new_text = 96
    max_new_speech = 300
    temperature = 0.0
    top_k = None
    tts_beam_size = 1  # greedy: the probes' recorded figures are greedy


def tts_transcripts(model: torch.nn.Module, scorer: tuple, test: list) -> list[str]:
    """Greedy TTS of the test transcripts, heard by the run's TTS scorer
    (``load_scorer``'s recogniser, alphabet and decoder)."""
    from multitower.experiments.zipper_speech_text.recognizer import transcribe

    recognizer, alphabet, decoder = scorer
    decode = _Decode()  # at most what the speech tower holds (bos and eos counted)
    decode.max_new_speech = min(_Decode.max_new_speech, model.max_seq_lens["speech"] - 2)
    speech = synthesize_units(model, [t for _, t in test], decode)
    return transcribe(recognizer, alphabet, speech, decoder=decoder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--system", default="zipper", choices=list(SYSTEMS))
    p.add_argument("--directions", default="asr", help="asr, tts or asr,tts")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4, help="tower lr (the baseline: --fusion-lr)")
    p.add_argument("--fusion-lr", type=float, default=1e-3)
    p.add_argument("--gate-lr", type=float, default=None)
    p.add_argument(
        "--decay-fraction",
        type=float,
        default=1.0,
        help="the cosine decays over this last fraction of the steps (1: all; "
        "e.g. 0.2: warmup-stable-decay)",
    )
    p.add_argument("--input-projection", default="residual", choices=["paper", "residual", "none"])
    p.add_argument("--cross-attention-every", type=int, default=2)
    p.add_argument(
        "--position-scale",
        default="none",
        help="fusion.position_scales for text (speech: 1): a number, 'auto' (aligned units "
        "per text token) or 'none' (position-free cross-attention, the paper's)",
    )
    p.add_argument(
        "--shares",
        default=None,
        help="with both directions: each direction's share of the loss, e.g. asr=0.5,tts=0.5 "
        "(default: every target token weighs the same)",
    )
    p.add_argument(
        "--group-by-length",
        type=int,
        default=0,
        help="length-grouped batches as TrainConfig.group_by_length (0: random batches)",
    )
    p.add_argument(
        "--input-noise",
        type=float,
        default=0.0,
        help="replace each output-modality input token by a random one with this probability",
    )
    p.add_argument(
        "--distance-bias",
        action="store_true",
        help="ALiBi-style distance bias in cross-attention (fusion.cross_distance_bias; "
        "needs positions)",
    )
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--wer-every-eval",
        action="store_true",
        help="also decode the test subset at every evaluation (a WER learning curve)",
    )
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    run = a.run_dir
    missing = [
        str(run / f)
        for f in (
            "text/tokenizer.json",
            "units/encoded.json",
            "pretrain_text/model",
            "pretrain_speech/model",
        )
        if not (run / f).exists()
    ]
    if missing:
        raise SystemExit(f"{run} is missing {missing}: run the recipe's pre-training first")
    text_tok = TextTokenizer.load(run / "text" / "tokenizer.json")
    units = json.loads((run / "units" / "encoded.json").read_text())
    transcripts = {
        split: [u.transcript for u in read_librispeech(run / "corpus" / split)]
        for split in ("aligned", "test")
    }
    aligned = [(u, text_tok.encode(t)) for u, t in zip(units["aligned"], transcripts["aligned"])]
    test_texts = transcripts["test"][: a.n_test]
    test = [(u, text_tok.encode(t)) for u, t in zip(units["test"], test_texts)]
    text = load_pretrained(run / "pretrain_text" / "model", DecoderTower)
    speech = load_pretrained(run / "pretrain_speech" / "model", DecoderTower)
    scales: dict[str, float] = {}
    if a.position_scale != "none":
        ratio = (
            sum(len(u) for u, _ in aligned) / sum(len(t) for _, t in aligned)
            if a.position_scale == "auto"
            else float(a.position_scale)
        )
        scales = {"speech": 1.0, "text": ratio}
    fusion = ZipperConfig(
        {"speech": speech.config, "text": text.config},
        cross_attention_every=a.cross_attention_every,
        input_projection=a.input_projection,
        fusion_mlp_ratio=1.0,
        position_scales=scales,
        cross_distance_bias=a.distance_bias,
    )
    model = build_system(a.system, text, speech, fusion, 0)
    baseline = SYSTEMS[a.system]["kind"] == "baseline"
    optimizer = build_optimizer(
        model,
        lr=a.fusion_lr if baseline else a.lr,
        fusion_lr=None if baseline else a.fusion_lr,
        gate_lr=None if baseline else a.gate_lr,
        weight_decay=0.1,
    )
    shares = None
    if a.shares:
        per_direction = {k: float(v) for k, v in (kv.split("=") for kv in a.shares.split(","))}
        shares = {{"asr": "text", "tts": "speech"}[k]: v for k, v in per_direction.items()}
    collate = interleaved_collate(model.modalities, shares)
    directions = tuple(a.directions.split(","))
    data = PairedDirections(aligned, directions)
    scorer = None
    if "tts" in directions:
        from multitower.experiments.zipper_speech_text.recognizer import load_scorer

        scorer = load_scorer(run / "recognizer")
    task = InterleavedLMTask(a.input_noise, model.modalities)
    rng = random.Random(0)
    order: list[int] = []
    epoch = 0
    print(
        f"{a.system} input_projection={a.input_projection} gate_lr={a.gate_lr} "
        f"every={a.cross_attention_every} directions={a.directions} pairs={len(aligned)} "
        f"position_scales={scales or None} shares={shares} group_by_length={a.group_by_length} "
        f"input_noise={a.input_noise} batch_size={a.batch_size} distance_bias={a.distance_bias}",
        flush=True,
    )
    t0 = time.time()
    for step in range(a.steps):
        model.train()
        if len(order) < a.batch_size:
            if a.group_by_length:  # whole grouped batches of a new epoch, as the Trainer reads
                full = len(data) // a.batch_size * a.batch_size
                order = epoch_order(
                    len(data),
                    0,
                    epoch,
                    lengths=data.lengths(),
                    group=a.group_by_length,
                    batch_size=a.batch_size,
                ).tolist()[:full]
            else:
                fresh = list(range(len(data)))
                rng.shuffle(fresh)
                order += fresh
            epoch += 1
        batch = collate([data[i] for i in order[: a.batch_size]])
        del order[: a.batch_size]
        factor = lr_factor(
            step,
            warmup_steps=50,
            max_steps=a.steps,
            min_lr_ratio=0.1,
            decay_fraction=a.decay_fraction,
        )
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        loss = task.compute_loss(model, batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done % a.eval_every == 0 or done == a.steps:
            losses = input_dependence(model, test)
            gates = [
                abs(float(torch.tanh(prm.detach())))
                for name, prm in model.named_parameters()
                if name.startswith("fusion.") and "gate" in name
            ]
            shown = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            gate = f" max|tanh(gate)|={max(gates):.3f}" if gates else ""
            if a.wer_every_eval and done < a.steps:
                if "asr" in directions:
                    hyps = transcribe_units(model, [u for u, _ in test], text_tok, _Decode)
                    gate += f" asr_wer={wer(test_texts, hyps):.3f}"
                if scorer is not None:
                    gate += f" tts_wer={wer(test_texts, tts_transcripts(model, scorer, test)):.3f}"
            print(f"step {done}: {shown}{gate} ({time.time() - t0:.0f} s)", flush=True)
    if scorer is not None:
        tts_hyps = tts_transcripts(model, scorer, test)
        for ref, hyp in list(zip(test_texts, tts_hyps))[:3]:
            print(f"  ref: {ref}\n  tts: {hyp}")
        tts_wer = wer(test_texts, tts_hyps)
        print(
            f"tts_loss_matched={losses['tts_loss_matched']:.4f} "
            f"tts_loss_mismatched={losses['tts_loss_mismatched']:.4f} tts_wer={tts_wer:.4f}",
            flush=True,
        )
        if "asr" not in directions:
            return
    hyps = transcribe_units(model, [u for u, _ in test], text_tok, _Decode)
    for ref, hyp in list(zip(test_texts, hyps))[:3]:
        print(f"  ref: {ref}\n  hyp: {hyp}")
    print(
        f"asr_loss_matched={losses['asr_loss_matched']:.4f} "
        f"asr_loss_mismatched={losses['asr_loss_mismatched']:.4f} "
        f"asr_wer={wer(test_texts, hyps):.4f}"
    )


if __name__ == "__main__":
    main()
