"""MaMMUT training data: text formats, bad images, COCO and WebDataset sources."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from multitower.config import ConfigError
from multitower.data.caption_text import caption_ids, prompt_ids, vqa_ids
from multitower.data.errors import BadRecordError
from multitower.data.image_datasets import SceneConfig, generate_scenes, write_coco_style
from multitower.data.image_readers import read_coco_captions
from multitower.data.images import ImageTransform
from multitower.eval.mammut_eval import EvalSet, question_prior_accuracy
from multitower.experiments.mammut.data import (
    MaMMUTDataConfig,
    MaMMUTDataset,
    build_tokenizer,
    collate_mammut,
    load_records,
)

SCENE = SceneConfig(image_size=32, max_objects=2, captions_per_image=2, questions_per_image=2)
TRANSFORM = ImageTransform(image_size=16)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """Six generated scenes in COCO layout; image 1 corrupt, 2 tiny, 3-5 in odd modes."""
    root = tmp_path_factory.mktemp("coco")
    ann = write_coco_style(generate_scenes(6, 0, SCENE), root)
    images = root / "images"
    (images / "000001.png").write_bytes(b"not a png at all")
    Image.new("RGB", (4, 4), (255, 0, 0)).save(images / "000002.png")
    Image.open(images / "000003.png").convert("LA").save(images / "000003.png")
    Image.open(images / "000004.png").convert("P").save(images / "000004.png")
    gray16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(gray16).save(images / "000005.png")
    return read_coco_captions(ann, images)


def test_text_formats_and_weights():
    records = load_records(MaMMUTDataConfig(num_scenes=4, scene=SCENE), "train")
    tok = build_tokenizer(records, "bpe", 256)
    ids = caption_ids(tok, "A red circle.")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "a red circle"
    seq, weights = vqa_ids(tok, "What color is the circle?", "Red")
    prefix = prompt_ids(tok, "what color is the circle")
    assert seq[: len(prefix)] == prefix and seq[-1] == tok.eos_id
    assert weights == [0.0] * len(prefix) + [1.0] * (len(seq) - len(prefix))
    assert tok.decode(seq[len(prefix) :]) == "red"
    with pytest.raises(ConfigError, match="vocab_size"):
        build_tokenizer(records, "bpe", 10)


def test_dataset_mixes_vqa_examples_and_collates():
    records = load_records(MaMMUTDataConfig(num_scenes=8, scene=SCENE), "train")
    tok = build_tokenizer(records, "bpe", 256)
    question_mark = tok.encode("?")[0]
    all_vqa = MaMMUTDataset(
        records, TRANSFORM, tok, max_text_len=32, vqa_fraction=1.0, preload=True
    )
    no_vqa = MaMMUTDataset(records, TRANSFORM, tok, max_text_len=32, vqa_fraction=0.0, preload=True)
    for i in range(len(records)):
        image, text, gen, weights = all_vqa[i]
        assert image.shape == (3, 16, 16)
        assert question_mark in gen and 0.0 in weights  # a question prefix, not scored
        assert question_mark not in text  # the contrastive text is always a caption
        _, _, gen, weights = no_vqa[i]
        assert question_mark not in gen and set(weights) == {1.0}
    batch = collate_mammut([all_vqa[0], no_vqa[1], all_vqa[2]])
    B, T2 = batch.caption_tokens.shape
    assert batch.images.shape == (3, 3, 16, 16) and batch.caption_weights.shape == (B, T2)
    assert ((batch.caption_tokens == 0) <= (batch.caption_weights == 0)).all()  # padding weighs 0
    short = MaMMUTDataset(records, TRANSFORM, tok, max_text_len=4, vqa_fraction=0.0, preload=True)
    assert all(len(short[i][1]) <= 4 and len(short[i][2]) <= 4 for i in range(len(records)))


def test_bad_images_get_clear_errors_or_are_converted(coco):
    tok = build_tokenizer(coco, "char", 256)
    for preload in (False, True):
        data = MaMMUTDataset(
            coco, TRANSFORM, tok, max_text_len=40, vqa_fraction=0.5, preload=preload
        )
        with pytest.raises(BadRecordError, match=r"000001\.png: cannot decode image"):
            data[1]
        with pytest.raises(BadRecordError, match=r"000002\.png: image is 4x4 pixels, smaller than"):
            data[2]
        for i in (0, 3, 4, 5):  # RGB, LA, P and 16-bit grayscale all become (3, S, S) RGB
            image = data[i][0]
            assert image.shape == (3, 16, 16) and image.dtype == torch.float32
            assert torch.isfinite(image).all()
    plain = MaMMUTDataset(coco, TRANSFORM, tok, max_text_len=40, vqa_fraction=0.0, preload=False)
    gray = plain[5][0]
    pixels = TRANSFORM.denormalize(gray)
    torch.testing.assert_close(pixels[0], pixels[1])  # grayscale is replicated to RGB
    assert pixels.std() > 0.05  # and scaled from 16 bits, not clipped to white
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        eval_set = EvalSet.from_records(coco, TRANSFORM)
    assert len(eval_set) == 4 and eval_set.keys == ["0", "3", "4", "5"]


def test_webdataset_source(tmp_path):
    scenes = generate_scenes(3, 1, SCENE)
    with tarfile.open(tmp_path / "train-000.tar", "w") as tar:
        for i, scene in enumerate(scenes):
            buf = io.BytesIO()
            scene.image.save(buf, format="PNG")
            meta = json.dumps({"captions": scene.captions, "qa": scene.qa}).encode()
            for name, payload in ((f"{i:03d}.png", buf.getvalue()), (f"{i:03d}.json", meta)):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    cfg = MaMMUTDataConfig(source="webdataset", shards=str(tmp_path / "train-*.tar"))
    records = load_records(cfg, "train")
    assert [r.captions for r in records] == [s.captions for s in scenes]
    assert [r.qa for r in records] == [s.qa for s in scenes]
    assert load_records(cfg, "eval") == []
    with pytest.raises(FileNotFoundError):
        load_records(MaMMUTDataConfig(source="webdataset", shards=str(tmp_path / "x.tar")), "train")
    with pytest.raises(ValueError, match="needs coco_annotations"):
        MaMMUTDataConfig(source="coco")


def test_question_prior_baseline():
    train = [("how many circles", "two"), ("how many circles", "two"), ("is there a star", "no")]
    evals = [("how many circles", "2"), ("is there a star", "yes"), ("what shape", "no")]
    # "2" matches "two" after normalisation; the unseen question gets the overall majority "two".
    assert question_prior_accuracy(train, evals) == pytest.approx(1 / 3)
