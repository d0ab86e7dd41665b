"""ONNX Runtime on a GPU: the CUDA or TensorRT execution provider, with I/O binding.

Frames stay on the device: the image is bound from a torch tensor's memory, SPD's outputs are
allocated by ONNX Runtime on the device and bound as SPGM's inputs, and the alpha is written into
a torch tensor. The same code runs with the CPU provider (``provider="cpu"``), which is how the
binding path is tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .artifacts import Artifact
from .protocol import SPD_OUTPUT_STRIDES, batch_slices, check_fixed_batch, check_state, fixed_batch, recurrent_state

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
BACKEND_NAMES = {"cpu": "onnxruntime", "cuda": "onnxruntime-cuda", "tensorrt": "onnxruntime-trt"}
# TensorRT execution provider engines and timing caches, in a folder next to the model.
TRT_CACHE = "ort-trt-cache"


def provider_list(provider: str, *, gpu: int, precision: str, cache_dir: Path) -> list[Any]:
    """ONNX Runtime's ``providers`` argument for ``provider`` (``cpu``, ``cuda`` or ``tensorrt``), with fallbacks."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": gpu})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    tensorrt = {
        "device_id": gpu,
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
    }
    return [("TensorrtExecutionProvider", tensorrt), cuda, "CPUExecutionProvider"]


