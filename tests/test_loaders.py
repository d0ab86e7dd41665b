"""The composition-layout and COCO Captions loaders, on tiny datasets written in tmp_path."""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spgim.errors import SpgimError
from spgim.train.data.captions import (
    CaptionTokenizer,
    CocoCaptionsDataset,
    load_coco_captions,
    swap_left_right,
    train_tokenizer,
)
from spgim.train.data.compose import composite
from spgim.train.data.images import read_grey, read_rgb
from spgim.train.data.matting import MattingTestDataset, MattingTrainDataset, crop_to, pad_to_multiple
from spgim.train.models.spd import saliency_target

H, W = 80, 100
SIZE = 64


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def _soft_disc(cy: float, cx: float, radius: float, softness: float = 6.0) -> np.ndarray:
    y, x = np.mgrid[:H, :W]
    distance = np.hypot(y - cy, x - cx)
    return np.clip((radius - distance) / softness * 255 + 127.5, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i, (cy, cx) in enumerate([(40, 50), (20, 30), (60, 75)]):
        fg = np.zeros((H, W, 3), np.uint8)
        fg[..., i] = 220
        fg[..., (i + 1) % 3] = rng.integers(0, 255, (H, W), dtype=np.uint8)
        alpha = _soft_disc(cy, cx, 18)
        _write(root / f"train/fg/{i:03d}.png", fg)
        _write(root / f"train/alpha/{i:03d}.png", alpha)
        bg = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        _write(root / f"test/merged/{i:03d}.png", composite(fg, bg, alpha))
        _write(root / f"test/alpha/{i:03d}.png", alpha)
        trimap = np.full((H, W), 128, np.uint8)
        trimap[alpha == 0], trimap[alpha == 255] = 0, 255
        _write(root / f"test/trimaps/{i:03d}.png", trimap)
    _write(root / "train/bg/a.jpg", rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    _write(root / "train/bg/b.png", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    scenes = [{"name": "001", "split": "test", "multi_object": True}, {"name": "000", "split": "train"}]
    (root / "scenes.json").write_text(json.dumps({"scenes": scenes}))
    return root


def _train(root: Path, **kwargs: Any) -> MattingTrainDataset:
    options: dict[str, Any] = {"size": SIZE, "bg_per_fg": 2, "seed": 3, **kwargs}
    return MattingTrainDataset(root, **options)


def test_train_sample_shapes_ranges_and_mask_target(data_root: Path) -> None:
    dataset = _train(data_root)
    assert len(dataset) == 3 * 2
    assert len(_train(data_root, samples_per_epoch=5)) == 5
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
        assert sample["alpha"].shape == (1, SIZE, SIZE) and sample["alpha"].dtype == torch.float32
        assert sample["mask_target"].shape == (1, SIZE // 4, SIZE // 4)
        for key in ("image", "alpha", "mask_target"):
            assert float(sample[key].min()) >= 0.0 and float(sample[key].max()) <= 1.0
        alpha = sample["alpha"]
        # DIM crops are centred on the unknown region, which a soft disc always has.
        assert bool(((alpha > 0) & (alpha < 1)).any())
        torch.testing.assert_close(sample["mask_target"], saliency_target(alpha[None], (16, 16), 1.0)[0])
    sharp = _train(data_root, mask_stride=8, mask_sigma=0.0)[0]
    assert sharp["mask_target"].shape == (1, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(sharp["mask_target"], saliency_target(sharp["alpha"][None], (8, 8), 0.0)[0])


def test_train_composite_follows_eq1_without_augmentation(data_root: Path) -> None:
    dataset = _train(data_root, flip=False, colour_jitter=(0.0, 0.0, 0.0))
    sample = dataset[0]
    alpha = sample["alpha"]
    # Where alpha is 1 the composite is the (red, channel 0 = 220) foreground exactly.
    opaque = alpha[0] == 1.0
    assert bool(opaque.any())
    assert torch.allclose(sample["image"][0][opaque], torch.tensor(220 / 255))


def test_train_samples_are_deterministic_per_seed_epoch_index(data_root: Path) -> None:
    first, second = _train(data_root), _train(data_root)
    for index in (0, 4):
        a, b = first[index], second[index]
        for key in a:
            assert torch.equal(a[key], b[key])
    assert not torch.equal(first[0]["image"], first[3]["image"])  # same fg, another composite
    second.set_epoch(1)
    assert not torch.equal(first[0]["image"], second[0]["image"])
    assert not torch.equal(first[0]["image"], _train(data_root, seed=4)[0]["image"])
    with pytest.raises(IndexError):
        first[len(first)]


def test_train_dataloader_with_workers(data_root: Path) -> None:
    dataset = _train(data_root)
    # As the training loop does before forking workers: earlier tests' garbage (PyAV frames whose scalers own
    # thread pools) finalised in a forked worker hangs it.
    gc.collect()
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(3, 3, SIZE, SIZE)] * 2
    assert torch.equal(batches[1]["alpha"][2], dataset[5]["alpha"])


def test_train_pads_foregrounds_smaller_than_the_crop(data_root: Path) -> None:
    dataset = _train(data_root, size=128, scale_range=(1.5, 1.5))
    sample = dataset[1]
    assert sample["image"].shape == (3, 128, 128)
    assert float(sample["alpha"][0, 0, 0]) == 0.0  # padded corner is background


def test_test_dataset(data_root: Path) -> None:
    dataset = MattingTestDataset(data_root)
    assert len(dataset) == 3
    items = list(DataLoader(dataset, batch_size=None, num_workers=2))
    assert [item["name"] for item in items] == ["000", "001", "002"]
    assert [item["multi_object"] for item in items] == [False, True, False]
    item = items[0]
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["alpha"].shape == (1, H, W) and float(item["alpha"].max()) == 1.0
    assert item["trimap"].dtype == torch.uint8 and set(item["trimap"].unique().tolist()) == {0, 128, 255}
    resized = MattingTestDataset(data_root, size=(64, 96))[0]
    assert resized["image"].shape == (3, 64, 96) and resized["alpha"].shape == (1, H, W)


def test_test_dataset_without_trimaps_or_scenes(data_root: Path, tmp_path: Path) -> None:
    for folder in ("merged", "alpha"):
        (tmp_path / "test" / folder).mkdir(parents=True)
        for path in (data_root / "test" / folder).iterdir():
            (tmp_path / "test" / folder / path.name).symlink_to(path)
    item = MattingTestDataset(tmp_path)[2]
    assert item["trimap"] is None and item["multi_object"] is False


def test_pad_to_multiple_and_crop_back() -> None:
    image = torch.rand(2, 3, 50, 70)
    padded, size = pad_to_multiple(image, 32)
    assert padded.shape == (2, 3, 64, 96) and size == (50, 70)
    assert torch.equal(crop_to(padded, size), image)
    tiny, _ = pad_to_multiple(torch.rand(3, 5, 7), 32)
    assert tiny.shape == (3, 32, 32)
    same, _ = pad_to_multiple(torch.rand(1, 64, 32), 32)
    assert same.shape == (1, 64, 32)


def test_read_helpers(tmp_path: Path) -> None:
    deep = np.array([[0, 256, 65535]], np.uint16)
    _write(tmp_path / "deep.png", deep)
    assert read_grey(tmp_path / "deep.png").tolist() == [[0, 1, 255]]
    assert read_rgb(tmp_path / "deep.png").shape == (1, 3, 3)
    with pytest.raises(SpgimError, match=r"^cannot read image .*nothing\.png \(no such file\)$"):
        read_rgb(tmp_path / "nothing.png")


def _copy_tree(source: Path, target: Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(source)).write_bytes(path.read_bytes())


def test_broken_training_data_names_the_file(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SpgimError, match=r"missing folder .*train/fg: it should hold foreground"):
        MattingTrainDataset(tmp_path, size=SIZE)
    _copy_tree(data_root, tmp_path)
    (tmp_path / "train/fg/002.png").unlink()
    with pytest.raises(SpgimError, match=r"train/alpha/002\.png has no matching .* in .*train/fg"):
        MattingTrainDataset(tmp_path, size=SIZE)
    (tmp_path / "train/alpha/002.png").unlink()
    for path in (tmp_path / "train/bg").iterdir():
        path.unlink()
    with pytest.raises(SpgimError, match=r"no images in .*train/bg"):
        MattingTrainDataset(tmp_path, size=SIZE)
    _write(tmp_path / "train/bg/c.png", np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "train/alpha/001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = MattingTrainDataset(tmp_path, size=SIZE, bg_per_fg=1)
    dataset[0]
    with pytest.raises(SpgimError, match=r"^cannot read image .*train/alpha/001\.png \(corrupt or not an image\)$"):
        dataset[1]
    iterator = iter(DataLoader(dataset, batch_size=2, num_workers=2))
    try:
        next(iterator)
    except SpgimError as exc:
        # One line, as raised in the worker, not the DataLoader's "Caught ... Original Traceback".
        assert re.fullmatch(r"cannot read image .*train/alpha/001\.png \(corrupt or not an image\)", str(exc))
        # The traceback holds the iterator in a reference cycle; left to the garbage collector,
        # its workers are shut down in whatever test runs then, after seconds of join timeouts.
        exc.__traceback__ = None
    else:
        pytest.fail("the worker's SpgimError did not reach the main process")
    del iterator
    with pytest.raises(SpgimError, match="multiple of 32"):
        MattingTrainDataset(tmp_path, size=50)


def test_broken_test_data_names_the_file(data_root: Path, tmp_path: Path) -> None:
    _copy_tree(data_root, tmp_path)
    _write(tmp_path / "test/alpha/002.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(SpgimError, match=r"test/alpha/002\.png is 101x80 but .*test/merged/002\.png is 100x80"):
        MattingTestDataset(tmp_path)[2]
    (tmp_path / "test/trimaps/001.png").unlink()
    with pytest.raises(SpgimError, match=r"test/merged/001\.png has no matching .* in .*test/trimaps"):
        MattingTestDataset(tmp_path)
    _write(tmp_path / "test/trimaps/001.png", np.zeros((H, W), np.uint8))
    (tmp_path / "test/alpha/000.png").unlink()
    with pytest.raises(SpgimError, match=r"test/merged/000\.png has no matching"):
        MattingTestDataset(tmp_path)
    for folder in ("merged", "trimaps"):
        (tmp_path / f"test/{folder}/000.png").unlink()
    (tmp_path / "scenes.json").write_text("{not json")
    with pytest.raises(SpgimError, match=r"cannot read .*scenes\.json"):
        MattingTestDataset(tmp_path)


CAPTIONS = [
    f"a {colour} {thing} on the {side} of a {place}"
    for colour, thing, side, place in zip(
        ["red", "blue", "green", "brown", "white"] * 4,
        ["dog", "cat", "car", "bird", "ball"] * 4,
        ["left", "right"] * 10,
        ["table", "street", "field", "room"] * 5,
        strict=True,
    )
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CaptionTokenizer:
    model = train_tokenizer(CAPTIONS, tmp_path_factory.mktemp("tok") / "captions", vocab_size=512)
    assert model.name == "captions.model" and model.is_file()
    return CaptionTokenizer(model)


def test_tokenizer_round_trip(tokenizer: CaptionTokenizer) -> None:
    # 20 captions support far fewer than 512 pieces: the vocabulary adapted down.
    assert 4 < tokenizer.vocab_size < 512
    ids = tokenizer.encode("A Red dog on the LEFT of a table", 32)
    assert ids[0] == 1 and ids[-1] == 2 and 0 not in ids
    assert tokenizer.decode(ids) == "a red dog on the left of a table"
    assert tokenizer.decode([*ids, 0, 0]) == tokenizer.decode(ids[1:-1])
    short = tokenizer.encode("a red dog on the left of a table", 4)
    assert len(short) == 4 and short[0] == 1 and short[-1] == 2


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(SpgimError, match="too small"):
        train_tokenizer(CAPTIONS, tmp_path / "tiny", vocab_size=8)
    (tmp_path / "bad.model").write_bytes(b"garbage")
    with pytest.raises(SpgimError, match=r"cannot load tokenizer .*bad\.model"):
        CaptionTokenizer(tmp_path / "bad.model")


def test_swap_left_right() -> None:
    assert swap_left_right("Left of a bright car, right of a LEFT-handed man") == (
        "Right of a bright car, left of a RIGHT-handed man"
    )


@pytest.fixture()
def coco_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(4):
        name = f"{i:012d}.jpg"
        _write(tmp_path / "coco/train2017" / name, rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8))
        images.append({"id": 10 + i, "file_name": name, "width": 64, "height": 48 + 8 * i})
        for j in range(2):
            annotations.append({"id": 100 + 2 * i + j, "image_id": 10 + i, "caption": CAPTIONS[2 * i + j]})
    annotation_dir = tmp_path / "coco/annotations"
    annotation_dir.mkdir(parents=True)
    (annotation_dir / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (annotation_dir / "captions_val2017.json").write_text(
        json.dumps({"images": images[:1], "annotations": annotations[:2]})
    )
    (tmp_path / "coco/val2017").mkdir()
    first = images[0]["file_name"]
    (tmp_path / "coco/val2017" / first).write_bytes((tmp_path / "coco/train2017" / first).read_bytes())
    return tmp_path


def test_coco_dataset_items(coco_root: Path, tokenizer: CaptionTokenizer) -> None:
    dataset = CocoCaptionsDataset(coco_root, "train", image_size=32, tokenizer=tokenizer, max_len=12)
    assert len(dataset) == 8
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["tokens"].shape == (4, 13) and batch["tokens"].dtype == torch.long
    assert (batch["tokens"][:, 0] == 1).all() and ((batch["tokens"] == 2).sum(dim=1) == 1).all()
    assert torch.equal(batch["tokens"][1], dataset[1]["tokens"])
    assert torch.equal(batch["image"][1], dataset[1]["image"])
    val = CocoCaptionsDataset(coco_root / "coco", "val", image_size=32, tokenizer=tokenizer, max_len=12)
    assert len(val) == 2 and val[0]["image"].shape == (3, 32, 32)


def test_coco_flip_swaps_left_and_right(coco_root: Path, tokenizer: CaptionTokenizer) -> None:
    dataset = CocoCaptionsDataset(coco_root, "train", image_size=32, tokenizer=tokenizer, max_len=40)
    decoded = set()
    for epoch in range(10):
        dataset.set_epoch(epoch)
        decoded.add(tokenizer.decode(dataset[0]["tokens"].tolist()))
    # Caption 0 says "left"; the epochs that flip the image say "right".
    assert decoded == {CAPTIONS[0], CAPTIONS[0].replace("left", "right")}


def test_broken_coco_data_names_the_file(coco_root: Path, tokenizer: CaptionTokenizer) -> None:
    with pytest.raises(SpgimError, match=r"missing COCO Captions file .*captions_test2017\.json"):
        load_coco_captions(coco_root, "test")
    (coco_root / "coco/train2017/000000000002.jpg").unlink()
    with pytest.raises(SpgimError, match=r"missing image .*train2017/000000000002\.jpg, captioned in"):
        CocoCaptionsDataset(coco_root, image_size=32, tokenizer=tokenizer, max_len=12)
    json_path = coco_root / "coco/annotations/captions_val2017.json"
    json_path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(SpgimError, match=r"captions_val2017\.json is not COCO Captions JSON"):
        load_coco_captions(coco_root, "val")
