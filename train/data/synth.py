"""Procedural multi-object matting scenes with exact alpha, captions and COCO-style annotations.

``generate_dataset`` writes the layouts of ``docs/data-layout.md``: the composition layout
(``train/``, ``test/``), ``scenes.json`` and the COCO Captions layout (``coco/``). Every scene
draws from its own random generator, derived from ``(seed, index)``, so the output does not depend
on how scenes are spread over worker processes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from spgim.errors import SpgimError

from .backgrounds import PHRASES, make_background
from .compose import composite
from .shapes import COLOURS, SHAPES, ObjectSpec, render_alpha, render_colour, sample_attributes

__all__ = [
    "RELATIONS",
    "Scene",
    "composite",
    "generate_dataset",
    "make_trimap",
    "merge_objects",
    "relation",
    "render_scene",
    "scene_captions",
    "scene_rng",
]

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]

RELATIONS = ("left of", "right of", "above", "below", "in front of", "behind")
_INVERSE = dict(zip(RELATIONS, ("right of", "left of", "below", "above", "behind", "in front of"), strict=True))
_NUMBERS = {2: "two", 3: "three", 4: "four"}
_MIN_SIZE, _MAX_SIZE = 64, 4096
_JPEG_QUALITY = 95
# Radius range, as a fraction of the image side, by number of objects in the scene.
_RADII = {1: (0.2, 0.34), 2: (0.14, 0.24), 3: (0.12, 0.2), 4: (0.1, 0.18)}
_FOLDERS = {
    "train": ("train/fg", "train/alpha", "train/bg", "coco/train2017"),
    "test": ("test/merged", "test/alpha", "test/trimaps", "test/fg", "test/bg", "coco/val2017"),
}


@dataclass(frozen=True)
class Scene:
    """One rendered scene: 8-bit RGB foreground, alpha and background, and its descriptions."""

    fg: U8
    alpha: U8
    bg: U8
    objects: tuple[ObjectSpec, ...]
    captions: tuple[str, ...]
    background: str
    trimap_radius: int


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of scene ``index``: independent of every other scene's."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def render_scene(seed: int, index: int, size: int, n_objects: int) -> Scene:
    """Render scene ``index`` of the dataset with ``seed``: ``n_objects`` (1-4) over a background."""
    rng = scene_rng(seed, index)
    objects = sample_objects(rng, size, n_objects)
    alphas = [render_alpha(spec, size, rng) for spec in objects]
    colours = [render_colour(spec, size, rng) for spec in objects]
    fg, alpha = merge_objects(colours, alphas)
    bg, background = make_background(rng, size)
    captions = scene_captions(objects, alphas, background, rng)
    radius = max(2, size // 64) + int(rng.integers(0, max(1, size // 64) + 1))
    return Scene(fg, alpha, bg, tuple(objects), tuple(captions), background, radius)


def sample_objects(rng: np.random.Generator, size: int, n_objects: int) -> list[ObjectSpec]:
    """Distinct shapes with colours, attributes and non-coincident positions, back to front."""
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=n_objects, replace=False)]
    low, high = _RADII[n_objects]
    radii = rng.uniform(low, high, n_objects) * size
    centres = _place(rng, size, radii)
    colour_names = list(COLOURS)
    objects = []
    for z, (shape, radius, (cx, cy)) in enumerate(zip(shapes, radii, centres, strict=True)):
        colour = colour_names[int(rng.integers(len(colour_names)))]
        attributes = sample_attributes(shape, rng)
        angle = float(rng.uniform(0.0, 2 * np.pi))
        objects.append(ObjectSpec(shape, colour, attributes, cx, cy, float(radius), angle, z))
    return objects


def _place(rng: np.random.Generator, size: int, radii: NDArray[np.float64]) -> list[tuple[float, float]]:
    """Centres far enough apart that no object hides another and relations are well defined."""
    centres: list[tuple[float, float]] = []
    for radius in radii:
        for _ in range(30):
            cx, cy = rng.uniform(0.18 * size, 0.82 * size, 2)
            if all(np.hypot(cx - x, cy - y) > 0.7 * (radius + r) for (x, y), r in zip(centres, radii, strict=False)):
                break
        centres.append((float(cx), float(cy)))
    return centres


def merge_objects(colours: list[F32], alphas: list[F32]) -> tuple[U8, U8]:
    """Composite objects (given back to front) into one straight 8-bit foreground and alpha.

    The 'over' operator on premultiplied colour, then un-premultiplied. Where the merged alpha
    is zero the foreground takes the object colours weighted by their blurred alphas, so it stays
    plausible outside the objects.
    """
    size = alphas[0].shape[0]
    premultiplied = np.zeros((size, size, 3), np.float32)
    coverage = np.zeros((size, size), np.float32)
    for colour, alpha in zip(colours, alphas, strict=True):
        premultiplied = colour * alpha[..., None] + premultiplied * (1.0 - alpha[..., None])
        coverage = alpha + coverage * (1.0 - alpha)
    alpha_u8 = np.clip(np.rint(coverage * 255.0), 0, 255).astype(np.uint8)
    inside = (alpha_u8 > 0)[..., None]
    straight = premultiplied / np.maximum(coverage, 1e-6)[..., None]
    fg = np.where(inside, straight, _extend(colours, alphas))
    return np.clip(np.rint(fg * 255.0), 0, 255).astype(np.uint8), alpha_u8


def _extend(colours: list[F32], alphas: list[F32]) -> F32:
    """Object colours blended by alpha blurred at quarter resolution (cheap for a wide blur)."""
    size = alphas[0].shape[0]
    small = max(8, size // 4)
    total = np.zeros((size, size, 3), np.float32)
    weights = np.zeros((size, size), np.float32)
    for colour, alpha in zip(colours, alphas, strict=True):
        low = cv2.resize(alpha, (small, small), interpolation=cv2.INTER_AREA)
        low = cv2.GaussianBlur(low, (0, 0), small / 8)
        weight = cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR) + np.float32(1e-3)
        total += colour * weight[..., None]
        weights += weight
    return (total / weights[..., None]).astype(np.float32)


def relation(a: ObjectSpec, b: ObjectSpec, alpha_a: F32, alpha_b: F32) -> str:
    """Where ``a`` is relative to ``b``: by depth when they overlap, else by direction."""
    mask_a, mask_b = alpha_a > 0.25, alpha_b > 0.25
    smaller = min(int(mask_a.sum()), int(mask_b.sum()))
    if smaller and int((mask_a & mask_b).sum()) > 0.05 * smaller:
        return "in front of" if a.z > b.z else "behind"
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def _chain(order: list[int], objects: list[ObjectSpec], alphas: list[F32]) -> str:
    """'a X rel a Y, a Z rel the Y and a W rel the Z': each object relates to its predecessor."""
    first, second = objects[order[0]], objects[order[1]]
    relation_01 = relation(first, second, alphas[order[0]], alphas[order[1]])
    clauses = [f"{_article(first.phrase())} {relation_01} {_article(second.phrase())}"]
    for previous, current in itertools.pairwise(order[1:]):
        rel = relation(objects[current], objects[previous], alphas[current], alphas[previous])
        clauses.append(f"{_article(objects[current].phrase())} {rel} the {objects[previous].noun()}")
    return _join(clauses)


def _join(parts: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"


def scene_captions(
    objects: list[ObjectSpec], alphas: list[F32], background: str, rng: np.random.Generator
) -> list[str]:
    """The main caption, a paraphrase with the objects in the other order, and a plain listing."""
    setting = PHRASES[background]
    if len(objects) == 1:
        phrase = _article(objects[0].phrase())
        return [phrase, f"{phrase} in front of {setting}"]
    order = [int(i) for i in rng.permutation(len(objects))]
    listed = [_article(objects[i].phrase()) for i in order]
    return [
        _chain(order, objects, alphas),
        _chain(order[::-1], objects, alphas),
        f"{_NUMBERS[len(objects)]} objects in front of {setting}: {_join(listed)}",
    ]


def make_trimap(alpha: U8, radius: int) -> U8:
    """0/128/255 trimap: unknown is the band of ``radius`` pixels around every 0 < alpha < 255."""
    trimap = np.where(alpha == 255, 255, 0).astype(np.uint8)
    unknown = ((alpha > 0) & (alpha < 255)).astype(np.uint8)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        unknown = np.asarray(cv2.dilate(unknown, kernel), np.uint8)
    trimap[unknown > 0] = 128
    return trimap


def _encode(image: U8, extension: str) -> bytes:
    if image.ndim == 3:
        image = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if extension == ".jpg" else []
    ok, data = cv2.imencode(extension, image, params)
    if not ok:
        raise SpgimError(f"could not encode a {extension} image")
    return data.tobytes()


def write_scene(out_dir: Path, name: str, split: str, scene: Scene) -> None:
    """Write one scene's files for its split (``"train"`` or ``"test"``), and its COCO image."""
    merged = composite(scene.fg, scene.bg, scene.alpha)
    files: dict[str, bytes] = {}
    if split == "train":
        files = {
            f"train/fg/{name}.png": _encode(scene.fg, ".png"),
            f"train/alpha/{name}.png": _encode(scene.alpha, ".png"),
            f"train/bg/{name}.png": _encode(scene.bg, ".png"),
            f"coco/train2017/{name}.jpg": _encode(merged, ".jpg"),
        }
    else:
        files = {
            f"test/merged/{name}.png": _encode(merged, ".png"),
            f"test/alpha/{name}.png": _encode(scene.alpha, ".png"),
            f"test/trimaps/{name}.png": _encode(make_trimap(scene.alpha, scene.trimap_radius), ".png"),
            f"test/fg/{name}.png": _encode(scene.fg, ".png"),
            f"test/bg/{name}.png": _encode(scene.bg, ".png"),
            f"coco/val2017/{name}.jpg": _encode(merged, ".jpg"),
        }
    for relative, data in files.items():
        (out_dir / relative).write_bytes(data)


