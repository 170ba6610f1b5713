"""Open-vocabulary detection with MaMMUT: pre-training, detection training, AP, drawings.

``multitower mammut-detect`` runs, for each compared detector (``variants``)::

    pre-trained MaMMUT (RUN_DIR, or pre-trained here)   -> MaMMUTDetector (head on its ViT)
    detection training on BASE boxes only (Trainer; the text side frozen by default)
    evaluation on held-out images with ALL classes named -> AP, AP50, AP on novel classes

The variants (:data:`~multitower.experiments.mammut.detect_config.VARIANTS`):
``open_vocab`` (class logits from class-name text embeddings), ``closed_vocab``
(a learned table over the base classes: it cannot name novel ones, so its novel
AP is 0 by construction), ``no_contrastive`` (the open head on a MaMMUT trained
with the captioning loss only: its text embeddings never learned to meet image
embeddings) and ``cropped_pos_emb`` (the open head on a MaMMUT pre-trained with
RO-ViT's cropped positional embeddings).

An experiment directory holds ``pretrain_<kind>/`` (MaMMUT runs it trained),
one directory per variant (``model/``, ``tokenizer.json``, ``classes.json``,
``hashes.json``, checkpoints, ``metrics.jsonl``), ``results.{json,md}`` and
``plots/detections_<variant>.png``.
"""

from __future__ import annotations

import importlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image, ImageDraw
from torch import nn

from multitower.config import ConfigError, dump_yaml, to_plain
from multitower.data.caption_text import caption_ids
from multitower.data.detection import (
    DetectionRecord,
    OpenVocabSplit,
    class_prompt,
    detection_image,
    keep_classes,
    read_coco_instances,
    scene_detection_records,
    split_scene_classes,
)
from multitower.data.images import ImageTransform, open_image
from multitower.data.padding import pad_right
from multitower.data.tokenizer import TextTokenizer
from multitower.errors import UserError
from multitower.eval.detection import Detections, GroundTruth, coco_box_ap, decode_detections
from multitower.experiments.jobs import Job, run_jobs, worker_context
from multitower.experiments.mammut.detect_config import (
    PRETRAIN_KINDS,
    VARIANTS,
    DetectDataConfig,
    DetectEvalConfig,
    DetectExperimentConfig,
    DetectLossConfig,
)
from multitower.experiments.mammut.run import (
    MODEL_DIR,
    TOKENIZER_NAME,
    LoadedRun,
    json_safe,
    load_run,
    resolve_mammut_config,
    train_run,
)
from multitower.io import (
    HASHES_NAME,
    verify_hashes,
    write_bytes_atomic,
    write_hashes,
    write_json_atomic,
    write_text_atomic,
)
from multitower.losses import set_detection_loss
from multitower.models.detection import MaMMUTDetector, MaMMUTDetectorConfig
from multitower.models.io import CONFIG_NAME, WEIGHTS_NAME, save_model
from multitower.models.pretrained import load_pretrained
from multitower.nn.boxes import box_xyxy_to_cxcywh
from multitower.progress import log_line
from multitower.train.checkpoint import list_checkpoints
from multitower.train.task import LossOutput
from multitower.train.trainer import Trainer

CLASSES_NAME = "classes.json"


# -- data ------------------------------------------------------------------------------------------
class DetectionData(NamedTuple):
    """Training records (base boxes only), evaluation records (every box) and the split."""

    train: list[DetectionRecord]
    eval: list[DetectionRecord]
    split: OpenVocabSplit


