"""The procedural scene generator: layout, exact alpha, captions, determinism and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from spgim.errors import SpgimError
from spgim.train.data.shapes import SHAPES
from spgim.train.data.synth import RELATIONS, composite, generate_dataset
from spgim.train.data.synth_cli import register_synth

SIZE, COUNT, SEED = 96, 10, 3


def _generate(out: Path, seed: int = SEED, workers: int = 1) -> dict[str, Any]:
    return generate_dataset(out, COUNT, SIZE, seed, test_fraction=0.3, single_fraction=0.3, workers=workers)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    _generate(out)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(cv2.cvtColor(_read(path), cv2.COLOR_BGR2RGB))


def _grey(path: Path) -> np.ndarray:
    image = _read(path)
    assert image.ndim == 2
    return image


def _scenes(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "scenes.json").read_text())["scenes"]


def _names(root: Path, split: str) -> list[str]:
    return [s["name"] for s in _scenes(root) if s["split"] == split]


def test_summary_and_layout(dataset: Path) -> None:
    scenes = _scenes(dataset)
    assert len(scenes) == COUNT
    assert {s["split"] for s in scenes} == {"train", "test"}
    assert sum(s["split"] == "test" for s in scenes) == 3
    assert sum(not s["multi_object"] for s in scenes) == 3
    for scene in scenes:
        assert set(scene) == {"name", "split", "caption", "objects", "multi_object"}
        assert scene["multi_object"] == (scene["objects"] >= 2)
    for name in _names(dataset, "train"):
        for folder in ("fg", "alpha", "bg"):
            assert (dataset / "train" / folder / f"{name}.png").is_file()
        assert _rgb(dataset / "train/fg" / f"{name}.png").shape == (SIZE, SIZE, 3)
        assert _grey(dataset / "train/alpha" / f"{name}.png").shape == (SIZE, SIZE)
    for name in _names(dataset, "test"):
        for folder in ("merged", "alpha", "trimaps", "fg", "bg"):
            assert (dataset / "test" / folder / f"{name}.png").is_file()


def test_same_seed_gives_identical_files_with_any_worker_count(dataset: Path, tmp_path: Path) -> None:
    _generate(tmp_path / "again", workers=2)
    assert _files(tmp_path / "again") == _files(dataset)


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    _generate(tmp_path / "other", seed=SEED + 1)
    ours, theirs = _files(dataset), _files(tmp_path / "other")
    assert ours["scenes.json"] != theirs["scenes.json"]
    shared = [path for path in ours.keys() & theirs.keys() if path.endswith(".png")]
    assert shared and all(ours[path] != theirs[path] for path in shared)


def test_merged_is_exactly_the_composite_of_fg_bg_alpha(dataset: Path) -> None:
    for name in _names(dataset, "test"):
        fg, bg = _rgb(dataset / "test/fg" / f"{name}.png"), _rgb(dataset / "test/bg" / f"{name}.png")
        alpha = _grey(dataset / "test/alpha" / f"{name}.png")
        merged = _rgb(dataset / "test/merged" / f"{name}.png")
        np.testing.assert_array_equal(composite(fg, bg, alpha), merged)


def test_composite_formula() -> None:
    fg = np.full((1, 2, 3), 200, np.uint8)
    bg = np.full((1, 2, 3), 10, np.uint8)
    alpha = np.array([[128, 255]], np.uint8)
    expected = np.rint(np.float32(200) * np.float32(128 / 255) + np.float32(10) * np.float32(1 - 128 / 255))
    assert composite(fg, bg, alpha)[0, 0, 0] == expected
    assert composite(fg, bg, alpha)[0, 1, 0] == 200


def test_alpha_is_soft_and_fg_is_defined_outside_it(dataset: Path) -> None:
    soft = 0
    for name in _names(dataset, "train"):
        alpha = _grey(dataset / "train/alpha" / f"{name}.png")
        soft += int(((alpha > 0) & (alpha < 255)).sum())
        assert alpha.max() > 0
        outside = _rgb(dataset / "train/fg" / f"{name}.png")[alpha == 0]
        assert outside.std() > 0 or outside.mean() > 0
    assert soft > 0


def test_multi_object_captions_name_objects_and_a_relation(dataset: Path) -> None:
    multi = [s for s in _scenes(dataset) if s["multi_object"]]
    assert multi
    for scene in multi:
        caption = scene["caption"]
        assert len({shape for shape in SHAPES if shape in caption}) >= 2
        assert any(f" {relation} " in caption for relation in RELATIONS)


def test_coco_captions_reference_existing_images(dataset: Path) -> None:
    for coco_split, split in (("train2017", "train"), ("val2017", "test")):
        data = json.loads((dataset / "coco/annotations" / f"captions_{coco_split}.json").read_text())
        assert {image["file_name"] for image in data["images"]} == {f"{n}.jpg" for n in _names(dataset, split)}
        ids = {image["id"] for image in data["images"]}
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        assert {a["image_id"] for a in data["annotations"]} == ids
        for image in data["images"]:
            path = dataset / "coco" / coco_split / image["file_name"]
            assert _rgb(path).shape == (image["height"], image["width"], 3)
        assert all(a["caption"] for a in data["annotations"])


def test_trimaps_are_three_valued_and_cover_soft_alpha(dataset: Path) -> None:
    for name in _names(dataset, "test"):
        trimap = _grey(dataset / "test/trimaps" / f"{name}.png")
        alpha = _grey(dataset / "test/alpha" / f"{name}.png")
        assert set(np.unique(trimap).tolist()) <= {0, 128, 255}
        assert np.all(trimap[(alpha > 0) & (alpha < 255)] == 128)
        assert np.all(alpha[trimap == 255] == 255) and np.all(alpha[trimap == 0] == 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"size": 32},
        {"size": 96.5},
        {"seed": -1},
        {"test_fraction": 1.5},
        {"single_fraction": -0.1},
        {"workers": 0},
    ],
)
def test_bad_arguments_raise_one_line_errors(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"count": 2, "size": 64, "seed": 0, **kwargs}
    with pytest.raises(SpgimError) as error:
        generate_dataset(tmp_path / "out", **arguments)
    assert "\n" not in str(error.value)


def test_unwritable_or_non_empty_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SpgimError, match="cannot write"):
        generate_dataset(blocker / "out", 1, 64, 0)
    with pytest.raises(SpgimError, match="not empty"):
        generate_dataset(tmp_path, 1, 64, 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spgim data")
    register_synth(parser.add_subparsers(dest="action", required=True))
    return parser


def test_cli_generates_and_rejects_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["synth", "--out", str(tmp_path / "d"), "--count", "3", "--size", "64", "--seed", "5"])
    assert args.handler(args) == 0
    assert "wrote 3 scenes" in capsys.readouterr().out
    assert len(_scenes(tmp_path / "d")) == 3
    bad = _parser().parse_args(["synth", "--out", str(tmp_path / "e"), "--size", "big"])
    with pytest.raises(SpgimError, match="--size"):
        bad.handler(bad)


def test_cli_help_has_an_example() -> None:
    subparsers = argparse.ArgumentParser(prog="spgim data").add_subparsers()
    register_synth(subparsers)
    text = subparsers.choices["synth"].format_help()
    assert "example:" in text and "spgim data synth --out" in text