def _make_scene(task: tuple[str, int, int, int, str, int]) -> dict[str, Any]:
    """Worker entry point: render and write one scene, return its metadata."""
    out_dir, seed, index, size, split, n_objects = task
    scene = render_scene(seed, index, size, n_objects)
    name = scene_name(index)
    write_scene(Path(out_dir), name, split, scene)
    return {"name": name, "split": split, "captions": list(scene.captions), "objects": n_objects}


def scene_name(index: int) -> str:
    """File stem of scene ``index`` (0-based): ``000001`` for the first."""
    return f"{index + 1:06d}"


def plan_scenes(count: int, seed: int, test_fraction: float, single_fraction: float) -> list[tuple[str, int]]:
    """Split and object count of every scene; exact fractions, spread by a seeded shuffle."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CE7E]))
    test = set(rng.permutation(count)[: round(count * test_fraction)].tolist())
    single = set(rng.permutation(count)[: round(count * single_fraction)].tolist())
    plan = []
    for index in range(count):
        n_objects = 1 if index in single else int(rng.integers(2, 5))
        plan.append(("test" if index in test else "train", n_objects))
    return plan


def generate_dataset(
    out_dir: str | os.PathLike[str],
    count: int,
    size: int,
    seed: int,
    test_fraction: float = 0.2,
    single_fraction: float = 0.3,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate ``count`` scenes of ``size`` x ``size`` pixels into ``out_dir``.

    Writes ``train/``, ``test/``, ``coco/`` and ``scenes.json`` as in ``docs/data-layout.md``.
    The same arguments give byte-identical files whatever ``workers`` is.

    Args:
        out_dir: output folder; created if missing, must be empty unless ``overwrite``.
        count: number of scenes, at least 1.
        size: side of the square scenes in pixels, 64 to 4096.
        seed: non-negative integer seed.
        test_fraction: share of scenes in the test split (also the COCO val split).
        single_fraction: share of scenes with a single object; the others have 2 to 4.
        workers: processes to render with; default ``min(2, cpu count)``.
        overwrite: replace the generated folders of an existing dataset in ``out_dir``.

    Returns: a summary: counts per split and per kind, size, seed, seconds and scenes per minute.

    Raises:
        SpgimError: for a bad argument or an output folder that cannot be written.
    """
    _check_arguments(count, size, seed, test_fraction, single_fraction, workers)
    out = _prepare(Path(out_dir), overwrite)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    plan = plan_scenes(count, seed, test_fraction, single_fraction)
    tasks = [(str(out), seed, i, size, split, n) for i, (split, n) in enumerate(plan)]
    started = time.perf_counter()
    try:
        metadata = _run(tasks, workers)
        _write_indexes(out, metadata, size)
    except OSError as error:
        raise SpgimError(f"cannot write the dataset to {out}: {error.strerror or error}") from error
    seconds = time.perf_counter() - started
    singles = sum(1 for _, n in plan if n == 1)
    tests = sum(1 for split, _ in plan if split == "test")
    return {
        "out_dir": str(out),
        "scenes": count,
        "train": count - tests,
        "test": tests,
        "single": singles,
        "multi": count - singles,
        "size": size,
        "seed": seed,
        "workers": workers,
        "seconds": round(seconds, 3),
        "scenes_per_minute": round(60.0 * count / max(seconds, 1e-9), 1),
    }