def load_detection_data(cfg: DetectDataConfig) -> DetectionData:
    """Build the records and the base/novel split; novel boxes are dropped from training."""
    if cfg.source == "scenes":
        split = split_scene_classes(cfg.scene.shapes, cfg.scene.colours, seed=cfg.split_seed)
        train = scene_detection_records(cfg.num_scenes, cfg.seed, cfg.scene)
        evaluation = scene_detection_records(cfg.eval_scenes, cfg.seed + 1, cfg.scene)
    else:
        assert cfg.coco_annotations and cfg.coco_images
        assert cfg.eval_coco_annotations and cfg.eval_coco_images
        try:
            train, categories = read_coco_instances(cfg.coco_annotations, cfg.coco_images)
            evaluation, _ = read_coco_instances(cfg.eval_coco_annotations, cfg.eval_coco_images)
        except ValueError as err:  # the message names the file and the entry
            raise UserError(str(err)) from err
        novel = tuple(c.name for c in categories if c.frequency in cfg.novel_frequencies)
        split = OpenVocabSplit(tuple(c.name for c in categories if c.name not in novel), novel)
    known = set(split.all)
    unknown = sorted({n for r in evaluation for n in r.labels} - known)
    if unknown:
        raise ConfigError(f"data: evaluation classes outside the class list: {unknown[:10]}")
    return DetectionData(keep_classes(train, split.base), evaluation, split)


def record_targets(
    record: DetectionRecord, class_index: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A record's boxes as cxcywh normalised by the padded side ``(M, 4)``, and labels ``(M,)``."""
    side = float(max(record.width, record.height))
    boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4) / side
    labels = torch.tensor([class_index[n] for n in record.labels], dtype=torch.long)
    return box_xyxy_to_cxcywh(boxes), labels


class DetectionBatch(NamedTuple):
    """``images (B, 3, S, S)``, ``boxes (B, M, 4)`` cxcywh, ``labels (B, M)`` (-1: padding)."""

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor


class DetectionDataset:
    """Images decoded once, with their base-class targets."""

    def __init__(
        self, records: list[DetectionRecord], class_index: dict[str, int], image_size: int
    ) -> None:
        transform = ImageTransform(image_size=image_size)
        self.images = [detection_image(r, image_size, transform) for r in records]
        self.targets = [record_targets(r, class_index) for r in records]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[index], *self.targets[index]