class OnnxRuntimeGpuBackend:
    """The portable ONNX graphs on ONNX Runtime's CUDA or TensorRT provider, inputs and outputs on the device.

    Args:
        spd: SPD's ONNX artifact.
        spgm: SPGM's portable ONNX artifact of the same precision.
        provider: ``"cuda"``, ``"tensorrt"`` or ``"cpu"`` (the binding path without a GPU, for tests).
        gpu: CUDA device index.
    """

    def __init__(self, spd: Artifact, spgm: Artifact, *, provider: str = "cuda", gpu: int = 0) -> None:
        import onnxruntime as ort
        import torch

        self.torch = torch
        label = BACKEND_NAMES[provider]
        wanted = PROVIDERS[provider]
        available = list(ort.get_available_providers())
        on_gpu = provider != "cpu"
        if wanted not in available or (on_gpu and not torch.cuda.is_available()):
            listed = ", ".join(available)
            raise SpgimError(f"{label} needs onnxruntime-gpu and a CUDA GPU; available providers: {listed}")
        self.device = f"cuda:{gpu}" if on_gpu else "cpu"
        self.name = f"{label} ({spgm.format}, {spgm.precision})"
        self._bind_device = ("cuda", gpu) if on_gpu else ("cpu", 0)
        self.dtype = np.float16 if spgm.precision == "fp16" else np.float32
        self.torch_dtype = torch.float16 if spgm.precision == "fp16" else torch.float32
        cache = spgm.path.parent / TRT_CACHE
        if provider == "tensorrt":
            cache.mkdir(exist_ok=True)
        providers = provider_list(provider, gpu=gpu, precision=spgm.precision, cache_dir=cache)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.spd = ort.InferenceSession(str(spd.path), options, providers=providers)
            self.spgm = ort.InferenceSession(str(spgm.path), options, providers=providers)
        except Exception as error:  # ONNX Runtime raises its own types for corrupt graphs and missing libraries
            raise SpgimError(f"{label} cannot load {spd.path.name}/{spgm.path.name}: {str(error)[:200]}") from None
        started = self.spgm.get_providers()
        if started[0] != wanted:
            raise SpgimError(
                f"ONNX Runtime could not start {wanted} (it fell back to {started[0]}): check the CUDA, cuDNN and "
                "TensorRT libraries that onnxruntime-gpu needs"
            )
        self.features = [o.name for o in self.spd.get_outputs()]
        self.alpha_name = self.spgm.get_outputs()[0].name
        self.state_tensors = recurrent_state(spgm.sidecar)
        batches = [fixed_batch(s.get_inputs()[0].shape) for s in (self.spd, self.spgm)]
        self.fixed_batch = min((b for b in batches if b is not None), default=None)

    def infer_tensor(self, image: Any) -> Any:
        """Alpha ``(N, 1, H, W)`` float32 on ``device`` for an image ``(N, 3, H, W)`` in [0, 1] on ``device``."""
        torch = self.torch
        check_fixed_batch(len(image), self.fixed_batch, self.name)
        x = image.to(self.device, self.torch_dtype).contiguous()
        if self.device != "cpu":
            # ONNX Runtime runs on its own CUDA stream: torch's pending work on x must be done first.
            torch.cuda.current_stream(x.device).synchronize()
        parts = [self._pair(x[part]) for part in batch_slices(len(x), self.fixed_batch)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).float()

    def _pair(self, x: Any) -> Any:
        kind, index = self._bind_device
        spd = self.spd.io_binding()
        spd.bind_input("image", kind, index, self.dtype, tuple(x.shape), x.data_ptr())
        for name in self.features:
            spd.bind_output(name, kind, index)
        self.spd.run_with_iobinding(spd)
        spgm = self.spgm.io_binding()
        spgm.bind_input("image", kind, index, self.dtype, tuple(x.shape), x.data_ptr())
        for name, value in zip(self.features, spd.get_outputs(), strict=True):
            spgm.bind_ortvalue_input(name, value)
        alpha, _, _zeros = self._bind_spgm(spgm, x, ())
        if self.state_tensors and self.device != "cpu":
            self.torch.cuda.current_stream(x.device).synchronize()  # the zeros are torch's work
        self.spgm.run_with_iobinding(spgm)
        spgm.synchronize_outputs()
        return alpha

    def _bind_spgm(self, binding: Any, x: Any, state: Sequence[Any]) -> tuple[Any, tuple[Any, ...], tuple[Any, ...]]:
        """Bind SPGM's state inputs and its outputs for the image ``x``: the state (zeros where ``state`` is empty)
        as tensors like ``x``, the outputs to new ones. Returns ``(alpha, new_state, bound_state)``: the tensors
        the run writes, and the state it reads (to keep alive until it has run)."""
        torch = self.torch
        kind, index = self._bind_device
        batch, _, height, width = (int(side) for side in x.shape)
        check_state(self.state_tensors, state, x.shape, self.name)
        shapes = [t.shape(batch, height, width) for t in self.state_tensors]
        if state:
            bound = tuple(s.to(x.device, x.dtype).contiguous() for s in state)
        else:
            bound = tuple(torch.zeros(shape, dtype=x.dtype, device=x.device) for shape in shapes)
        for tensor, value in zip(self.state_tensors, bound, strict=True):
            binding.bind_input(tensor.name, kind, index, self.dtype, tuple(value.shape), value.data_ptr())
        alpha = torch.empty((batch, 1, height, width), dtype=x.dtype, device=x.device)
        binding.bind_output(self.alpha_name, kind, index, self.dtype, tuple(alpha.shape), alpha.data_ptr())
        new_state = tuple(torch.empty(shape, dtype=x.dtype, device=x.device) for shape in shapes)
        for tensor, value in zip(self.state_tensors, new_state, strict=True):
            binding.bind_output(tensor.output, kind, index, self.dtype, tuple(value.shape), value.data_ptr())
        return alpha, new_state, bound

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """SPD's outputs as tensors on ``device`` in the graph's dtype."""
        torch = self.torch
        x = image.to(self.device, self.torch_dtype).contiguous()
        if self.device != "cpu":
            torch.cuda.current_stream(x.device).synchronize()
        kind, index = self._bind_device
        binding = self.spd.io_binding()
        binding.bind_input("image", kind, index, self.dtype, tuple(x.shape), x.data_ptr())
        outputs = []
        for name, spec in zip(self.features, self.spd.get_outputs(), strict=True):
            shape = [x.shape[0], *spec.shape[1:2], *self._scaled(x, name)]
            tensor = torch.empty(shape, dtype=self.torch_dtype, device=x.device)
            binding.bind_output(name, kind, index, self.dtype, tuple(tensor.shape), tensor.data_ptr())
            outputs.append(tensor)
        self.spd.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return tuple(outputs)

    def _scaled(self, x: Any, name: str) -> tuple[int, int]:
        stride = SPD_OUTPUT_STRIDES[name]
        return int(x.shape[2]) // stride, int(x.shape[3]) // stride

    def run_spgm(self, image: Any, features: Sequence[Any], state: Sequence[Any] | None = None) -> Any:
        """Alpha float32 on ``device``; ``features`` are SPD's (or a float32 mask in place of its mask). With
        ``state``, ``(alpha, new_state)``, the state as tensors on ``device`` in the graph's dtype (see
        :meth:`~.protocol.Backend.run_spgm`)."""
        x = image.to(self.device, self.torch_dtype).contiguous()
        inputs = [f.to(self.device, self.torch_dtype).contiguous() for f in features]
        kind, index = self._bind_device
        binding = self.spgm.io_binding()
        alpha, new_state, _bound = self._bind_spgm(binding, x, tuple(state or ()))
        if self.device != "cpu":
            # ONNX Runtime runs on its own CUDA stream: torch's pending work (casts, zeros) must be done first.
            self.torch.cuda.current_stream(x.device).synchronize()
        for name, value in zip(("image", *self.features), (x, *inputs), strict=True):
            binding.bind_input(name, kind, index, self.dtype, tuple(value.shape), value.data_ptr())
        self.spgm.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return alpha.float() if state is None else (alpha.float(), new_state)

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 on the host for a host image (one upload, one download)."""
        tensor = self.torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return np.asarray(self.infer_tensor(tensor).cpu().numpy(), dtype=np.float32)
