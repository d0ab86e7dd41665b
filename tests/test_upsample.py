"""Guided upsampling (the ``upsample`` graph): the module against a numpy fast guided filter, its edge gain over
bilinear, and its exported artifacts (TorchScript, ONNX, OpenVINO IR, AOTInductor) against eager at two frame sizes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_pairs import export_pair, export_tiny, random_pair
from requirements import needs_tool

from spgim.aoti_build import aoti_compiler_missing
from spgim.cli import main
from spgim.export.exporter import ExportRequest, run_export
from spgim.export.io_spec import FRAME_PROFILE_HW, upsample_spec
from spgim.runtime.artifacts import load_artifacts, select_pair, select_upsampler
from spgim.train.models.upsample import GREY_WEIGHTS, GuidedUpsampler

# (working height, width) inside export_tiny's 64..512 profile, and full-resolution frames of any size.
CASES = [((96, 128), (720, 1280)), ((128, 64), (201, 333))]


# --- the numpy reference ---------------------------------------------------------------------------------------


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window inside the image (borders normalised by the count), on the last two axes."""
    h, w = x.shape[-2:]
    padded = np.zeros((*x.shape[:-2], h + 1, w + 1), np.float64)
    padded[..., 1:, 1:] = x.astype(np.float64).cumsum(-2).cumsum(-1)
    y0, y1 = np.clip(np.arange(h) - r, 0, h), np.clip(np.arange(h) + r + 1, 0, h)
    x0, x1 = np.clip(np.arange(w) - r, 0, w), np.clip(np.arange(w) + r + 1, 0, w)
    total = (
        padded[..., y1[:, None], x1[None, :]]
        - padded[..., y0[:, None], x1[None, :]]
        - padded[..., y1[:, None], x0[None, :]]
        + padded[..., y0[:, None], x0[None, :]]
    )
    return total / ((y1 - y0)[:, None] * (x1 - x0)[None, :])


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (align_corners=False) source indices and weights along one axis."""
    source = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, source - low


def _bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    y0, y1, wy = _taps(x.shape[-2], height)
    x0, x1, wx = _taps(x.shape[-1], width)
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def guided_upsample_reference(
    alpha: np.ndarray, image: np.ndarray, frame: np.ndarray, radius: int, eps: float
) -> np.ndarray:
    """He & Sun's fast guided filter in float64 numpy: (N,1,h,w), (N,3,h,w), (N,H,W,3) uint8 -> (N,1,H,W)."""
    grey = np.asarray(GREY_WEIGHTS)
    guide = np.einsum("nchw,c->nhw", image.astype(np.float64), grey)
    p = alpha[:, 0].astype(np.float64)
    mean_i, mean_p = _box(guide, radius), _box(p, radius)
    cov = _box(guide * p, radius) - mean_i * mean_p
    var = _box(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    height, width = frame.shape[1:3]
    a_high = _bilinear(_box(a, radius), height, width)
    b_high = _bilinear(_box(b, radius), height, width)
    guide_high = np.einsum("nhwc,c->nhw", frame.astype(np.float64) / 255.0, grey)
    return np.clip(a_high * guide_high + b_high, 0.0, 1.0)[:, None]


def _inputs(
    working: tuple[int, int], frame: tuple[int, int], batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth low-resolution alpha, the frame area-downsampled to the working size as the image, a noisy frame."""
    rng = np.random.default_rng(seed)
    (h, w), (fh, fw) = working, frame
    base = cv2.GaussianBlur(rng.random((fh, fw, 3), dtype=np.float32), (0, 0), 3)
    frames = np.stack([np.clip(base * 255 + rng.normal(0, 8, base.shape), 0, 255) for _ in range(batch)])
    frames = frames.astype(np.uint8)
    image = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32) / 255
    alpha = np.stack([cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 2) for _ in range(batch)])
    alpha = (alpha - alpha.min()) / (alpha.max() - alpha.min())
    return (
        torch.from_numpy(np.ascontiguousarray(alpha[:, None])),
        torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2))),
        torch.from_numpy(frames),
    )


def _eager(model: GuidedUpsampler, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    with torch.no_grad():
        return model(*inputs).numpy()


# --- (a), (b): the module ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("radius", "eps"), [(1, 1e-4), (2, 1e-3), (3, 1e-2)])
def test_module_matches_the_numpy_reference(radius: int, eps: float) -> None:
    rng = np.random.default_rng(radius)
    alpha = rng.random((2, 1, 24, 40), dtype=np.float32)
    image = rng.random((2, 3, 24, 40), dtype=np.float32)
    frame = rng.integers(0, 256, (2, 57, 83, 3), dtype=np.uint8)
    model = GuidedUpsampler(radius, eps).eval()
    out = _eager(model, (torch.from_numpy(alpha), torch.from_numpy(image), torch.from_numpy(frame)))
    assert out.dtype == np.float32 and out.shape == (2, 1, 57, 83)
    assert out.min() >= 0.0 and out.max() <= 1.0
    expected = guided_upsample_reference(alpha, image, frame, radius, eps)
    # float32 against float64 (measured ~5e-7: the module centres its guide, so var = E[I^2] - E[I]^2 keeps
    # its precision; uncentred, the smooth case below differed by 2e-5 at eps 1e-4).
    assert np.abs(out - expected).max() < 1e-5
    smooth = _inputs((32, 64), (75, 150), batch=2)
    reference = guided_upsample_reference(*(t.numpy() for t in smooth), radius, eps)
    assert np.abs(_eager(model, smooth) - reference).max() < 1e-5


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="radius"):
        GuidedUpsampler(0)
    with pytest.raises(ValueError, match="eps"):
        GuidedUpsampler(1, 0.0)


def _edge_scene(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A frame with a sharp-edged star (and a thin bar) over a different background, and its true alpha."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx - width * 0.45, yy - height * 0.5
    truth = np.hypot(u, v) < height * 0.3 * (1 + 0.25 * np.cos(5 * np.arctan2(v, u)))
    truth |= (np.abs(xx - width * 0.8) < width * 0.012) & (yy > height * 0.2) & (yy < height * 0.85)
    truth_f = truth.astype(np.float32)
    background = np.stack([0.25 + 0.1 * np.sin(xx / 37), 0.35 + 0.1 * np.cos(yy / 23), 0.3 + 0 * xx], -1)
    foreground = np.stack([0.85 + 0 * xx, 0.6 + 0.05 * np.sin((xx + yy) / 11), 0.4 + 0 * xx], -1)
    rgb = truth_f[..., None] * foreground + (1 - truth_f[..., None]) * background
    rgb += rng.normal(0, 3 / 255, rgb.shape)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8), truth_f


def test_a_sharp_frame_edge_sharpens_a_blurred_alpha_better_than_bilinear() -> None:
    frame, truth = _edge_scene(400, 640)
    h, w = 160, 256  # the working size, 2.5x below the frame
    image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    low = cv2.GaussianBlur(cv2.resize(truth, (w, h), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
    bilinear = np.clip(cv2.resize(low, (640, 400), interpolation=cv2.INTER_LINEAR), 0, 1)
    inputs = (
        torch.from_numpy(low)[None, None],
        torch.from_numpy(image.transpose(2, 0, 1).copy())[None],
        torch.from_numpy(frame)[None],
    )
    guided = _eager(GuidedUpsampler().eval(), inputs)[0, 0]
    edges = cv2.Canny((truth * 255).astype(np.uint8), 50, 150) > 0
    band = cv2.dilate(edges.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    errors = {name: np.abs(x - truth) for name, x in (("bilinear", bilinear), ("guided", guided))}
    mae = {name: float(e.mean()) for name, e in errors.items()}
    band_mae = {name: float(e[band].mean()) for name, e in errors.items()}
    print(f"MAE bilinear {mae['bilinear']:.4f} guided {mae['guided']:.4f}; edge band {band_mae}")
    assert mae["guided"] < 0.9 * mae["bilinear"]
    assert band_mae["guided"] < 0.9 * band_mae["bilinear"]


# --- (c): exported artifacts -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """export_tiny's folder (dynamic 64..512) in TorchScript, ONNX fp32+fp16 and OpenVINO IR."""
    return export_tiny(tmp_path_factory.mktemp("upsample"), formats="torchscript,onnx,openvino", precision="fp32,fp16")


def test_manifest_lists_the_upsampler_and_the_loader_finds_it(exported: Path) -> None:
    manifest = json.loads((exported / "spgim-export.json").read_text())
    upsample = [item for item in manifest["artifacts"] if item["branch"] == "upsample"]
    assert [(i["format"], i["precision"], i["file"]) for i in upsample] == [
        ("torchscript", "fp32", "upsample.torchscript.pt"),
        ("onnx", "fp32", "upsample.onnx"),
        ("openvino", "fp32", "upsample.xml"),
    ]
    assert not (exported / "upsample.fp16.onnx").exists()
    for item in upsample:
        sidecar = json.loads((exported / (item["file"] + ".json")).read_text())
        assert sidecar["branch"] == "upsample" and sidecar["precision"] == "fp32"
        assert sidecar["source"] == {"upsampler": {"radius": 1, "eps": 1e-4}}
        assert sidecar["profile"] == {"min": [64, 64], "opt": [128, 128], "max": [512, 512]}
        assert sidecar["frame_profile"] == {"min": [32, 32], "opt": [1280, 720], "max": [3840, 2160]}
        assert sidecar["flops_per_frame"] > 0 and sidecar["artifact_bytes"] == (exported / item["file"]).stat().st_size
        assert [(i["name"], i["dtype"]) for i in sidecar["inputs"]] == [
            ("alpha", "float32"),
            ("image", "float32"),
            ("frame", "uint8"),
        ]
        assert sidecar["inputs"][2]["shape"] == ["batch", "frame_height", "frame_width", 3]
        assert sidecar["inputs"][2]["layout"] == "NHWC"
        assert sidecar["outputs"] == [
            {"name": "alpha_full", "shape": ["batch", 1, "frame_height", "frame_width"], "dtype": "float32"}
        ]
    artifacts = load_artifacts(exported)
    found = {fmt: select_upsampler(artifacts, fmt) for fmt in ("torchscript", "onnx", "onnx-trt", "openvino", "pt2")}
    assert {fmt: a.path.name if a else None for fmt, a in found.items()} == {
        "torchscript": "upsample.torchscript.pt",
        "onnx": "upsample.onnx",
        "onnx-trt": "upsample.onnx",
        "openvino": "upsample.xml",
        "pt2": None,
    }
    # The SPD/SPGM pairs are unchanged, fp16 ones included; a folder from before the upsampler has none.
    for fmt, precision in (("onnx", "fp32"), ("onnx", "fp16"), ("openvino", "fp32"), ("torchscript", "fp32")):
        spd, spgm = select_pair(artifacts, fmt, precision)
        assert (spd.branch, spgm.branch) == ("spd", "spgm")
    older = [a for a in artifacts if a.branch != "upsample"]
    assert select_upsampler(older, "onnx") is None


def _runners(folder: Path) -> dict[str, Any]:
    """Each upsample artifact loaded with its own runtime, as a function of (alpha, image, frame) numpy arrays."""
    from spgim.runtime.openvino_backend import shared_core

    artifacts = load_artifacts(folder)
    runners: dict[str, Any] = {}
    torchscript = select_upsampler(artifacts, "torchscript")
    if torchscript is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14: TorchScript is deprecated
            module = torch.jit.load(str(torchscript.path))

        def run_torchscript(*arrays: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(*(torch.from_numpy(a) for a in arrays)).numpy()

        runners["torchscript"] = run_torchscript
    portable = select_upsampler(artifacts, "onnx")
    assert portable is not None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(portable.path), options, providers=["CPUExecutionProvider"])
    runners["onnx"] = lambda alpha, image, frame: session.run(None, {"alpha": alpha, "image": image, "frame": frame})[0]
    ir = select_upsampler(artifacts, "openvino")
    if ir is not None:
        compiled = shared_core().compile_model(
            str(ir.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
        )
        runners["openvino"] = lambda *arrays: np.array(compiled(list(arrays))[0])
    return runners


@pytest.mark.parametrize(("working", "frame"), CASES)
def test_exported_artifacts_match_eager_at_two_frame_sizes(
    exported: Path, working: tuple[int, int], frame: tuple[int, int]
) -> None:
    model = GuidedUpsampler().eval()
    inputs = _inputs(working, frame)
    expected = _eager(model, inputs)
    arrays = [t.numpy() for t in inputs]
    runners = _runners(exported)
    assert set(runners) == {"torchscript", "onnx", "openvino"}
    for name, run in runners.items():
        out = run(*arrays)
        assert out.dtype == np.float32 and out.shape == (1, 1, *frame), name
        difference = float(np.abs(out - expected).max())
        print(f"{name} {frame[1]}x{frame[0]} from {working[1]}x{working[0]}: max |diff| {difference:.2e}")
        assert difference < 1e-4, name


@pytest.mark.parametrize(("radius", "eps"), [(1, 1e-4), (2, 1e-3), (3, 1e-2)])
def test_the_opencv_filter_is_the_graphs_filter(exported: Path, radius: int, eps: float) -> None:
    """guided-cv2 (the CPU's default upsampling) computes what the graph computes, with the sidecar's radius, eps."""
    from spgim.runtime import upsampling

    assert upsampling.GREY_WEIGHTS == GREY_WEIGHTS
    artifact = select_upsampler(load_artifacts(exported), "onnx")
    assert artifact is not None
    recorded = upsampling.cv2_guided_upsampler(artifact)
    smooth = _inputs((32, 64), (75, 150), batch=2)
    expected = _eager(GuidedUpsampler().eval(), smooth)
    assert np.abs(recorded(*(t.numpy() for t in smooth)) - expected).max() < 1e-5
    artifact.sidecar["source"] = {"upsampler": {"radius": radius, "eps": eps}}
    filtered = upsampling.cv2_guided_upsampler(artifact)
    rng = np.random.default_rng(radius)
    alpha = rng.random((2, 1, 24, 40), dtype=np.float32)
    image = rng.random((2, 3, 24, 40), dtype=np.float32)
    # Two frame sizes one after the other: the scratch buffers follow the frame.
    for frame in (rng.integers(0, 256, (2, 57, 83, 3), dtype=np.uint8), rng.integers(0, 256, (2, 30, 41, 3), np.uint8)):
        out = filtered(alpha, image, frame)
        assert out.dtype == np.float32 and out.shape == (2, 1, *frame.shape[1:3])
        assert np.abs(out - guided_upsample_reference(alpha, image, frame, radius, eps)).max() < 1e-5
    # Two calls do not share an output.
    first = filtered(alpha, image, frame)
    assert filtered(alpha[::-1].copy(), image, frame) is not first and not np.allclose(
        first, filtered(alpha, image, frame[::-1])
    )


def test_the_opencv_filter_refuses_what_it_cannot_run(exported: Path) -> None:
    from spgim.errors import SpgimError
    from spgim.runtime.upsampling import choose_upsampling, cv2_guided_upsampler

    artifact = select_upsampler(load_artifacts(exported), "onnx")
    assert artifact is not None
    assert choose_upsampling("auto", "cpu", artifact) == "guided-cv2"
    assert choose_upsampling("auto", "cuda:0", artifact) == "guided"
    assert choose_upsampling("auto", "cpu", None) == "bilinear"
    with pytest.raises(SpgimError, match="runs on the CPU"):
        choose_upsampling("guided-cv2", "cuda:0", artifact)
    with pytest.raises(SpgimError, match="no upsample graph"):
        choose_upsampling("guided-cv2", "cpu", None)
    for garbled in ({}, {"upsampler": {"radius": "one", "eps": 1e-4}}, {"upsampler": {"radius": 0, "eps": 1e-4}}):
        artifact.sidecar["source"] = garbled
        with pytest.raises(SpgimError, match="radius"):
            cv2_guided_upsampler(artifact)


def test_export_takes_the_filters_radius_and_eps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``spgim export --upsample-radius 2 --upsample-eps 1e-5``: the graph and its sidecar carry them, and the OpenCV
    filter read from that sidecar computes what the graph computes; a radius of 0 is refused in one line."""
    from spgim.runtime.upsampling import cv2_guided_upsampler

    random_pair(tmp_path)
    options = ["--formats", "onnx", "--precision", "fp32", "--height", "128", "--width", "128"]
    out = export_pair(tmp_path, tmp_path / "r2", *options, "--upsample-radius", "2", "--upsample-eps", "1e-5")
    artifact = select_upsampler(load_artifacts(out), "onnx")
    assert artifact is not None and artifact.sidecar["source"] == {"upsampler": {"radius": 2, "eps": 1e-5}}
    alpha, image, frame = (t.numpy() for t in _inputs((128, 128), (360, 640)))
    expected = guided_upsample_reference(alpha, image, frame, 2, 1e-5)
    graph = _runners(out)["onnx"](alpha, image, frame)
    assert np.abs(graph - expected).max() < 1e-4
    assert np.abs(cv2_guided_upsampler(artifact)(alpha, image, frame) - expected).max() < 1e-5
    # Not what the default radius computes: the option reached the graph.
    assert np.abs(graph - guided_upsample_reference(alpha, image, frame, 1, 1e-4)).max() > 1e-3
    capsys.readouterr()
    argv = ["export", "--spd", str(tmp_path / "spd.pt"), "--spgm", str(tmp_path / "spgm.pt"), "--out"]
    assert main([*argv, str(tmp_path / "r0"), *options, "--upsample-radius", "0"]) != 0
    assert main([*argv, str(tmp_path / "e0"), *options, "--upsample-eps", "0"]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("radius of at least 1 and a positive eps" in line for line in lines), lines
    assert not (tmp_path / "r0").exists() and not (tmp_path / "e0").exists()


def test_frame_size_stays_dynamic_without_dynamic_export(exported: Path) -> None:
    """Exported without --dynamic: batch and working size fixed (128x128), the frame's height and width free."""
    folder = exported.parent
    out = folder / "fixed"
    argv = ["export", "--spd", str(folder / "spd.pt"), "--spgm", str(folder / "spgm.pt"), "--out", str(out)]
    assert main([*argv, "--formats", "onnx", "--precision", "fp32", "--height", "128", "--width", "128"]) == 0
    graph = onnx.load(str(out / "upsample.onnx"))

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    shapes = {v.name: dims(v) for v in graph.graph.input}
    assert shapes == {
        "alpha": [1, 1, 128, 128],
        "image": [1, 3, 128, 128],
        "frame": [1, "frame_height", "frame_width", 3],
    }
    # The output's batch and channel come out of a Resize to computed sizes: ONNX's shape inference leaves
    # them symbolic. Its spatial axes carry the frame's names.
    (output,) = graph.graph.output
    assert output.name == "alpha_full" and dims(output)[2:] == ["frame_height", "frame_width"]
    sidecar = json.loads((out / "upsample.onnx.json").read_text())
    assert sidecar["profile"] == {"min": [128, 128], "opt": [128, 128], "max": [128, 128]}
    runners = _runners(out)
    model = GuidedUpsampler().eval()
    for frame in ((720, 1280), (201, 333)):
        inputs = _inputs((128, 128), frame)
        difference = np.abs(runners["onnx"](*(t.numpy() for t in inputs)) - _eager(model, inputs)).max()
        assert difference < 1e-4


def test_trt_profile_and_spec_of_the_frame() -> None:
    spec = upsample_spec(dynamic=False)
    profile = spec.profile((64, 64), (128, 128), (256, 256), (1, 1, 2))
    assert profile["frame"] == [[1, 32, 32, 3], [1, 720, 1280, 3], [2, 2160, 3840, 3]]
    assert profile["alpha"] == [[1, 1, 64, 64], [1, 1, 128, 128], [2, 1, 256, 256]]
    assert [(h, w) for h, w in FRAME_PROFILE_HW] == [(32, 32), (720, 1280), (2160, 3840)]
    alpha, image, frame = spec.dummy_inputs(96, 128, frame_hw=(201, 333))
    assert alpha.shape == (1, 1, 96, 128) and image.shape == (1, 3, 96, 128)
    assert frame.shape == (1, 201, 333, 3) and frame.dtype == torch.uint8
    assert spec.dynamic_axes() == {
        "frame": {1: "frame_height", 2: "frame_width"},
        "alpha_full": {2: "frame_height", 3: "frame_width"},
    }


# --- (d): AOTInductor --------------------------------------------------------------------------------------------


needs_compiler = needs_tool(aoti_compiler_missing())


@needs_compiler
@pytest.mark.slow
def test_pt2_upsampler_matches_eager_at_two_frame_sizes(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--formats pt2 --precision bf16`` writes ``upsample.fp32.pt2`` (fp32 whatever the precision).

    SPD's and SPGM's packages are stubbed here (tests/test_pt2.py compiles those): the one compile is the upsampler's.
    """
    import spgim.export.pt2 as pt2

    def stub(model: Any, spec: Any, example: Any, path: Path, **options: Any) -> dict[str, Any]:
        path.write_bytes(b"stub")
        return {}

    monkeypatch.setattr(pt2, "export_pt2", stub)
    folder = exported.parent
    request = ExportRequest(
        spd=folder / "spd.pt",
        spgm=folder / "spgm.pt",
        out=tmp_path / "pt2",
        formats=["pt2"],
        precisions=["bf16"],
        height=128,
        width=128,
        dynamic=True,
        min_size=(64, 64),
        max_size=(256, 256),
        frame_sizes=((32, 32), (360, 640), (1080, 1920)),
    )
    run_export(request)
    artifact = select_upsampler(load_artifacts(request.out), "pt2")
    assert artifact is not None and artifact.path.name == "upsample.fp32.pt2" and artifact.precision == "fp32"
    sizes = artifact.sidecar["package_sizes"]
    assert sizes["min_hw"] == [64, 64] and sizes["max_hw"] == [256, 256]
    assert sizes["frame_min_hw"] == [32, 32] and sizes["frame_max_hw"] == [1080, 1920]
    assert artifact.sidecar["io_dtype"] == "float32" and artifact.sidecar["frame_dtype"] == "uint8"
    from torch._inductor import aoti_load_package

    package = aoti_load_package(str(artifact.path))
    model = GuidedUpsampler().eval()
    for working, frame in CASES:
        inputs = _inputs(working, frame)
        with torch.inference_mode():
            out = package(*inputs)
        out = out[0] if isinstance(out, list | tuple) else out
        assert out.dtype == torch.float32 and out.shape == (1, 1, *frame)
        difference = float(np.abs(out.numpy() - _eager(model, inputs)).max())
        print(f"pt2 {frame[1]}x{frame[0]} from {working[1]}x{working[0]}: max |diff| {difference:.2e}")
        assert difference < 1e-4


# --- the engine step, with TensorRT stubbed (the real build needs a GPU: scripts/gpu_check.py) ------------------


def test_engine_step_builds_an_fp32_upsampler_with_the_frame_profile(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spgim.export.writers as writers

    built: dict[str, dict[str, Any]] = {}

    def build_engine(onnx_path: Path, engine_path: Path, **options: Any) -> dict[str, Any]:
        engine_path.write_bytes(b"not an engine")
        built[engine_path.name] = {"source": onnx_path.name, **options}
        return {"tensorrt_version": "stub"}

    monkeypatch.setattr(writers, "import_tensorrt", lambda: None)
    monkeypatch.setattr(writers, "find_plugin_library", lambda path: Path("libstub.so"))
    monkeypatch.setattr(writers, "build_engine", build_engine)
    folder = exported.parent
    request = ExportRequest(
        spd=folder / "spd.pt",
        spgm=folder / "spgm.pt",
        out=tmp_path / "engines",
        formats=["engine"],
        precisions=["fp16"],
        height=128,
        width=128,
        dynamic=True,
        min_size=(64, 64),
        max_size=(256, 256),
        batch=(1, 1, 2),
    )
    run_export(request)
    assert sorted(built) == ["spd.fp16.engine", "spgm.fp16.engine", "upsample.fp32.engine"]
    upsample = built["upsample.fp32.engine"]
    assert upsample["source"] == "upsample.onnx" and upsample["precision"] == "fp32"
    assert upsample["plugin_library"] is None
    assert upsample["profile"] == {
        "alpha": [[1, 1, 64, 64], [1, 1, 128, 128], [2, 1, 256, 256]],
        "image": [[1, 3, 64, 64], [1, 3, 128, 128], [2, 3, 256, 256]],
        "frame": [[1, 32, 32, 3], [1, 720, 1280, 3], [2, 2160, 3840, 3]],
    }
    artifacts = load_artifacts(request.out)
    engine = select_upsampler(artifacts, "engine")
    assert engine is not None and engine.sidecar["optimization_profile"] == upsample["profile"]
    # The fp16-only export still records the fp32 upsample graph the engine was built from.
    onnx_graph = select_upsampler(artifacts, "onnx")
    assert onnx_graph is not None and onnx_graph.path.name == "upsample.onnx"
