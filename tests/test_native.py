"""Native code of the TST attention op: the C++ reference, the CUDA kernels and the TensorRT plugin.

Everywhere: the CMake project builds (C++ reference, its ctest, and the CUDA kernels where nvcc is found), and
the Python binding of the C++ reference equals a float64 numpy reference and the PyTorch model's attention.
On GPU machines only: the CUDA kernels (through the ``tst_attention_cuda_check`` C library) and a one-node
TensorRT network with the plugin, each against the C++ reference.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from requirements import not_this_machine, unavailable

from spgim import tst_op, tst_reference
from spgim.train.models.attention import attention_matmul

pytestmark = pytest.mark.slow  # compiles the C++ reference, the kernels and the plugin

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "native"
CUDA_CHECK_LIB = BUILD / "libtst_attention_cuda_check.so"
PLUGIN_LIB_NAME = "libspgim_tst_plugin.so"  # CMake target spgim_tst_plugin
PLUGIN_LIB = Path(os.environ.get("SPGIM_TST_PLUGIN", BUILD / PLUGIN_LIB_NAME))

# (B, N, M, d, dv): block-size multiples and not, one key, the widest head dims the plugin takes.
SHAPES = [(1, 1, 1, 1, 1), (2, 37, 53, 8, 5), (1, 100, 130, 64, 64), (3, 65, 200, 17, 33), (2, 31, 129, 256, 256)]
TOLERANCE: dict[type, float] = {np.float32: 1e-5, np.float16: 2e-3}


def _run(command: list[str]) -> str:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def native_build() -> Path:
    """The CMake project configured and built in build/native (incremental after the first run)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake not found: install CMake >= 3.18 (apt-get install cmake, or pip install cmake)")
    _run(
        [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(BUILD),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DSPGIM_BUILD_TESTS=ON",
            "-DSPGIM_BUILD_CUDA=ON",
            "-DSPGIM_PLUGIN_OBJECTS_ONLY=OFF",
            "-DSPGIM_WARNINGS_AS_ERRORS=ON",
        ]
    )
    _run([cmake, "--build", str(BUILD), "--parallel", str(os.cpu_count() or 2)])
    return BUILD


def _cmake_cache(build: Path, key: str) -> str:
    match = re.search(rf"^{key}:\w+=(.*)$", (build / "CMakeCache.txt").read_text(), flags=re.MULTILINE)
    return match.group(1) if match else ""


