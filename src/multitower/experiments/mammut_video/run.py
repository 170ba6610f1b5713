"""The ``mammut_video`` experiment: every video encoder at every frame count, trained and evaluated
on the same clips, resumably; and loading a finished system for inference.

A run directory holds::

    config.yaml          the resolved config (recipe: mammut_video)
    tokenizer.json       the text tokenizer (shared by every system)
    stages.json          finished stages: "train <system>", "eval <system>" (with its results)
    run.log              progress lines
    <system>/            one per system, e.g. tubes_f8/ or frames_f16/
        train/           the trainer's checkpoints and metrics.jsonl
        model/           the final MaMMUTVideo (config.json + model.safetensors + hashes.json)
    results.json/.md     the comparison, plots/*.png (written by the command)

Resuming: run the same command again. Evaluated systems are skipped, a trained
one is only evaluated, and an interrupted training continues from its last
checkpoint (``train.ckpt_every``). The config must be the one the directory was
started with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multitower.config import (
    ConfigError,
    build_dataclass,
    build_sections,
    dump_yaml,
    load_config,
    parse_yaml,
    to_plain,
)
from multitower.data.caption_text import prompt_ids
from multitower.data.errors import BadRecordError
from multitower.data.images import ImageTransform
from multitower.data.tokenizer import TextTokenizer
from multitower.data.video_readers import load_clip
from multitower.errors import UserError
from multitower.experiments.jobs import Job, run_jobs, worker_context
from multitower.experiments.mammut.data import build_tokenizer, collate_mammut
from multitower.experiments.mammut.run import json_safe, load_run
from multitower.experiments.mammut.task import MaMMUTEvalConfig, MaMMUTLossConfig, MaMMUTTask
from multitower.experiments.mammut_video.config import (
    VideoDataConfig,
    VideoRecipeConfig,
    system_name,
)
from multitower.experiments.mammut_video.data import (
    VideoEvalSet,
    VideoTextDataset,
    check_alphabet,
    load_examples,
)
from multitower.experiments.mammut_video.evaluate import evaluate_system
from multitower.io import write_text_atomic
from multitower.models.io import CONFIG_NAME, load_config_json
from multitower.models.mammut import MaMMUT, MaMMUTConfig
from multitower.models.pretrained import load_pretrained, save_pretrained
from multitower.models.video import MaMMUTVideo, MaMMUTVideoConfig, VideoConfig
from multitower.train.stages import Stages, log, train_resumable
from multitower.train.train_config import TrainConfig

RECIPE = "mammut_video"
TOKENIZER_NAME = "tokenizer.json"
MODEL_DIR = "model"
SECTIONS = {
    "model": MaMMUTConfig,
    "video": VideoRecipeConfig,
    "data": VideoDataConfig,
    "loss": MaMMUTLossConfig,
    "eval": MaMMUTEvalConfig,
}


# -- config ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoRunConfig:
    """A validated ``mammut_video`` config: the train section and the built sections."""

    train: TrainConfig
    model: MaMMUTConfig
    video: VideoRecipeConfig
    data: VideoDataConfig
    loss: MaMMUTLossConfig
    eval: MaMMUTEvalConfig

    def to_dict(self) -> dict[str, Any]:
        sections = {name: getattr(self, name) for name in SECTIONS}
        return {"recipe": RECIPE, "train": to_plain(self.train), **to_plain(sections)}

    def video_config(self, encoder: str, num_frames: int) -> VideoConfig:
        return VideoConfig(
            encoder=encoder,
            num_frames=num_frames,
            tubes=self.video.tubes,
            tube_kernels=self.video.tube_kernels,
        )


def resolve_video_config(raw: dict[str, Any]) -> VideoRunConfig:
    """Validate a ``mammut_video`` config, reporting every problem at once.

    Raises:
        ConfigError: another recipe, a bad section, or sections that do not fit
            together (a tube that does not fit a clip, frames of another size
            than the ViT's, texts longer than the model reads).
    """
    problems: list[str] = []
    if raw.get("recipe") != RECIPE:
        problems.append(f"recipe: this command needs recipe {RECIPE!r}, got {raw.get('recipe')!r}")
    train = sections = None
    try:
        train = build_dataclass(TrainConfig, raw.get("train") or {}, "train")
    except ConfigError as err:
        problems += err.problems
    try:
        sections = build_sections(raw, SECTIONS, ignore=("recipe", "train"))
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    assert train is not None and sections is not None
    cfg = VideoRunConfig(train, **sections)
    if cfg.video.init_from is None:
        problems += _fit_problems(cfg, cfg.model)
    if problems:
        raise ConfigError(problems)
    return cfg


def _fit_problems(cfg: VideoRunConfig, model: MaMMUTConfig) -> list[str]:
    problems = []
    if cfg.data.max_text_len > model.max_seq_len:
        problems.append(
            f"data.max_text_len={cfg.data.max_text_len} exceeds model.max_seq_len={model.max_seq_len}"
        )
    if 1 + cfg.eval.max_caption_tokens > model.max_seq_len:
        problems.append(
            f"eval.max_caption_tokens={cfg.eval.max_caption_tokens}: bos + that many tokens "
            f"exceeds model.max_seq_len={model.max_seq_len}"
        )
    if (model.pad_id, model.bos_id, model.eos_id) != (0, 1, 2):
        problems.append("model: pad/bos/eos ids must be 0/1/2 (the tokenizer's)")
    if cfg.data.source == "clips":
        if cfg.data.clip.image_size != model.vision.image_size:
            problems.append(
                f"data.clip.image_size={cfg.data.clip.image_size} must equal "
                f"model.vision.image_size={model.vision.image_size}"
            )
        if min(cfg.video.frames) < 4:
            problems.append(
                f"video.frames: generated clips have at least 4 frames, got {cfg.video.frames}"
            )
    for encoder, frames in cfg.video.systems:
        try:
            MaMMUTVideoConfig(model, cfg.video_config(encoder, frames))
        except ValueError as err:
            problems.append(f"video: {system_name(encoder, frames)}: {err}")
    return problems


def load_video_config(path: Path, overrides: list[str]) -> VideoRunConfig:
    """Read, override and validate a config file (see :func:`resolve_video_config`)."""
    return resolve_video_config(load_config(path, overrides))


# -- the experiment ----------------------------------------------------------------------------
@dataclass
class Start:
    """Where every system of a run starts: a model config, and with ``init_from`` the image
    run's tokenizer and trained model."""

    model_config: MaMMUTConfig
    tokenizer: TextTokenizer | None
    image_model: MaMMUT | None


def starting_point(cfg: VideoRunConfig) -> Start:
    """The model config, tokenizer and weights the systems start from (``video.init_from``).

    Raises:
        UserError: ``init_from`` is not a MaMMUT run directory.
        ConfigError: its model does not fit the data or eval sections.
    """
    if cfg.video.init_from is None:
        return Start(cfg.model, None, None)
    loaded = load_run(Path(cfg.video.init_from))
    problems = _fit_problems(cfg, loaded.model.config)
    if problems:
        raise ConfigError([f"video.init_from={cfg.video.init_from}: {p}" for p in problems])
    return Start(loaded.model.config, loaded.tokenizer, loaded.model)


def _check_same_config(cfg: VideoRunConfig, run_dir: Path) -> None:
    path = run_dir / "config.yaml"
    text = dump_yaml(cfg.to_dict())
    if path.is_file():
        if path.read_text(encoding="utf-8") != text:
            raise UserError(
                f"{run_dir} was started with another config ({path}); run that config again "
                "to resume, or choose another --run-dir"
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)


def run_experiment(
    cfg: VideoRunConfig, run_dir: Path, *, beam: bool = False, jobs: int = 1
) -> dict[str, Any]:
    """Train and evaluate every system of ``cfg`` into ``run_dir`` (resumable, see the module
    docstring). With ``jobs > 1`` the systems train and evaluate in that many processes
    at once (each with this process's torch threads divided by ``jobs``, at least one),
    the costliest first.

    Returns:
        ``{"systems": {name: {"encoder", "frames", "metrics", "baselines", ...}}, "seconds": s}``.

    Raises:
        UserError: ``run_dir`` was started with another config.
        ConfigError: ``init_from`` names a run that does not fit the data.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    start_time = time.perf_counter()
    _check_same_config(cfg, run_dir)
    start = starting_point(cfg)
    stages = Stages(run_dir)
    names = [system_name(e, f) for e, f in cfg.video.systems]
    stages.plan(_plan(cfg))
    pending = [(e, f) for e, f in cfg.video.systems if not stages.get(f"eval {system_name(e, f)}")]
    if pending:
        _save_tokenizer(cfg, start, run_dir, pending[0][1])
        tokenizer = TextTokenizer.load(run_dir / TOKENIZER_NAME)
        # before any system trains; the first system's frame count last, so that its
        # clips are the ones kept for it
        for num_frames in reversed(list(dict.fromkeys(f for _, f in pending))):
            _check_texts(cfg, tokenizer, start.model_config, num_frames)
        threads = max(1, torch.get_num_threads() // jobs)
        if jobs > 1:  # the longest first, so that the last one to start is short
            pending.sort(key=lambda system: -system[1] * (4 if system[0] == "frames" else 1))
            log(f"{len(pending)} systems in {jobs} processes ({threads} thread(s) each)")
        graph = {
            system_name(e, f): Job(_system_job, (cfg, str(run_dir), e, f, beam, threads))
            for e, f in pending
        }

        def record(name: str, done: tuple[dict[str, Any] | None, dict[str, Any]]) -> None:
            trained, result = done
            if trained is not None:
                stages.mark(f"train {name}", trained)
            stages.mark(f"eval {name}", result)

        run_jobs(graph, jobs, record)
    return {
        "systems": {name: stages.get(f"eval {name}") for name in names},
        "init_from": cfg.video.init_from,
        "model": to_plain(start.model_config),
        "seconds": time.perf_counter() - start_time,
    }


def _plan(cfg: VideoRunConfig) -> list[str]:
    """The run's stages, for "stage k of n" in progress lines: each system's training,
    then its evaluation."""
    return [
        f"{what} {system_name(e, f)}" for e, f in cfg.video.systems for what in ("train", "eval")
    ]


def _save_tokenizer(cfg: VideoRunConfig, start: Start, run_dir: Path, num_frames: int) -> None:
    """Writes the tokenizer every system shares: the image run's, or one built on the
    training texts of ``num_frames``-frame clips (once, before any system starts)."""
    path = run_dir / TOKENIZER_NAME
    if path.is_file():
        return
    tokenizer = start.tokenizer
    if tokenizer is None:
        train, _, _, _ = _clips(cfg, num_frames, start.model_config.vision.image_size)
        tokenizer = build_tokenizer(train, "bpe", start.model_config.vocab_size)
    tokenizer.save(path)


_CLIPS: dict[str, tuple[list, list, VideoEvalSet, list]] = {}


def _clips(
    cfg: VideoRunConfig, num_frames: int, size: int
) -> tuple[list, list, VideoEvalSet, list]:
    """The training and evaluation clips of ``num_frames`` frames, the evaluation set and
    the training QA triples; kept for the next system of the same frame count (only the
    last frame count, to bound memory)."""
    key = repr((cfg.data, num_frames, size))
    if key not in _CLIPS:
        _CLIPS.clear()
        log(f"generating clips of {num_frames} frames")
        train = load_examples(cfg.data, "train", num_frames, size)
        evaluation = load_examples(cfg.data, "eval", num_frames, size)
        if not train or not evaluation:
            raise ConfigError("data: the training and the evaluation set must both hold clips")
        evalset = VideoEvalSet.from_examples(evaluation, ImageTransform(image_size=size))
        train_qa = [
            (q, a, f)
            for ex in train
            for (q, a), f in zip(ex.qa, ex.needs_order or [None] * len(ex.qa))
        ]
        _CLIPS[key] = (train, evaluation, evalset, train_qa)
    return _CLIPS[key]


def _check_texts(
    cfg: VideoRunConfig, tokenizer: TextTokenizer, model: MaMMUTConfig, num_frames: int
) -> None:
    """Every text of the ``num_frames``-frame clips can be spelled by ``tokenizer``, and
    every evaluation question plus ``eval.max_answer_tokens`` fits ``max_seq_len``.

    Raises:
        ConfigError: naming the clips, the longest question and the fields to change.
    """
    train, evaluation, _, _ = _clips(cfg, num_frames, model.vision.image_size)
    try:
        check_alphabet(train + evaluation, tokenizer, f"{num_frames}-frame clips")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    questions = {q for ex in evaluation for q, _ in ex.qa}
    if not questions:
        return
    longest = max(questions, key=lambda q: len(prompt_ids(tokenizer, q, strict=False)))
    n = len(prompt_ids(tokenizer, longest, strict=False))
    if n + cfg.eval.max_answer_tokens > model.max_seq_len:
        raise ConfigError(
            f"eval.max_answer_tokens={cfg.eval.max_answer_tokens}: the longest question of the "
            f"{num_frames}-frame evaluation clips ({longest!r}) is {n} tokens with this "
            f"tokenizer, and with the answer exceeds model.max_seq_len={model.max_seq_len}"
            + (" of video.init_from's model" if cfg.video.init_from else "")
        )


def _system_job(
    cfg: VideoRunConfig, run_dir: str, encoder: str, num_frames: int, beam: bool, threads: int
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Trains (unless done) and evaluates one system, here or in a worker process.

    Returns:
        The ``train <system>`` stage's record (None when it was already trained) and the
        ``eval <system>`` one (the system's results); the caller marks both.
    """
    root = Path(run_dir)
    with worker_context(root / "run.log", threads):
        start = starting_point(cfg)
        size = start.model_config.vision.image_size
        tokenizer = TextTokenizer.load(root / TOKENIZER_NAME)
        train, _, evalset, train_qa = _clips(cfg, num_frames, size)
        name = system_name(encoder, num_frames)
        stages = Stages(root)
        stages.read_only = True  # the caller marks the stages (only one process writes)
        stages.plan(_plan(cfg))  # its lines carry their stage's place
        model, trained = _trained_system(
            cfg, start, stages, root, encoder, num_frames, train, tokenizer
        )
        stages.begin(f"eval {name}")
        log(f"evaluating {name} on {len(evalset.data)} clips")
        result = evaluate_system(
            model, evalset, tokenizer, cfg.eval, train_qa=train_qa, beam=beam,
            shuffled_control=cfg.video.shuffled_control, seed=cfg.train.seed,
        )  # fmt: skip
        seconds = (trained or stages.get(f"train {name}"))["train_seconds"]
        result.update(
            {
                "encoder": encoder,
                "frames": num_frames,
                "train_seconds": seconds,
                "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
            }
        )
        m = result["metrics"]
        log(
            f"{name}: VQA {100 * m.get('vqa_accuracy', float('nan')):.1f}% "
            f"(order-dependent {100 * m.get('vqa_motion_accuracy', float('nan')):.1f}%), "
            f"CIDEr-D {m['greedy_cider']:.3f}, v->t R@1 {100 * m['i2t_r1']:.1f}%, "
            f"encoder {m['encoder_ms_per_clip']:.2f} ms/clip"
        )
        return trained, json.loads(json.dumps(json_safe(result)))


def initial_model(start: Start, video: VideoConfig, *, seed: int) -> MaMMUTVideo:
    """A system before training: a copy of the image model of ``init_from``, or fresh
    weights drawn from ``seed`` (the same for every system of a run)."""
    if start.image_model is not None:
        return MaMMUTVideo.from_image_model(start.image_model, video)
    torch.manual_seed(seed)
    return MaMMUTVideo(MaMMUTVideoConfig(start.model_config, video))


def _trained_system(
    cfg: VideoRunConfig,
    start: Start,
    stages: Stages,
    run_dir: Path,
    encoder: str,
    num_frames: int,
    train_examples: list,
    tokenizer: TextTokenizer,
) -> tuple[MaMMUTVideo, dict[str, Any] | None]:
    """The system trained on ``train_examples`` (loaded when ``train <system>`` is done)
    and the ``train <system>`` stage's record (None when it was loaded)."""
    name = system_name(encoder, num_frames)
    stages.begin(f"train {name}")
    model_dir = run_dir / name / MODEL_DIR
    if stages.get(f"train {name}"):
        return load_pretrained(model_dir, MaMMUTVideo), None
    model = initial_model(start, cfg.video_config(encoder, num_frames), seed=cfg.train.seed)
    dataset = VideoTextDataset(
        train_examples,
        ImageTransform(image_size=start.model_config.vision.image_size),
        tokenizer,
        max_text_len=cfg.data.max_text_len,
        vqa_fraction=cfg.data.vqa_fraction,
    )
    log(
        f"training {name}: {model.num_tokens} video tokens per clip, {len(dataset)} clips, "
        f"{cfg.train.max_steps} steps"
    )
    began = time.perf_counter()
    trained = train_resumable(
        model,
        MaMMUTTask(cfg.loss, start.model_config.pad_id),
        dataset,
        collate_mammut,
        cfg.train,
        run_dir / name,
        seed=cfg.train.seed,
    )
    seconds = time.perf_counter() - began
    assert isinstance(trained, MaMMUTVideo)
    trained.eval()
    save_pretrained(trained, model_dir)
    return trained, {"train_seconds": seconds}


# -- loading a finished system -----------------------------------------------------------------
@dataclass
class LoadedVideoRun:
    """A trained video system, ready for inference."""

    model: MaMMUTVideo
    tokenizer: TextTokenizer
    eval_cfg: MaMMUTEvalConfig
    system: str

    @property
    def num_frames(self) -> int:
        return self.model.config.video.num_frames

    @property
    def image_size(self) -> int:
        return self.model.config.mammut.vision.image_size


def _recipe_of(run_dir: Path) -> str | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    raw = parse_yaml(path.read_text(encoding="utf-8"), source=str(path)) or {}
    return raw.get("recipe") if isinstance(raw, dict) else None


def is_video_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a ``mammut_video`` run directory or one of its systems."""
    if _recipe_of(run_dir) == RECIPE or _recipe_of(run_dir.parent) == RECIPE:
        return True
    config = run_dir / MODEL_DIR / CONFIG_NAME
    return config.is_file() and load_config_json(run_dir / MODEL_DIR).get("model_type") == (
        "MaMMUTVideo"
    )


def _systems(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / MODEL_DIR / CONFIG_NAME).is_file())


def load_video_run(
    run_dir: Path, *, system: str | None = None, device: str = "cpu"
) -> LoadedVideoRun:
    """Load one trained system of a video run directory.

    Args:
        run_dir: the run directory (then ``system`` picks the system; by default
            the tubes with the most frames, else the first one) or a system's own
            directory (``RUN_DIR/tubes_f8``).
        system: e.g. ``"frames_f16"``.

    Raises:
        UserError: not a video run, an unknown or untrained system (the trained
            ones are listed), or weights that do not load.
    """
    if (run_dir / MODEL_DIR / CONFIG_NAME).is_file() and system is None:
        root, system_dir = run_dir.parent, run_dir
    else:
        if not run_dir.is_dir():
            raise UserError(f"run directory not found: {run_dir}")
        root = run_dir
        trained = _systems(root)
        if not trained:
            raise UserError(f"{run_dir} holds no trained video system (no */{MODEL_DIR}/)")
        if system is None:
            tubes = [s for s in trained if s.startswith("tubes_f")]
            pool = tubes or trained
            system = max(pool, key=lambda s: int(s.rsplit("_f", 1)[-1]) if "_f" in s else 0)
        if system not in trained:
            raise UserError(
                f"{run_dir} has no trained system {system!r}; trained: {', '.join(trained)}"
            )
        system_dir = root / system
    tokenizer_path = next(
        (p / TOKENIZER_NAME for p in (system_dir, root) if (p / TOKENIZER_NAME).is_file()), None
    )
    if tokenizer_path is None:
        raise UserError(f"{root} holds no {TOKENIZER_NAME}")
    try:
        model = load_pretrained(system_dir / MODEL_DIR, MaMMUTVideo)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    eval_cfg = MaMMUTEvalConfig()
    if _recipe_of(root) == RECIPE:
        raw = parse_yaml((root / "config.yaml").read_text(encoding="utf-8"), source="config.yaml")
        eval_cfg = build_dataclass(MaMMUTEvalConfig, raw.get("eval") or {}, "eval")
    model.to(device).eval()
    return LoadedVideoRun(model, TextTokenizer.load(tokenizer_path), eval_cfg, system_dir.name)


def load_clip_or_fail(loaded: LoadedVideoRun, path: Path) -> torch.Tensor:
    """One clip on disk as the system reads it, ``(F, 3, S, S)``: ``F`` frames sampled evenly,
    each resized and normalised as in training.

    Raises:
        UserError: missing, unreadable, empty, of an unknown kind, with frames too
            small or fewer frames than the system reads (the message names the file).
    """
    try:
        return load_clip(path, loaded.num_frames, loaded.image_size)
    except BadRecordError as err:
        raise UserError(f"{err} (system {loaded.system} reads {loaded.num_frames} frames)") from err
