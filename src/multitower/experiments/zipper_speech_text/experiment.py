"""The Zipper speech-text experiment end to end (Zipper paper, "Speech and text").

Stages, each resumable (a finished stage is recorded in ``stages.json`` and
skipped on a re-run; an interrupted training resumes from its last checkpoint)::

    corpus      generated sentences + espeak-ng speech in LibriSpeech layout
                (splits: unaligned speech, aligned pairs, held-out test)
    tokenizers  BPE text tokenizer on the text corpus; k-means speech units
                fitted on the unaligned speech only
    pretrain    text tower on text, speech tower on speech units (or the text tower is
                a local Hugging Face causal LM, ``text_tower_source``: hf_text_tower.py)
    recognizer  the TTS scorer: a fixed unit->character CTC recogniser trained once
                on the aligned pairs (minus the held-out ones) and its beam-search
                decoder (lexicon + word n-gram LM of the text corpus, weights tuned
                on the held-out pairs): it transcribes synthesised units
    finetune    per aligned fraction and system (Zipper, frozen variants, the
                vocabulary-expansion baseline): ASR and TTS examples together
    evaluate    ASR WER and TTS WER on the test split; table, JSON, plots
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multitower.config import ConfigError, to_plain
from multitower.data.padding import pad_right
from multitower.data.sentences import generate_sentences
from multitower.data.speech import read_audio
from multitower.data.speech.corpus import build_speech_text_corpus
from multitower.data.speech.units import SpeechUnitTokenizer
from multitower.data.text import normalize_text, read_text_file, read_wordnet_examples
from multitower.data.tokenizer import TextTokenizer
from multitower.experiments.jobs import Job, run_jobs, worker_pool
from multitower.experiments.zipper_speech_text import hf_text_tower
from multitower.experiments.zipper_speech_text.config import (
    SpeechTextConfig,
    tower_config,
)
from multitower.experiments.zipper_speech_text.eta import FinetuneETA, trained_steps
from multitower.experiments.zipper_speech_text.pairs import (
    InterleavedLMTask,
    PairedDirections,
    TokenSequences,
    interleaved_collate,
    mean_loss,
)
from multitower.experiments.zipper_speech_text.systems import (
    build_system,
    evaluation_pairs,
    finetune_config,
    time_scales,
)
from multitower.io import write_json_atomic, write_text_atomic
from multitower.models.decoder import DecoderConfig, DecoderTower
from multitower.models.hf_tower import HFTower
from multitower.models.pretrained import load_pretrained, save_pretrained
from multitower.progress import run_log
from multitower.train.stages import BestCheckpoint, Stages, log, train_resumable
from multitower.train.task import NextTokenTask
from multitower.train.trainer import TrainConfig

UNIT_OFFSET = 3  # speech tower ids: 0 pad, 1 bos, 2 eos, then units


def speech_ids(tok: SpeechUnitTokenizer, audio: torch.Tensor) -> list[int]:
    """The speech tower's ids of a waveform ``(T,)`` at ``tok``'s sample rate: its units
    shifted past the special ids."""
    return [int(u) + UNIT_OFFSET for u in tok.encode(audio)]


class SpeechTextExperiment:
    """Runs (or resumes) every stage in ``run_dir``."""

    def __init__(
        self, config: SpeechTextConfig, run_dir: str | Path, *, quiet: bool = False
    ) -> None:
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stages = Stages(self.run_dir)
        self.quiet = quiet
        self.jobs = 1  # processes that may run at once (:meth:`run`)

    # -- data --------------------------------------------------------------------------------
    def corpus(self) -> dict[str, list[tuple[str, str, Path]]]:
        """Splits -> [(utterance id, transcript, audio path)]."""
        self.stages.begin("corpus")
        c = self.cfg.corpus
        corpus_cfg = c.speech_corpus_config(seed=self.cfg.seed)
        root = Path(c.dir) if c.dir else self.run_dir / "corpus"
        log(f"corpus: {root} ({c.n_unaligned} unaligned, {c.n_aligned} aligned, {c.n_test} test)")
        corpus = build_speech_text_corpus(root, corpus_cfg, quiet=self.quiet)
        self.stages.mark(
            "corpus", {s: v["n_utterances"] for s, v in corpus.manifest["splits"].items()}
        )
        return {
            split: [
                (u.id, normalize_text(u.transcript), Path(u.path)) for u in corpus.utterances(split)
            ]
            for split in ("unaligned", "aligned", "test")
        }

    def text_corpus(self, exclude: set[str]) -> list[str]:
        """Sentences for text-tower pre-training, without the held-out test sentences."""
        self.stages.begin("text_corpus")
        path = self.run_dir / "text" / "sentences.txt"
        if not self.stages.get("text_corpus"):
            c = self.cfg.corpus
            if c.text_source == "generated":
                # Another seed than the speech corpus's sentences.
                source = generate_sentences(
                    c.n_text,
                    seed=self.cfg.seed + 7919,
                    words_per_list=c.words_per_list,
                    max_words=c.max_words,
                )
            elif c.text_source == "wordnet":
                source = read_wordnet_examples()[: c.n_text]
            else:
                source = [normalize_text(s) for s in read_text_file(c.text_source)][: c.n_text]
            sentences = [s for s in source if s and s not in exclude]
            if not sentences:
                raise ValueError(f"corpus.text_source={c.text_source!r} gave no usable sentence")
            write_text_atomic(path, "\n".join(sentences) + "\n")
            self.stages.mark("text_corpus", {"sentences": len(sentences), "source": c.text_source})
        return path.read_text().splitlines()

    def text_tokenizer(self, sentences: list[str]) -> TextTokenizer:
        self.stages.begin("text_tokenizer")
        if self.cfg.text_tower_source is not None:  # the HF model's own
            return hf_text_tower.text_tokenizer(self.cfg, self.run_dir, self.stages)
        path = self.run_dir / "text" / "tokenizer.json"
        if not self.stages.get("text_tokenizer"):
            t = self.cfg.text_tokenizer
            if t.kind == "bpe":
                try:
                    tok = TextTokenizer.train_bpe(sentences, t.vocab_size)
                except ValueError as err:  # too small for the corpus's alphabet
                    raise ConfigError(f"text_tokenizer.vocab_size: {err}") from err
            else:
                tok = TextTokenizer.characters(sentences)
            tok.save(path)
            self.stages.mark("text_tokenizer", {"vocab_size": tok.vocab_size})
        return TextTokenizer.load(path)

    def unit_tokenizer(self, unaligned: list[tuple[str, str, Path]]) -> SpeechUnitTokenizer:
        self.stages.begin("unit_tokenizer")
        path = self.run_dir / "units" / "tokenizer"
        if not self.stages.get("unit_tokenizer"):
            log(
                f"units: fitting k-means ({self.cfg.units.codebook_size} units) on {len(unaligned)} unaligned utterances"
            )
            tok = SpeechUnitTokenizer.fit(
                [p for _, _, p in unaligned], self.cfg.units, quiet=self.quiet
            )
            tok.save(path)
            self.stages.mark("unit_tokenizer", True)
        return SpeechUnitTokenizer.load(path)

    def encode_units(
        self, tok: SpeechUnitTokenizer, splits: dict[str, list[tuple[str, str, Path]]]
    ) -> dict[str, list[list[int]]]:
        self.stages.begin("encode_units")
        path = self.run_dir / "units" / "encoded.json"
        if not self.stages.get("encode_units"):
            log("units: encoding every split")
            shards = self.run_dir / "units" / "encoding"
            encoded = {
                split: self._encode_split(tok, split, items, shards)
                for split, items in splits.items()
            }
            write_text_atomic(path, json.dumps(encoded))
            shutil.rmtree(shards, ignore_errors=True)
            lengths = [len(u) for u in encoded["aligned"]]
            self.stages.mark("encode_units", {"mean_units_per_utt": sum(lengths) / len(lengths)})
        return json.loads(path.read_text())

    def _encode_split(
        self,
        tok: SpeechUnitTokenizer,
        split: str,
        items: list[tuple[str, str, Path]],
        shards: Path,
    ) -> list[list[int]]:
        """One split's units, encoded in shards of :data:`ENCODE_SHARD` utterances, each
        written as it finishes: an interrupted stage re-encodes only the shard it was in.
        A shard is reused only if it holds the same utterances in the same order."""
        out: list[list[int]] = []
        for start in range(0, len(items), ENCODE_SHARD):
            chunk = items[start : start + ENCODE_SHARD]
            names = [uid for uid, _, _ in chunk]
            path = shards / f"{split}_{start // ENCODE_SHARD:05d}.json"
            units = _read_shard(path, names)
            if units is None:
                units = [
                    speech_ids(tok, read_audio(p, tok.config.sample_rate)) for _, _, p in chunk
                ]
                write_json_atomic(path, {"utterances": names, "units": units}, indent=None)
            out.extend(units)
            log(f"units: {split} {start + len(chunk)}/{len(items)} encoded")
        return out

    def scorer_corpus(
        self, tok: SpeechUnitTokenizer, exclude: set[str]
    ) -> list[tuple[list[int], str]]:
        """Extra (units, transcript) pairs for the TTS scorer only (``recognizer.scorer_corpus``).

        A separate corpus (speakers of the main one, sentences drawn with another
        seed) whose sentences in ``exclude`` (the test and held-out pairs') are
        dropped. No system compared ever sees it.
        """
        self.stages.begin("recognizer")  # the scorer corpus is the recogniser's training data
        n = self.cfg.recognizer.scorer_corpus
        if n == 0:
            return []
        path = self.run_dir / "units" / "scorer_encoded.json"
        if not self.stages.get("scorer_corpus"):
            c = self.cfg.corpus
            # the main corpus's speakers and grammar, another seed, aligned pairs only
            corpus_cfg = replace(
                c.speech_corpus_config(seed=self.cfg.seed + 104729),
                n_unaligned=0,
                n_aligned=n,
                n_test=0,
            )
            root = self.run_dir / "scorer_corpus"
            log(f"scorer corpus: {root} ({n} utterances)")
            corpus = build_speech_text_corpus(root, corpus_cfg, quiet=self.quiet)
            pairs = []
            for u in corpus.utterances("aligned"):
                text = normalize_text(u.transcript)
                if text and text not in exclude:
                    audio = read_audio(Path(u.path), tok.config.sample_rate)
                    pairs.append((speech_ids(tok, audio), text))
            write_text_atomic(path, json.dumps(pairs))
            self.stages.mark("scorer_corpus", {"pairs": len(pairs), "dropped": n - len(pairs)})
        return [(list(u), t) for u, t in json.loads(path.read_text())]

    # -- models ------------------------------------------------------------------------------
    def text_tower(self, text_tok: TextTokenizer, sentences: list[str]) -> DecoderTower | HFTower:
        """The text tower: pre-trained on ``sentences``, or read from ``text_tower_source``."""
        cfg = self.cfg
        self.stages.begin("pretrain_text")
        if cfg.text_tower_source is not None:
            return hf_text_tower.load_text_tower(cfg, text_tok, self.stages)
        text_cfg = tower_config(cfg.text_tower, text_tok.vocab_size)
        sequences = [text_tok.encode(s) for s in sentences]
        return self.pretrain("text", text_cfg, sequences, cfg.pretrain_text, cfg.seed)

    def pretrain(
        self,
        name: str,
        cfg: DecoderConfig,
        sequences: list[list[int]],
        train_cfg: TrainConfig,
        seed: int,
        *,
        mark: bool = True,
    ) -> DecoderTower:
        """The pre-trained tower ``name``, trained now unless its stage is finished
        (``mark=False``: a worker process, which leaves the marking to its parent)."""
        self.stages.begin(f"pretrain_{name}")
        stage_dir = self.run_dir / f"pretrain_{name}"
        if not self.stages.get(f"pretrain_{name}"):
            log(
                f"pretrain {name} tower on {len(sequences)} sequences ({train_cfg.max_steps} steps)"
            )
            torch.manual_seed(seed)
            tower = DecoderTower(cfg)
            data = TokenSequences(sequences, cfg.bos_id, cfg.eos_id, cfg.max_seq_len)
            tower = train_resumable(
                tower,
                NextTokenTask(cfg.pad_id),
                data,
                functools.partial(pad_right, pad_value=cfg.pad_id),
                train_cfg,
                stage_dir,
                seed=seed,
            )
            save_pretrained(tower, stage_dir / "model")
            if not mark:
                return tower
            self.stages.mark(f"pretrain_{name}", True)
        return load_pretrained(stage_dir / "model", DecoderTower)

    def recognizer(
        self,
        aligned_units: list[list[int]],
        aligned_text: list[str],
        speech_vocab: int,
        *,
        valid_idx: Sequence[int] = (),
        sentences: Sequence[str] = (),
        extra_pairs: Sequence[tuple[list[int], str]] = (),
    ) -> tuple[nn.Module, Any, Any]:
        """The TTS scorer: ``(recogniser, alphabet, decoder)``, trained and tuned once.

        With ``recognizer.hold_out_valid`` the aligned pairs at ``valid_idx`` are left
        out of training and tune the decoder's LM weight and word bonus; the
        lexicon and the LM come from ``sentences`` (the text tower's corpus, which
        holds no test sentence). ``extra_pairs`` (the scorer corpus) are added to
        the training pairs.
        """
        from multitower.data.charset import CharAlphabet
        from multitower.experiments.zipper_speech_text.recognizer import (
            load_recognizer,
            train_recognizer,
        )
        from multitower.experiments.zipper_speech_text.text_decoder import (
            load_decoder,
            save_decoder,
        )

        self.stages.begin("recognizer")
        stage_dir = self.run_dir / "recognizer"
        r = self.cfg.recognizer
        held = set(valid_idx) if r.hold_out_valid else set()
        if not self.stages.get("recognizer"):
            pairs = [
                (u, t) for i, (u, t) in enumerate(zip(aligned_units, aligned_text)) if i not in held
            ]
            log(
                f"recognizer: CTC on {len(pairs)} of the {len(aligned_units)} aligned pairs"
                + (f" + {len(extra_pairs)} scorer-corpus pairs" if extra_pairs else "")
                + f" ({r.train.max_steps} steps)"
            )
            alphabet = CharAlphabet.from_transcripts([*aligned_text, *(t for _, t in extra_pairs)])
            pairs += list(extra_pairs)
            config = r.model_config(unit_vocab_size=speech_vocab, num_chars=alphabet.num_classes)
            train_recognizer(
                pairs,
                alphabet,
                config,
                replace(r.train, seed=self.cfg.seed),
                stage_dir,
                unit_noise=r.unit_noise,
                mask_prob=r.mask_prob,
                mask_span=r.mask_span,
            )
            self.stages.mark("recognizer", True)
        model, alphabet = load_recognizer(stage_dir)
        self.stages.begin("recognizer_eval")  # tuning the decoder is scoring on held-out pairs
        if not self.stages.get("recognizer_decoder"):
            valid = [(aligned_units[i], aligned_text[i]) for i in sorted(held)]
            decoder, info = self._scorer_decoder(model, alphabet, valid, sentences)
            save_decoder(decoder, stage_dir)
            self.stages.mark("recognizer_decoder", info)
        return model, alphabet, load_decoder(stage_dir, alphabet)

    def _scorer_decoder(
        self,
        model: nn.Module,
        alphabet: Any,
        valid: list[tuple[list[int], str]],
        sentences: Sequence[str],
    ) -> tuple[Any, dict[str, Any]]:
        """The recogniser's decoder from the config, its weights tuned on ``valid``."""
        from multitower.data.ngram_lm import NgramLM
        from multitower.experiments.zipper_speech_text.recognizer import frame_log_probs
        from multitower.experiments.zipper_speech_text.text_decoder import TextDecoder, tune_decoder

        r = self.cfg.recognizer
        if r.beam_size == 0:
            return TextDecoder(alphabet), {"decoder": "greedy"}
        if (r.lexicon or r.lm_order) and not sentences:
            raise ValueError("the scorer's lexicon and LM need the text corpus sentences")
        lexicon = sorted({w for s in sentences for w in s.split()}) if r.lexicon else None
        lm = NgramLM(sentences, r.lm_order) if r.lm_order else None
        decoder = TextDecoder(alphabet, beam_size=r.beam_size, lexicon=lexicon, lm=lm)
        grid_size = len(r.lm_weights) * len(r.word_bonuses)
        if grid_size == 1 or not valid:
            if grid_size > 1:
                log("recognizer: no held-out pairs to tune on; first lm_weight and word_bonus")
            decoder = decoder.with_weights(r.lm_weights[0], r.word_bonuses[0])
            return decoder, {"decoder": decoder.describe(), "tuned_on": 0}
        log(f"recognizer: tuning the decoder on {len(valid)} held-out pairs ({grid_size} settings)")
        log_probs = frame_log_probs(model, [u for u, _ in valid])  # type: ignore[arg-type]
        decoder, grid = tune_decoder(
            decoder,
            log_probs,
            [t for _, t in valid],
            lm_weights=r.lm_weights,
            word_bonuses=r.word_bonuses,
        )
        return decoder, {"decoder": decoder.describe(), "tuned_on": len(valid), "grid": grid}

    # -- the run -----------------------------------------------------------------------------
    def plan(self) -> list[str]:
        """Every stage, in plan order: "stage k of n" in progress lines and run.log is a
        stage's place here. ``pretrain_speech`` runs beside ``pretrain_text`` and the
        recogniser with ``jobs > 1``, after ``recognizer_eval`` otherwise; the scorer
        corpus counts as part of ``recognizer``, the decoder tuning of ``recognizer_eval``."""
        cfg = self.cfg
        return (
            ["corpus", "text_corpus", "text_tokenizer", "unit_tokenizer", "encode_units"]
            + ["pretrain_text", "pretrain_speech", "recognizer", "recognizer_eval"]
            + [f"finetune_{s}_{f:g}" for f in cfg.fractions for s in cfg.runs(f)]
        )

    def prepare(self) -> Prepared:
        """Runs (or loads) every stage before fine-tuning: data, tokenizers, towers, scorer."""
        cfg = self.cfg
        splits = self.corpus()
        test_texts = {t for _, t, _ in splits["test"]}
        sentences = self.text_corpus(test_texts)
        text_tok = self.text_tokenizer(sentences)
        unit_tok = self.unit_tokenizer(splits["unaligned"])
        units = self.encode_units(unit_tok, splits)
        speech_vocab = unit_tok.vocab_size + UNIT_OFFSET
        speech_cfg = tower_config(cfg.speech_tower, speech_vocab)
        speech_args = ("speech", speech_cfg, units["unaligned"], cfg.pretrain_speech, cfg.seed + 1)
        # The speech tower, the longest stage before fine-tuning, trains in a worker
        # process while this one trains the text tower and the recogniser.
        speech_pool = speech_job = None
        if self.jobs > 1 and not self.stages.get("pretrain_speech"):
            speech_pool = worker_pool(1)
            speech_job = speech_pool.submit(
                _pretrain_job,
                cfg,
                str(self.run_dir),
                speech_args,
                torch.get_num_threads(),
                self.quiet,
            )
        try:
            text_tower = self.text_tower(text_tok, sentences)
            rest = self._prepare_pairs(splits, units, text_tok, sentences, unit_tok, speech_vocab)
            if speech_job is not None:
                speech_job.result()
                self.stages.mark("pretrain_speech", True)
        finally:
            if speech_pool is not None:
                speech_pool.shutdown(cancel_futures=True)
        speech_tower = self.pretrain(*speech_args)
        return Prepared(text_tok=text_tok, text_tower=text_tower, speech_tower=speech_tower, **rest)

    def _prepare_pairs(
        self,
        splits: dict[str, list[tuple[str, str, Path]]],
        units: dict[str, list[list[int]]],
        text_tok: TextTokenizer,
        sentences: list[str],
        unit_tok: SpeechUnitTokenizer,
        speech_vocab: int,
    ) -> dict[str, Any]:
        """The aligned pairs, their split into the fine-tuning pool and the held-out
        pairs, the test pairs, and the TTS scorer (trained, tuned and scored once)."""
        cfg = self.cfg
        aligned_text = [t for _, t, _ in splits["aligned"]]
        aligned = [(u, text_tok.encode(t)) for u, t in zip(units["aligned"], aligned_text)]
        test, test_texts_list = evaluation_pairs(splits, units, text_tok, cfg.eval.max_test)
        order = torch.randperm(
            len(aligned), generator=torch.Generator().manual_seed(cfg.seed)
        ).tolist()
        # the last valid_pairs of the permutation: never trained on, used to pick the step
        pool, valid_idx = (
            order[: len(order) - cfg.valid_pairs],
            order[len(order) - cfg.valid_pairs :],
        )
        held_out_texts = {t for _, t, _ in splits["test"]} | {aligned_text[i] for i in valid_idx}
        recognizer, alphabet, decoder = self.recognizer(
            units["aligned"],
            aligned_text,
            speech_vocab,
            valid_idx=valid_idx,
            sentences=sentences,
            extra_pairs=self.scorer_corpus(unit_tok, held_out_texts),
        )

        from multitower.experiments.zipper_speech_text.evaluate import wer
        from multitower.experiments.zipper_speech_text.recognizer import transcribe
        from multitower.experiments.zipper_speech_text.text_decoder import character_error_rate

        self.stages.begin("recognizer_eval")
        if not self.stages.get("recognizer_eval"):
            real = [u for u, _ in test]
            hyps = transcribe(recognizer, alphabet, real, decoder=decoder)
            greedy = transcribe(recognizer, alphabet, real)
            self.stages.mark(
                "recognizer_eval",
                {
                    "wer_on_real_units": wer(test_texts_list, hyps),
                    "cer_on_real_units": character_error_rate(test_texts_list, hyps),
                    "greedy_wer_on_real_units": wer(test_texts_list, greedy),
                    "decoder": decoder.describe(),
                },
            )

        if not pool:
            raise ValueError(
                f"valid_pairs={cfg.valid_pairs} leaves no aligned pair for fine-tuning "
                f"(corpus.n_aligned={len(aligned)})"
            )
        return dict(
            aligned=aligned,
            pool=pool,
            valid=[aligned[i] for i in valid_idx],
            test=test,
            test_texts=test_texts_list,
            recognizer=recognizer,
            alphabet=alphabet,
            decoder=decoder,
            n_sentences=len(sentences),
        )

    def finetune(self, prep: Prepared, system: str, fraction: float) -> dict[str, Any]:
        """Fine-tunes and evaluates one system at one fraction; returns its results row
        (the caller records it: workers running in parallel never write ``stages.json``)."""
        from multitower.experiments.zipper_speech_text.evaluate import evaluate_system

        cfg = self.cfg
        self.stages.begin(f"finetune_{system}_{fraction:g}")
        started = time.time()
        n = max(1, math.ceil(fraction * len(prep.pool)))
        subset = [prep.aligned[i] for i in prep.pool[:n]]  # nested: 1% within 10% within 100%
        steps = cfg.steps(fraction)
        valid = PairedDirections(prep.valid) if prep.valid else None
        log(
            f"finetune {system} on {fraction:.0%} of the aligned pairs "
            f"({n} pairs, both directions, {steps} steps)"
        )
        fusion = cfg.fusion
        if cfg.cross_attention_positions == "time":
            fusion = replace(fusion, position_scales=time_scales(subset))
        model = build_system(system, prep.text_tower, prep.speech_tower, fusion, cfg.seed)
        collate = interleaved_collate(model.modalities, cfg.loss_shares())
        test_set = PairedDirections(prep.test)
        start_loss = mean_loss(model, test_set, collate)
        stage_dir = self.run_dir / "finetune" / f"{system}_{fraction:g}"
        best = (
            BestCheckpoint(stage_dir / "best", lambda m, c=collate: mean_loss(m, valid, c))
            if valid is not None
            else None
        )
        model = train_resumable(
            model,
            InterleavedLMTask(cfg.input_noise, model.modalities),
            PairedDirections(subset),
            collate,
            finetune_config(system, replace(cfg.finetune, max_steps=steps)),
            stage_dir,
            seed=cfg.seed,
            best=best,
        )
        selected: dict[str, Any] = {"selected_step": steps}
        if best is not None and best.record is not None:
            model = load_pretrained(best.directory / "model", type(model))
            selected = {
                "selected_step": best.record["step"],
                "valid_loss": best.record["valid_loss"],
            }
        save_pretrained(model, stage_dir / "model")
        final_loss = mean_loss(model, test_set, collate)
        log(
            f"  evaluating {system} ({fraction:g}, step {selected['selected_step']}): "
            f"test loss {start_loss:.3f} -> {final_loss:.3f}"
        )
        metrics = evaluate_system(
            model,
            prep.test,
            prep.test_texts,
            prep.text_tok,
            prep.recognizer,
            prep.alphabet,
            cfg.eval,
            decoder=prep.decoder,
        )
        return {
            "system": system,
            "fraction": fraction,
            "pairs": n,
            "steps": steps,
            **selected,
            "test_loss_start": start_loss,
            "test_loss_final": final_loss,
            **metrics,
            "seconds": time.time() - started,  # this invocation: training and evaluation
        }

    def run(self, jobs: int = 1) -> dict[str, Any]:
        """Every stage; with ``jobs > 1`` the fine-tunes run in that many processes at once
        (each with ``threads // jobs`` torch threads, at least one)."""
        from multitower.experiments.zipper_speech_text.evaluate import write_results

        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        if jobs > 1:  # more threads than cores only add OpenMP barriers
            torch.set_num_threads(max(1, torch.get_num_threads() // jobs))
        t0 = time.time()
        cfg = self.cfg
        hf_text_tower.check_text_tower_source(cfg)  # before any stage: a bad folder fails fast
        self.stages.plan(self.plan())
        prep = self.prepare()
        todo = [
            (system, fraction)
            for fraction in cfg.fractions
            for system in cfg.runs(fraction)
            if not self.stages.get(f"finetune_{system}_{fraction:g}")
        ]
        eta = FinetuneETA(
            {job: cfg.steps(job[1]) for job in todo},
            jobs,
            {job: trained_steps(self._train_dir(*job)) for job in todo},  # resumed ones
        )
        if jobs == 1 or len(todo) <= 1:
            for system, fraction in todo:
                row = self.finetune(prep, system, fraction)
                self.stages.mark(f"finetune_{system}_{fraction:g}", row)
                log(eta.finished((system, fraction), row["seconds"]))
        else:
            self._finetune_in_parallel(todo, jobs, eta)
        self.stages.begin(None)  # what follows belongs to no single stage
        results = [
            self.stages.get(f"finetune_{s}_{f:g}") for f in cfg.fractions for s in cfg.runs(f)
        ]
        summary = {
            "config": to_plain(cfg),
            "corpus": {
                "aligned": len(prep.aligned),
                "test": len(prep.test),
                "text_sentences": prep.n_sentences,
                **(self.stages.get("encode_units") or {}),
            },
            "recognizer_wer_on_real_units": self.stages.get("recognizer_eval")["wer_on_real_units"],
            "results": results,
            "seconds": time.time() - t0,  # this invocation (finished stages are skipped)
        }
        write_results(summary, self.run_dir / "results", self.run_dir / "finetune")
        write_text_atomic(
            self.run_dir / "inference.json",
            json.dumps(
                {
                    "text_tokenizer": "text/tokenizer.json",
                    "unit_tokenizer": "units/tokenizer",
                    "models": {
                        f"{r['system']}_{r['fraction']:g}": f"finetune/{r['system']}_{r['fraction']:g}/model"
                        for r in results
                    },
                    "default_model": _best_default(results),
                },
                indent=1,
            ),
        )
        log(f"done: results in {self.run_dir / 'results'}")
        return summary

    def _finetune_in_parallel(
        self, todo: list[tuple[str, float]], jobs: int, eta: FinetuneETA
    ) -> None:
        """Runs the fine-tunes ``todo`` in ``jobs`` spawned processes, longest first; each
        row is recorded here as its process finishes, so an interruption loses only the
        fine-tunes still running (they resume from their checkpoints)."""
        threads = torch.get_num_threads()  # already divided by jobs (run)
        order = sorted(todo, key=lambda job: -self.cfg.steps(job[1]) * job[1])
        self.stages.begin(None)  # several fine-tunes at once: their lines carry their own
        log(f"fine-tuning {len(order)} systems in {jobs} processes ({threads} thread(s) each)")
        names = {f"{s}_{f:g}": (s, f) for s, f in order}
        graph = {
            name: Job(_finetune_job, (self.cfg, str(self.run_dir), s, f, threads, self.quiet))
            for name, (s, f) in names.items()
        }

        def record(name: str, row: dict[str, Any]) -> None:
            self.stages.mark(f"finetune_{name}", row)
            self.stages.begin(f"finetune_{name}")
            log(eta.finished(names[name], row["seconds"]))

        def estimate() -> None:  # a whole-run estimate every few minutes, from the steps done
            self.stages.begin(None)
            log(eta.progress({job: trained_steps(self._train_dir(*job)) for job in eta.left}))

        run_jobs(graph, jobs, record, on_idle=estimate, idle_s=PROGRESS_EVERY_S)

    def _train_dir(self, system: str, fraction: float) -> Path:
        return self.run_dir / "finetune" / f"{system}_{fraction:g}" / "train"


PROGRESS_EVERY_S = 300.0  # a whole-run estimate this often while fine-tunes run in parallel
ENCODE_SHARD = 500  # utterances per written shard of the unit-encoding stage


def _read_shard(path: Path, names: list[str]) -> list[list[int]] | None:
    """A finished encoding shard's units, or None if it is missing, unreadable or holds
    other utterances (then it is encoded again)."""
    try:
        shard = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(shard, dict) or shard.get("utterances") != names:
        return None
    units = shard.get("units")
    if not isinstance(units, list) or len(units) != len(names):
        return None
    return units


@dataclass
class Prepared:
    """What every fine-tune needs, from :meth:`SpeechTextExperiment.prepare`."""

    text_tok: TextTokenizer
    text_tower: DecoderTower | HFTower
    speech_tower: DecoderTower
    aligned: list[tuple[list[int], list[int]]]  # (speech ids, text ids)
    pool: list[int]  # indices into aligned that fractions take their prefixes of
    valid: list[tuple[list[int], list[int]]]  # held out: picks the best step
    test: list[tuple[list[int], list[int]]]
    test_texts: list[str]
    recognizer: nn.Module
    alphabet: Any
    decoder: Any
    n_sentences: int


@contextmanager
def _worker_experiment(
    cfg: SpeechTextConfig, run_dir: str, threads: int, quiet: bool
) -> Iterator[SpeechTextExperiment]:
    """The experiment as a worker process sees it: its own thread count, the run's
    log, and ``stages.json`` read only (only the parent process writes it)."""
    torch.set_num_threads(threads)
    with run_log(Path(run_dir) / "run.log"):
        experiment = SpeechTextExperiment(cfg, run_dir, quiet=quiet)
        experiment.stages.read_only = True
        experiment.stages.plan(experiment.plan())  # its lines carry their stage's place too
        yield experiment


def _pretrain_job(
    cfg: SpeechTextConfig, run_dir: str, args: tuple[Any, ...], threads: int, quiet: bool
) -> None:
    """Pre-trains one tower in a worker process (its parent marks the stage)."""
    with _worker_experiment(cfg, run_dir, threads, quiet) as experiment:
        experiment.pretrain(*args, mark=False)


def _finetune_job(
    cfg: SpeechTextConfig, run_dir: str, system: str, fraction: float, threads: int, quiet: bool
) -> dict[str, Any]:
    """One fine-tune in a worker process: loads the finished earlier stages, trains,
    evaluates, returns the row."""
    with _worker_experiment(cfg, run_dir, threads, quiet) as experiment:
        return experiment.finetune(experiment.prepare(), system, fraction)


def _best_default(results: list[dict[str, Any]]) -> str:
    """The unfrozen Zipper on the most aligned data, else the first system."""
    zips = [r for r in results if r["system"] == "zipper"] or results
    best = max(zips, key=lambda r: r["fraction"])
    return f"{best['system']}_{best['fraction']:g}"