def _inputs(
    shape: tuple[int, int, int, int, int], dtype: type, *, std: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch, queries, keys, head_dim, value_dim = shape
    rng = np.random.default_rng(seed)
    q: np.ndarray = (std * rng.standard_normal((batch, queries, head_dim))).astype(dtype)
    k: np.ndarray = (std * rng.standard_normal((batch, keys, head_dim))).astype(dtype)
    v: np.ndarray = rng.standard_normal((batch, keys, value_dim)).astype(dtype)
    return q, k, v


def _numpy_float64(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    logits = np.einsum("bnd,bmd->bnm", q64, k64) * scale
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v64


# ---- CMake: reference + ctest everywhere, CUDA where nvcc is -------------------------------------------------


def test_ctest_passes(native_build: Path) -> None:
    output = _run(["ctest", "--test-dir", str(native_build), "--output-on-failure"])
    assert "100% tests passed" in output, output


def test_the_cuda_kernel_runs_emulated_on_cpu_threads(native_build: Path) -> None:
    listed = _run(["ctest", "--test-dir", str(native_build), "-N"])
    if "tst_attention_kernel_emulated" not in listed:
        unavailable("the C++ compiler has no C++20 <barrier>: the CUDA kernel's CPU emulation test was not built")
    output = _run(["ctest", "--test-dir", str(native_build), "-R", "tst_attention_kernel_emulated"])
    assert "100% tests passed" in output, output


def test_cuda_kernels_compile_with_nvcc(native_build: Path) -> None:
    nvcc = _cmake_cache(native_build, "CMAKE_CUDA_COMPILER")
    if not nvcc or nvcc.endswith("NOTFOUND"):
        unavailable("nvcc not found by CMake: the CUDA kernels were not compiled")
    assert CUDA_CHECK_LIB.is_file(), f"nvcc ({nvcc}) was found but {CUDA_CHECK_LIB.name} was not built"


@pytest.fixture(scope="module")
def cuda_check(native_build: Path) -> ctypes.CDLL:
    if not CUDA_CHECK_LIB.is_file():
        unavailable("tst_attention_cuda_check was not built (no nvcc)")
    lib = ctypes.CDLL(str(CUDA_CHECK_LIB))
    lib.tst_attention_forward.restype = ctypes.c_int
    lib.tst_attention_forward.argtypes = (
        [ctypes.c_void_p] * 4
        + [ctypes.c_int] * 5
        + [
            ctypes.c_float,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
    )
    lib.tst_attention_status_string.restype = ctypes.c_char_p
    lib.tst_attention_status_string.argtypes = [ctypes.c_int]
    return lib


def test_cuda_launcher_rejects_bad_arguments_before_touching_the_gpu(cuda_check: ctypes.CDLL) -> None:
    forward = cuda_check.tst_attention_forward
    # (q, k, v, out, B, N, M, d, dv, scale, dtype, stream)
    assert forward(None, None, None, None, 1, 4, 4, 257, 8, 1.0, 0, None) == 2  # head dim > 256
    assert forward(None, None, None, None, 1, 4, 4, 8, 0, 1.0, 0, None) == 2  # dv < 1
    assert forward(None, None, None, None, 1, 4, 4, 8, 8, 1.0, 2, None) == 3  # dtype
    assert forward(None, None, None, None, 1, 4, 0, 8, 8, 1.0, 0, None) == 1  # no keys
    assert forward(None, None, None, None, 1, 4, 4, 8, 8, 1.0, 0, None) == 1  # null pointers
    assert forward(None, None, None, None, 0, 4, 4, 8, 8, 1.0, 0, None) == 0  # empty batch: nothing to do
    assert b"head dim" in cuda_check.tst_attention_status_string(2)
    if not torch.cuda.is_available():
        # No GPU: the launch itself must fail cleanly, not crash.
        assert forward(8, 8, 8, 8, 1, 4, 4, 8, 8, 1.0, 0, None) == 4


# ---- Python binding of the C++ reference --------------------------------------------------------------------


def test_op_names_come_from_the_plugin_header() -> None:
    assert tst_reference.OP_TYPE == "TSTAttention"
    assert tst_reference.PLUGIN_VERSION == "1"
    assert tst_reference.PLUGIN_NAMESPACE == ""
    assert tst_reference.SCALE_ATTRIBUTE == "scale"
    assert tst_reference.MAX_HEAD_DIM == 256


def test_python_op_contract_matches_the_plugin_header() -> None:
    """spgim.tst_op (what the exporter writes into the ONNX node) against the C++ header's constants."""
    assert tst_op.PLUGIN_NAME == tst_reference.OP_TYPE
    assert tst_op.PLUGIN_VERSION == tst_reference.PLUGIN_VERSION
    assert tst_op.PLUGIN_NAMESPACE == tst_reference.PLUGIN_NAMESPACE
    assert tst_op.SCALE_FIELD == tst_reference.SCALE_ATTRIBUTE
    assert tst_op.PLUGIN_LIBRARY == PLUGIN_LIB_NAME


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_binding_equals_numpy_float64(shape: tuple[int, int, int, int, int], dtype: type) -> None:
    q, k, v = _inputs(shape, dtype)
    scale = 1.0 / np.sqrt(shape[3])
    out = tst_reference.attention(q, k, v, scale)
    assert out.dtype == dtype and out.shape == (shape[0], shape[1], shape[4])
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(out, _numpy_float64(q, k, v, scale), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_binding_equals_the_model_attention(shape: tuple[int, int, int, int, int], dtype: type) -> None:
    q, k, v = _inputs(shape, dtype, seed=1)
    scale = 1.0 / np.sqrt(shape[3])
    expected = attention_matmul(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), scale).numpy()
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(tst_reference.attention(q, k, v, scale), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("std", [4.0, 30.0, 100.0])
def test_reference_binding_is_stable_for_large_logits(std: float) -> None:
    q, k, v = _inputs((2, 45, 150, 64, 40), np.float32, std=std)
    out = tst_reference.attention(q, k, v, 0.125)
    assert np.isfinite(out).all()
    # fp32 logits of magnitude L carry absolute errors of ~1e-7 L, which the softmax passes on.
    np.testing.assert_allclose(out, _numpy_float64(q, k, v, 0.125), rtol=1e-5, atol=1e-6 * std * std)


def test_reference_binding_accepts_non_contiguous_views() -> None:
    q, k, v = _inputs((2, 20, 30, 16, 8), np.float32)
    q_view = np.ascontiguousarray(q.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not q_view.flags.c_contiguous
    np.testing.assert_array_equal(tst_reference.attention(q_view, k, v, 0.25), tst_reference.attention(q, k, v, 0.25))


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape", "dtypes", "message"),
    [
        ((1, 4, 8), (1, 5, 8), (1, 5, 3), (np.float64,) * 3, "float32 or float16"),
        ((1, 4, 8), (1, 5, 8), (1, 5, 3), (np.float32, np.float16, np.float32), "one dtype"),
        ((4, 8), (1, 5, 8), (1, 5, 3), (np.float32,) * 3, "3-D"),
        ((2, 4, 8), (1, 5, 8), (1, 5, 3), (np.float32,) * 3, "batch size"),
        ((1, 4, 8), (1, 5, 7), (1, 5, 3), (np.float32,) * 3, "head dim"),
        ((1, 4, 8), (1, 5, 8), (1, 6, 3), (np.float32,) * 3, "number of keys"),
        ((1, 4, 8), (1, 0, 8), (1, 0, 3), (np.float32,) * 3, ">= 1"),
    ],
)
def test_reference_binding_rejects_bad_inputs(
    q_shape: tuple[int, ...], k_shape: tuple[int, ...], v_shape: tuple[int, ...], dtypes: tuple[type, ...], message: str
) -> None:
    q, k, v = (np.zeros(s, dtype=np.dtype(t)) for s, t in zip((q_shape, k_shape, v_shape), dtypes, strict=True))
    with pytest.raises(ValueError, match=message):
        tst_reference.attention(q, k, v, 1.0)


def test_reference_binding_rejects_non_arrays_and_bad_scale() -> None:
    q, k, v = _inputs((1, 4, 5, 8, 3), np.float32)
    with pytest.raises(ValueError, match="numpy array"):
        tst_reference.attention(torch.from_numpy(q), k, v, 1.0)
    with pytest.raises(ValueError, match="finite"):
        tst_reference.attention(q, k, v, float("nan"))


# ---- GPU only: CUDA kernels and the TensorRT plugin against the C++ reference ----------------------------------

GPU_SHAPES = [
    (1, 1, 1, 64, 64),
    (2, 100, 130, 64, 64),
    (1, 257, 1000, 128, 32),
    (3, 65, 200, 17, 200),
    (2, 40, 33, 256, 256),
]


@pytest.fixture
def gpu() -> Iterator[None]:
    if not torch.cuda.is_available():
        not_this_machine("no CUDA GPU: the kernels compile here but only run on a GPU machine")
    yield
    torch.cuda.synchronize()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_cuda_kernel_equals_reference(
    gpu: None, cuda_check: ctypes.CDLL, shape: tuple[int, int, int, int, int], dtype: type
) -> None:
    batch, queries, keys, head_dim, value_dim = shape
    q, k, v = _inputs(shape, dtype, seed=2)
    scale = 1.0 / np.sqrt(head_dim)
    q_d, k_d, v_d = (torch.from_numpy(x).cuda() for x in (q, k, v))
    out_d = torch.full((batch, queries, value_dim), float("nan"), dtype=q_d.dtype, device="cuda")
    stream = torch.cuda.current_stream()
    status = cuda_check.tst_attention_forward(
        q_d.data_ptr(),
        k_d.data_ptr(),
        v_d.data_ptr(),
        out_d.data_ptr(),
        batch,
        queries,
        keys,
        head_dim,
        value_dim,
        scale,
        0 if dtype == np.float32 else 1,
        stream.cuda_stream,
    )
    assert status == 0, cuda_check.tst_attention_status_string(status)
    stream.synchronize()
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(out_d.cpu().numpy(), tst_reference.attention(q, k, v, scale), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_tensorrt_one_node_network_equals_reference(gpu: None, dtype: type) -> None:
    try:
        import tensorrt as trt
    except ImportError:
        not_this_machine("TensorRT's Python package is not installed (it needs an NVIDIA GPU machine)")
    if not PLUGIN_LIB.is_file():
        not_this_machine(f"{PLUGIN_LIB.name} not built: configure CMake with -DTensorRT_ROOT=/path/to/TensorRT")
    ctypes.CDLL(str(PLUGIN_LIB))  # REGISTER_TENSORRT_PLUGIN registers the creator on load.
    batch, queries, keys, head_dim, value_dim = 2, 300, 500, 64, 48
    scale = 0.125
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: the plugin's I/O types follow the inputs. TensorRT 11 always is, and keeps the flag as a no-op.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    trt_dtype = trt.float32 if dtype == np.float32 else trt.float16
    dims = {"q": head_dim, "k": head_dim, "v": value_dim}
    inputs = [network.add_input(name, trt_dtype, (-1, -1, dim)) for name, dim in dims.items()]
    creator = trt.get_plugin_registry().get_creator(
        tst_reference.OP_TYPE, tst_reference.PLUGIN_VERSION, tst_reference.PLUGIN_NAMESPACE
    )
    assert creator is not None, "the plugin library loaded but registered no TSTAttention creator"
    fields = trt.PluginFieldCollection(
        [trt.PluginField(tst_reference.SCALE_ATTRIBUTE, np.array([scale], np.float32), trt.PluginFieldType.FLOAT32)]
    )
    plugin = creator.create_plugin("tst_attention", fields, trt.TensorRTPhase.BUILD)
    layer = network.add_plugin_v3(inputs, [], plugin)
    layer.get_output(0).name = "out"
    network.mark_output(layer.get_output(0))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    lengths = {"q": queries, "k": keys, "v": keys}
    for name, dim in dims.items():
        profile.set_shape(name, (1, 1, dim), (batch, lengths[name], dim), (4, 2 * lengths[name], dim))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "engine build failed"
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()

    q, k, v = _inputs((batch, queries, keys, head_dim, value_dim), dtype, seed=3)
    tensors = {name: torch.from_numpy(x).cuda() for name, x in zip("qkv", (q, k, v), strict=True)}
    out = torch.empty((batch, queries, value_dim), dtype=tensors["q"].dtype, device="cuda")
    for name, tensor in tensors.items():
        context.set_input_shape(name, tuple(tensor.shape))
        context.set_tensor_address(name, tensor.data_ptr())
    context.set_tensor_address("out", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(out.cpu().numpy(), tst_reference.attention(q, k, v, scale), rtol=tol, atol=tol)