def _check_arguments(
    count: int, size: int, seed: int, test_fraction: float, single_fraction: float, workers: int | None
) -> None:
    if not _is_int(count) or count < 1:
        raise SpgimError(f"count must be a whole number of scenes >= 1, got {count!r}")
    if not _is_int(size) or not _MIN_SIZE <= size <= _MAX_SIZE:
        raise SpgimError(f"size must be a whole number of pixels from {_MIN_SIZE} to {_MAX_SIZE}, got {size!r}")
    if not _is_int(seed) or seed < 0:
        raise SpgimError(f"seed must be a whole number >= 0, got {seed!r}")
    for label, fraction in (("test fraction", test_fraction), ("single fraction", single_fraction)):
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise SpgimError(f"{label} must be a number from 0 to 1, got {fraction!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise SpgimError(f"workers must be a whole number >= 1, got {workers!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _prepare(out: Path, overwrite: bool) -> Path:
    """Create the output folders, failing early with one line if they cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if any(out.iterdir()):
            if not overwrite:
                raise SpgimError(f"output folder {out} is not empty; pick a new folder or pass --overwrite")
            for generated in ("train", "test", "coco"):
                shutil.rmtree(out / generated, ignore_errors=True)
            (out / "scenes.json").unlink(missing_ok=True)
        for folder in (*_FOLDERS["train"], *_FOLDERS["test"], "coco/annotations"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SpgimError(f"cannot write to output folder {out}: {error.strerror or error}") from error
    return out


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _run(tasks: list[tuple[str, int, int, int, str, int]], workers: int) -> list[dict[str, Any]]:
    if workers == 1 or len(tasks) < 4:
        return [_make_scene(task) for task in tasks]
    import multiprocessing

    # spawn, not fork: the caller may have started OpenCV or torch threads that fork would orphan.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(tasks) // (workers * 4)))
    with context.Pool(workers, initializer=_init_worker) as pool:
        return list(pool.imap(_make_scene, tasks, chunksize=chunk))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_indexes(out: Path, metadata: list[dict[str, Any]], size: int) -> None:
    """scenes.json and the two COCO caption files, in scene order."""
    scenes = [
        {
            "name": meta["name"],
            "split": meta["split"],
            "caption": meta["captions"][0],
            "objects": meta["objects"],
            "multi_object": meta["objects"] >= 2,
        }
        for meta in metadata
    ]
    _write_json(out / "scenes.json", {"scenes": scenes})
    for split, coco_name in (("train", "train2017"), ("test", "val2017")):
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for index, meta in enumerate(metadata):
            if meta["split"] != split:
                continue
            image_id = index + 1
            images.append({"id": image_id, "file_name": f"{meta['name']}.jpg", "width": size, "height": size})
            for caption in meta["captions"]:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": caption})
        _write_json(
            out / "coco" / "annotations" / f"captions_{coco_name}.json",
            {"images": images, "annotations": annotations},
        )