def collate_detection(
    items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> DetectionBatch:
    """Stack images; pad boxes with zeros and labels with -1 to the most boxes in the batch."""
    m = max(1, max(len(it[2]) for it in items))
    boxes = torch.zeros(len(items), m, 4)
    labels = torch.full((len(items), m), -1, dtype=torch.long)
    for i, (_, b, lab) in enumerate(items):
        boxes[i, : len(lab)] = b
        labels[i, : len(lab)] = lab
    return DetectionBatch(torch.stack([it[0] for it in items]), boxes, labels)


def prompt_tokens(tokenizer: TextTokenizer, names: list[str]) -> torch.Tensor:
    """``(C, T)`` padded ``[bos] a <name> [eos]`` ids of the class prompts.

    Raises:
        UserError: an empty list, or a name the tokenizer cannot spell.
    """
    if not names:
        raise UserError("no class names given")
    rows = []
    for name in names:
        try:
            rows.append(caption_ids(tokenizer, class_prompt(name)))
        except ValueError as err:
            raise UserError(f"class name {name!r}: {err}") from err
    return pad_right(rows, tokenizer.pad_id)


# -- the task ---------------------------------------------------------------------------------------
class DetectionTask:
    """The set loss of one batch; class embeddings from the prompts (open) or the table."""

    def __init__(self, loss: DetectLossConfig, prompts: torch.Tensor | None) -> None:
        self.cfg = loss
        self.prompts = prompts

    def compute_loss(self, model: nn.Module, batch: DetectionBatch) -> LossOutput:
        detector = getattr(model, "module", model)
        assert isinstance(detector, MaMMUTDetector)
        classes = None
        if self.prompts is not None:
            prompts = self.prompts.to(batch.images.device)
            with torch.set_grad_enabled(not self.cfg.freeze_text and torch.is_grad_enabled()):
                classes = detector.encode_class_names(prompts)  # (C, E)
        out = model(batch.images, classes)
        c = self.cfg
        parts = set_detection_loss(
            out.class_logits, out.boxes, out.objectness_logits, batch.boxes, batch.labels,
            class_weight=c.class_weight, l1_weight=c.l1_weight, giou_weight=c.giou_weight,
            objectness_weight=c.objectness_weight, alpha=c.alpha, gamma=c.gamma,
        )  # fmt: skip
        metrics = {
            "class_loss": parts.classification.detach(),
            "l1_loss": parts.l1.detach(),
            "giou_loss": parts.giou.detach(),
            "objectness_loss": parts.objectness.detach(),
        }
        return LossOutput(loss=parts.loss, metrics=metrics, num_tokens=int(batch.images.shape[0]))


# -- pre-trained MaMMUTs ----------------------------------------------------------------------------
def pretrained_mammut(cfg: DetectExperimentConfig, kind: str, run_dir: Path) -> LoadedRun:
    """The MaMMUT run of one pre-training kind: the RUN_DIR the config names, one this
    experiment trained before, or a new one trained now into ``run_dir/pretrain_<kind>``.

    Raises:
        UserError: a named RUN_DIR that is not a MaMMUT run.
    """
    given = cfg.run_dir_for(kind)
    if given is not None:
        return load_run(Path(given))
    target = run_dir / f"pretrain_{kind}"
    if _trained(target):
        return load_run(target)
    overrides = [*cfg.pretrain.overrides, *PRETRAIN_KINDS[kind]]
    resolved = resolve_mammut_config(Path(cfg.pretrain.config), overrides)
    log_line(f"mammut-detect: pre-training a {kind} MaMMUT into {target}")
    train_run(resolved, target)
    return load_run(target)


# -- one detector -----------------------------------------------------------------------------------
@dataclass
class TrainedDetector:
    """A trained detector, its tokenizer and class lists."""

    model: MaMMUTDetector
    tokenizer: TextTokenizer
    base: list[str]
    novel: list[str]
    train_seconds: float


def _save_detector(det: TrainedDetector, out: Path, variant: str) -> None:
    save_model(det.model, out / MODEL_DIR)
    det.tokenizer.save(out / TOKENIZER_NAME)
    write_json_atomic(
        out / CLASSES_NAME,
        {
            "variant": variant,
            "base": det.base,
            "novel": det.novel,
            "train_seconds": det.train_seconds,
        },
    )
    write_hashes(out, [TOKENIZER_NAME, CLASSES_NAME])


def load_detector(run_dir: Path, *, device: str = "cpu") -> TrainedDetector:
    """Load a detector directory written by ``mammut-detect`` (an experiment directory
    means its ``open_vocab`` detector). Files are checked against their SHA-256.

    Raises:
        UserError: not a detector directory, or a file that fails its check.
    """
    if not (run_dir / MODEL_DIR / CONFIG_NAME).is_file() and (run_dir / "open_vocab").is_dir():
        run_dir = run_dir / "open_vocab"
    for name in (MODEL_DIR + "/" + CONFIG_NAME, TOKENIZER_NAME, CLASSES_NAME):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir} is not a mammut-detect detector directory (no {name})")
    try:
        if not verify_hashes(run_dir, [TOKENIZER_NAME, CLASSES_NAME]):
            raise ValueError(f"no {HASHES_NAME} listing {TOKENIZER_NAME} and {CLASSES_NAME}")
        model = load_pretrained(run_dir / MODEL_DIR, MaMMUTDetector)
        tokenizer = TextTokenizer.load(run_dir / TOKENIZER_NAME)
        classes = json.loads((run_dir / CLASSES_NAME).read_text(encoding="utf-8"))
        base, novel = list(classes["base"]), list(classes["novel"])
        seconds = float(classes.get("train_seconds", 0.0))  # 0: written before it was kept
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{run_dir}: {err}") from err
    model.to(device).eval()
    return TrainedDetector(model, tokenizer, base, novel, seconds)


