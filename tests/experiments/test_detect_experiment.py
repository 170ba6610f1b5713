"""The mammut-detect experiment's pieces: data split into targets, the task, closed-head decoding."""

from __future__ import annotations

import torch

from multitower.data.image_datasets import SceneConfig
from multitower.experiments.mammut.data import build_tokenizer, scene_records
from multitower.experiments.mammut.detect import (
    DetectionDataset,
    DetectionTask,
    TrainedDetector,
    collate_detection,
    detect_images,
    load_detection_data,
    prompt_tokens,
)
from multitower.experiments.mammut.detect_config import (
    DetectDataConfig,
    DetectEvalConfig,
    DetectLossConfig,
)
from multitower.models.detection import DetectionHeadConfig, MaMMUTDetector, MaMMUTDetectorConfig
from multitower.models.mammut import MaMMUTConfig
from multitower.models.vit import ViTConfig

SCENE = SceneConfig(image_size=32, max_objects=3, captions_per_image=2)
DATA = DetectDataConfig(num_scenes=60, eval_scenes=20, scene=SCENE)
MAMMUT = MaMMUTConfig(
    vocab_size=160, d_model=32, num_layers=2, num_heads=2, embed_dim=16, max_seq_len=16,
    vision=ViTConfig(image_size=32, patch_size=8, d_model=32, num_layers=1, num_heads=2),
)  # fmt: skip


def _tokenizer():
    return build_tokenizer(scene_records(40, 0, SCENE), "bpe", 160)


def test_training_targets_hold_base_classes_only_and_evaluation_holds_novel_ones():
    data = load_detection_data(DATA)
    novel = set(data.split.novel)
    assert not {n for r in data.train for n in r.labels} & novel
    assert {n for r in data.eval for n in r.labels} & novel
    dataset = DetectionDataset(data.train, {n: i for i, n in enumerate(data.split.base)}, 32)
    labels = torch.cat([dataset[i][2] for i in range(len(dataset))])
    assert int(labels.min()) >= 0 and int(labels.max()) < len(data.split.base)
    image, boxes, _ = dataset[0]
    assert image.shape == (3, 32, 32) and bool(((boxes > 0) & (boxes <= 1)).all())
    batch = collate_detection([dataset[0], dataset[1], dataset[2]])
    counts = [len(dataset[i][2]) for i in range(3)]
    assert batch.labels.shape == (3, max(counts))
    assert [int((row >= 0).sum()) for row in batch.labels] == counts


def test_task_step_trains_the_head_and_leaves_the_frozen_text_without_gradients():
    data = load_detection_data(DATA)
    tokenizer = _tokenizer()
    model = MaMMUTDetector(MaMMUTDetectorConfig(MAMMUT))
    model.freeze_text()
    dataset = DetectionDataset(data.train[:4], {n: i for i, n in enumerate(data.split.base)}, 32)
    task = DetectionTask(DetectLossConfig(), prompt_tokens(tokenizer, list(data.split.base)))
    out = task.compute_loss(model, collate_detection([dataset[i] for i in range(4)]))
    out.loss.backward()
    assert all(p.grad is None for p in model.text_parameters())
    assert model.region_proj.weight.grad is not None
    assert model.mammut.vision.patch_embed.weight.grad is not None


def test_closed_head_detections_name_only_its_base_classes():
    data = load_detection_data(DATA)
    base = list(data.split.base)
    torch.manual_seed(0)
    head = DetectionHeadConfig(class_table=len(base))
    det = TrainedDetector(
        MaMMUTDetector(MaMMUTDetectorConfig(MAMMUT, head)), _tokenizer(), base,
        list(data.split.novel), 0.0,
    )  # fmt: skip
    names = list(data.split.all)
    (found,) = detect_images(
        det, torch.randn(1, 3, 32, 32), [32.0], names, DetectEvalConfig(top_k=50)
    )
    assert len(found.labels) > 0
    assert {names[i] for i in found.labels.tolist()} <= set(base)
