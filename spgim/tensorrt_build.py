"""TensorRT engines from ONNX graphs: TensorRT 10/11 Python API, strongly typed networks.

Shared by ``spgim export`` and the bench's TensorRT ceiling (so neither stage imports the other).

The fp16 engine is built from the fp16 ONNX graph and the fp32 engine from the fp32 graph: in a
strongly typed network the graph's types are the engine's types (TensorRT 11 removed
``BuilderFlag.FP16`` and weak typing). TF32 is cleared for fp32 so it really computes in fp32.
The int8 engine is built from a QDQ graph the same way (explicit quantization: its Quantize/DequantizeLinear
nodes say where int8 runs and with which scales; TensorRT 10 deprecated the implicit, calibrator-driven
``BuilderFlag.INT8`` and TensorRT 11 removed it), so no calibration cache is involved.
The plugin library is loaded by path; a timing cache persists between builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import SpgimError
from .tst_plugin import NO_TENSORRT_EXIT, find_plugin_library, load_plugin_library

__all__ = ["NO_TENSORRT_EXIT", "build_engine", "find_plugin_library", "import_tensorrt", "load_plugin_library"]


def import_tensorrt() -> Any:
    """The ``tensorrt`` module on a machine with an NVIDIA GPU, or one clear error (exit code 2)."""
    try:
        import tensorrt
    except ImportError:
        raise SpgimError(
            "TensorRT is not installed, so no engine was built (the other formats were exported): on a machine "
            "with an NVIDIA GPU, pip install tensorrt --extra-index-url https://pypi.nvidia.com",
            exit_code=NO_TENSORRT_EXIT,
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise SpgimError(
            "no CUDA GPU is visible, so no TensorRT engine was built (the other formats were exported)",
            exit_code=NO_TENSORRT_EXIT,
        )
    return tensorrt


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    profile: dict[str, list[list[int]]],
    precision: str,
    workspace_gb: float,
    plugin_library: Path | None,
    timing_cache: Path,
) -> dict[str, Any]:
    """Build and serialise one engine; returns the facts its sidecar records.

    Args:
        onnx_path: the ONNX graph (fp16 graph for an fp16 engine).
        engine_path: where the serialised engine goes.
        profile: input name -> [min, opt, max] shapes (one optimisation profile).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"`` (the graph's types and Q/DQ nodes decide; fp32 also
            clears TF32).
        workspace_gb: workspace memory pool limit.
        plugin_library: the TST attention plugin, for graphs with ``TSTAttention`` nodes.
        timing_cache: read if present, written after the build.
    """
    trt = import_tensorrt()
    import torch

    if plugin_library is not None:
        load_plugin_library(plugin_library)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SpgimError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    optimization_profile = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in profile.items():
        optimization_profile.set_shape(name, smallest, optimal, largest)
    config.add_optimization_profile(optimization_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SpgimError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    return {
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "strongly_typed": True,
        "tf32": precision != "fp32",
        "workspace_gb": workspace_gb,
    }