def train_detector(
    cfg: DetectExperimentConfig,
    variant: str,
    mammut: LoadedRun,
    data: DetectionData,
    out: Path,
) -> TrainedDetector:
    """Train one variant's detector into ``out`` (or load it when ``out`` already holds one)."""
    if (out / MODEL_DIR / WEIGHTS_NAME).is_file():
        loaded = load_detector(out)
        log_line(f"mammut-detect: {variant}: reusing the detector in {out}")
        return loaded
    _, head_kind = VARIANTS[variant]
    base = list(data.split.base)
    torch.manual_seed(cfg.train.seed)
    head = replace(cfg.head, class_table=len(base) if head_kind == "closed" else 0)
    model = MaMMUTDetector(MaMMUTDetectorConfig(mammut.model.config, head), mammut=mammut.model)
    if cfg.loss.freeze_text:
        model.freeze_text()
    prompts = None if head_kind == "closed" else prompt_tokens(mammut.tokenizer, base)
    image_size = mammut.model.config.vision.image_size
    dataset = DetectionDataset(data.train, {n: i for i, n in enumerate(base)}, image_size)
    model.train()
    trainer = Trainer(
        model, DetectionTask(cfg.loss, prompts), dataset, collate_detection, cfg.train, out
    )
    if list_checkpoints(out):
        trainer.resume()
    start = time.perf_counter()
    trainer.fit()
    trained = TrainedDetector(
        model.eval(), mammut.tokenizer, base, list(data.split.novel), time.perf_counter() - start
    )
    _save_detector(trained, out, variant)
    return trained


# -- inference and evaluation ----------------------------------------------------------------------
@torch.no_grad()
def class_embeddings(det: TrainedDetector, names: list[str]) -> torch.Tensor | None:
    """The ``(C, E)`` text embeddings of the class prompts (None for a closed-vocabulary head)."""
    if not det.model.config.head.open_vocabulary:
        return None
    return det.model.encode_class_names(prompt_tokens(det.tokenizer, names))


@torch.no_grad()
def detect_images(
    det: TrainedDetector,
    images: torch.Tensor,
    sides: list[float],
    names: list[str],
    cfg: DetectEvalConfig,
    *,
    embeddings: torch.Tensor | None = None,
) -> list[Detections]:
    """Detections of ``names`` in ``(B, 3, S, S)`` images (boxes in pixels of each image).

    A closed-vocabulary head can name only its base classes: names are matched to
    its table rows and the others are never predicted.
    """
    det.model.eval()
    if det.model.config.head.open_vocabulary:
        classes = class_embeddings(det, names) if embeddings is None else embeddings
        allowed = None
        remap = None
    else:
        classes = None
        allowed = [det.base.index(n) for n in names if n in det.base]
        remap = torch.tensor([names.index(n) if n in names else -1 for n in det.base])
    out: list[Detections] = []
    for start in range(0, images.shape[0], cfg.batch_size):
        chunk = images[start : start + cfg.batch_size]
        pred = det.model(chunk, classes)
        found = decode_detections(
            pred.boxes, pred.class_logits, sides[start : start + cfg.batch_size],
            top_k=cfg.top_k, nms_iou=cfg.nms_iou, allowed=allowed,
        )  # fmt: skip
        if remap is not None:
            found = [Detections(d.boxes, d.scores, remap[d.labels]) for d in found]
        out.extend(found)
    return out


def evaluate_detector(
    det: TrainedDetector,
    records: list[DetectionRecord],
    split: OpenVocabSplit,
    cfg: DetectEvalConfig,
) -> tuple[dict[str, float], list[Detections]]:
    """AP / AP50 over all classes, novel classes and base classes on ``records``."""
    names = list(split.all)
    index = {n: i for i, n in enumerate(names)}
    size = det.model.config.mammut.vision.image_size
    transform = ImageTransform(image_size=size)
    images = torch.stack([detection_image(r, size, transform) for r in records])
    sides = [float(max(r.width, r.height)) for r in records]
    found = detect_images(det, images, sides, names, cfg)
    truth = [
        GroundTruth(
            torch.tensor(r.boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor([index[n] for n in r.labels], dtype=torch.long),
        )
        for r in records
    ]
    base_ids = [index[n] for n in split.base]
    novel_ids = [index[n] for n in split.novel]
    all_ap = coco_box_ap(truth, found, len(names))
    novel_ap = coco_box_ap(truth, found, len(names), classes=novel_ids)
    base_ap = coco_box_ap(truth, found, len(names), classes=base_ids)
    metrics = {
        "ap": all_ap["ap"],
        "ap50": all_ap["ap50"],
        "ap_novel": novel_ap["ap"],
        "ap50_novel": novel_ap["ap50"],
        "ap_base": base_ap["ap"],
        "ap50_base": base_ap["ap50"],
    }
    return metrics, found


# -- drawing ----------------------------------------------------------------------------------------
BASE_COLOUR, NOVEL_COLOUR = (255, 255, 255), (0, 255, 255)


def draw_boxes(
    image: Image.Image,
    detections: Detections,
    names: list[str],
    novel: set[str],
    *,
    min_score: float,
    scale: int = 4,
) -> Image.Image:
    """The image enlarged ``scale`` times with boxes and ``name score`` labels drawn
    (white: base classes, cyan: novel classes)."""
    big = image.convert("RGB").resize(
        (image.width * scale, image.height * scale), Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(big)
    for box, score, label in zip(
        detections.boxes.tolist(), detections.scores.tolist(), detections.labels.tolist()
    ):
        if score < min_score or label < 0:
            continue
        name = names[label]
        colour = NOVEL_COLOUR if name in novel else BASE_COLOUR
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        draw.text((x0 + 2, max(y0 - 11, 0)), f"{name} {score:.2f}", fill=colour)
    return big


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _draw_panel(
    records: list[DetectionRecord],
    found: list[Detections],
    split: OpenVocabSplit,
    cfg: DetectEvalConfig,
    path: Path,
) -> None:
    novel = set(split.novel)
    # images with a novel object first, so both kinds of class are shown
    order = sorted(
        range(len(records)), key=lambda i: not any(n in novel for n in records[i].labels)
    )
    chosen = order[: cfg.draw_images]
    tiles = [
        draw_boxes(
            open_image(records[i].image, name=records[i].key),
            found[i],
            list(split.all),
            novel,
            min_score=cfg.draw_min_score,
        )
        for i in chosen
    ]
    if not tiles:
        return
    w, h = tiles[0].size
    panel = Image.new("RGB", (w * len(tiles) + 4 * (len(tiles) - 1), h), (60, 60, 60))
    for k, tile in enumerate(tiles):
        panel.paste(tile.resize((w, h)), (k * (w + 4), 0))
    write_bytes_atomic(path, png_bytes(panel))


# -- the experiment ---------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"  # NaN: no boxes of that kind


def results_markdown(result: dict[str, Any]) -> str:
    """The Markdown table of one experiment."""
    lines = [
        f"Open-vocabulary detection: {result['train_images']} training images (base boxes "
        f"only), {result['eval_images']} held-out images; {len(result['base'])} base and "
        f"{len(result['novel'])} novel classes (novel: {', '.join(result['novel'])}). "
        f"{result['steps']} detection steps per detector (batch {result['batch_size']}). AP in %.",
        "",
        "| detector | pre-training | head | AP | AP50 | AP novel | AP50 novel | AP base | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        m = row["metrics"]
        lines.append(
            f"| {name} | {row['pretraining']} | {row['head']} | {_fmt(m['ap'])} | "
            f"{_fmt(m['ap50'])} | {_fmt(m['ap_novel'])} | {_fmt(m['ap50_novel'])} | "
            f"{_fmt(m['ap_base'])} | {row['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run_experiment(
    cfg: DetectExperimentConfig, run_dir: Path, *, source: str, jobs: int = 1
) -> dict[str, Any]:
    """Pre-train what is missing, train and evaluate every variant, write results and PNGs.

    With ``jobs > 1`` the pre-trainings and the detectors run in that many processes
    (each with this process's torch threads divided by ``jobs``, at least one); a
    detector starts as soon as its MaMMUT is trained.

    Returns:
        The results dict (also written to ``run_dir/results.json``).
    """
    for variant in cfg.variants:  # named run directories are checked before any work
        kind = VARIANTS[variant][0]
        given = cfg.run_dir_for(kind)
        if given is not None and not (Path(given) / "config.yaml").is_file():
            field = {"contrastive": "init_from"}.get(kind, f"{kind}_from")
            raise UserError(f"{field}: {given} is not a MaMMUT run directory (no config.yaml)")
    pretrains = any(cfg.run_dir_for(VARIANTS[v][0]) is None for v in cfg.variants)
    if pretrains and not Path(cfg.pretrain.config).is_file():
        raise UserError(f"pretrain.config: file not found: {cfg.pretrain.config}")
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    for module, used_for in (("scipy", "its loss's matching"), ("pycocotools", "COCO AP")):
        try:
            importlib.import_module(module)
        except ImportError as err:  # before any training, not when the first detector is done
            raise UserError(
                f"mammut-detect needs {module} for {used_for}: pip install 'multitower[detection]'"
            ) from err
    run_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run_dir / "config.yaml", dump_yaml(to_plain(cfg)).encode("utf-8"))
    threads = max(1, torch.get_num_threads() // jobs)
    graph: dict[str, Job] = {}
    for variant in cfg.variants:
        kind = VARIANTS[variant][0]
        stage = f"pretrain_{kind}"
        needs = cfg.run_dir_for(kind) is None and not _trained(run_dir / stage)
        if needs and stage not in graph:
            graph[stage] = Job(_pretrain_job, (cfg, kind, str(run_dir), threads))
        graph[variant] = Job(
            _variant_job, (cfg, variant, str(run_dir), threads), (stage,) if needs else ()
        )
    if jobs > 1:
        log_line(
            f"mammut-detect: {len(graph)} stages in {jobs} processes ({threads} thread(s) each)"
        )
    done = run_jobs(graph, jobs, lambda name, _: log_line(f"mammut-detect: {name} done"))
    data = _data(cfg.data)
    result = {
        "config": source,
        "base": list(data.split.base),
        "novel": list(data.split.novel),
        "train_images": len(data.train),
        "train_boxes": sum(len(r.boxes) for r in data.train),
        "eval_images": len(data.eval),
        "steps": cfg.train.max_steps,
        "batch_size": cfg.train.batch_size,
        "variants": {variant: done[variant] for variant in cfg.variants},
    }
    write_json_atomic(run_dir / "results.json", json_safe(result), indent=2)
    write_text_atomic(run_dir / "results.md", results_markdown(result))
    return result


def _trained(run: Path) -> bool:
    return (run / MODEL_DIR / WEIGHTS_NAME).is_file()


def _pretrain_job(cfg: DetectExperimentConfig, kind: str, run_dir: str, threads: int) -> None:
    """Pre-trains the MaMMUT of one kind into ``run_dir/pretrain_<kind>``."""
    with worker_context(Path(run_dir) / "run.log", threads):
        pretrained_mammut(cfg, kind, Path(run_dir))


def _variant_job(
    cfg: DetectExperimentConfig, variant: str, run_dir: str, threads: int
) -> dict[str, Any]:
    """Trains (or reloads) and evaluates one variant's detector; returns its results row."""
    with worker_context(Path(run_dir) / "run.log", threads):
        kind, head_kind = VARIANTS[variant]
        data = _data(cfg.data)
        mammut = pretrained_mammut(cfg, kind, Path(run_dir))
        log_line(f"mammut-detect: training the {variant} detector")
        det = train_detector(cfg, variant, mammut, data, Path(run_dir) / variant)
        log_line(f"mammut-detect: evaluating the {variant} detector")
        metrics, found = evaluate_detector(det, data.eval, data.split, cfg.eval)
        if cfg.eval.draw_images:
            plot = Path(run_dir) / "plots" / f"detections_{variant}.png"
            _draw_panel(data.eval, found, data.split, cfg.eval, plot)
        return {
            "pretraining": kind.replace("_", " "),
            "head": "class-name text" if head_kind == "open" else "learned base table",
            "metrics": metrics,
            "train_seconds": det.train_seconds,
        }


_DATA: dict[str, DetectionData] = {}


def _data(cfg: DetectDataConfig) -> DetectionData:
    """The experiment's scenes, generated (or read) once per process."""
    key = repr(cfg)
    if key not in _DATA:
        _DATA[key] = load_detection_data(cfg)
    return _DATA[key]
