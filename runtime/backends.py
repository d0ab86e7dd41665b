"""ONNX Runtime (CPU) and TorchScript (CPU or CUDA) behind one protocol: ``infer(image) -> alpha``.

Float32 NCHW arrays in [0, 1] (:class:`spgim.runtime.protocol.Backend`). ONNX Runtime runs the
portable graphs, or the TensorRT-flavour graph through the CPU twin of the plugin; TorchScript runs
the traced modules in fp32, bf16 or fp16. SPD's outputs go straight to SPGM inside each backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .artifacts import Artifact
from .protocol import SPD_OUTPUTS, batch_slices, check_fixed_batch, fixed_batch, recurrent_state, state_or_zeros

SPGM_INPUTS = ("image", *SPD_OUTPUTS)


def session_options(*, threads: int = 0, spinning: bool = True) -> Any:
    """ONNX Runtime CPU session options: every graph optimisation, ``threads`` intra-op threads (0: one per core).

    Spinning idle threads win alone (paper config: 0.91x without) but steal the cores that decoding and
    encoding need in a video job; ``spgim matte`` turns it off.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU; fp16 graphs take and give float16 (GPU providers: :mod:`.onnxruntime_gpu`)."""

    device = "cpu"

    def __init__(self, spd: Artifact, spgm: Artifact, *, threads: int = 0, spinning: bool = True) -> None:
        import onnxruntime as ort

        from spgim.tst_twin import twin_session

        self.name = f"onnxruntime ({spgm.format}, {spgm.precision})"
        self.dtype = np.float16 if spgm.precision == "fp16" else np.float32
        self.state_tensors = recurrent_state(spgm.sidecar)
        options = session_options(threads=threads, spinning=spinning)
        try:
            self.spd = ort.InferenceSession(str(spd.path), options, providers=["CPUExecutionProvider"])
            self.spgm = twin_session(spgm.path, threads=threads, spinning=spinning)
        except Exception as error:  # ONNX Runtime raises its own types for corrupt graphs
            raise SpgimError(f"ONNX Runtime cannot load {spd.path.name}/{spgm.path.name}: {str(error)[:200]}") from None

    def infer(self, image: np.ndarray) -> np.ndarray:
        # Graphs exported without --dynamic have a fixed batch (1): larger batches run in slices.
        fixed = fixed_batch(self.spd.get_inputs()[0].shape)
        check_fixed_batch(len(image), fixed, self.name)
        parts = batch_slices(len(image), fixed)
        return np.concatenate([self.run_spgm(image[part], self.run_spd(image[part])) for part in parts])

    def run_spd(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """SPD's outputs, in the graph's dtype (float16 for fp16 graphs)."""
        return tuple(self.spd.run(None, {"image": image.astype(self.dtype, copy=False)}))

    def run_spgm(
        self, image: np.ndarray, features: Sequence[np.ndarray], state: Sequence[np.ndarray] | None = None
    ) -> Any:
        """Alpha float32; with ``state``, ``(alpha, new_state)`` (see :meth:`~.protocol.Backend.run_spgm`)."""
        zeros = partial(np.zeros, dtype=self.dtype)
        given = state_or_zeros(self.state_tensors, state, image.shape, self.name, zeros)
        inputs = [np.asarray(x, dtype=self.dtype) for x in (image, *features)]
        feed = dict(zip(SPGM_INPUTS, inputs, strict=True))
        feed.update((t.name, np.asarray(x, dtype=self.dtype)) for t, x in zip(self.state_tensors, given, strict=True))
        wanted = [self.spgm.get_outputs()[0].name, *(t.output for t in self.state_tensors)]
        alpha, *new_state = self.spgm.run(wanted, feed)
        alpha = np.asarray(alpha, dtype=np.float32)
        return alpha if state is None else (alpha, tuple(new_state))


class TorchScriptBackend:
    """The traced modules, cast to ``dtype`` (float32, bfloat16 or float16), on ``device`` ("cpu" or "cuda:N").

    Weights and input are channels-last: oneDNN's convolutions then skip their layout reorders
    (paper config, 512x512, this CPU: 8.15 -> 3.53 s/frame; ``scripts/cpu_tuning.py``). Freezing
    with ``optimize_for_inference`` gave nothing on top (1.01x alone, slower with channels-last).
    """

    def __init__(
        self, spd: Artifact, spgm: Artifact, *, dtype: str = "fp32", device: str = "cpu", channels_last: bool = True
    ) -> None:
        import torch

        self.torch = torch
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        self.device = device
        self.name = f"torchscript ({dtype})" if device == "cpu" else f"torchscript-cuda ({dtype})"
        self.state_tensors = recurrent_state(spgm.sidecar)
        if device != "cpu" and not torch.cuda.is_available():
            raise SpgimError("torchscript-cuda needs a CUDA GPU visible to torch (torch.cuda.is_available() is False)")
        try:
            with warnings.catch_warnings():
                # torch 2.14 marks TorchScript deprecated on every load; the format is still supported.
                warnings.simplefilter("ignore", FutureWarning)
                self.spd = torch.jit.load(str(spd.path), map_location=device).eval().to(self.dtype)
                self.spgm = torch.jit.load(str(spgm.path), map_location=device).eval().to(self.dtype)
            self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
            self.spd.to(memory_format=self.memory_format)
            self.spgm.to(memory_format=self.memory_format)
        except RuntimeError as error:
            raise SpgimError(f"cannot load TorchScript {spd.path.name}/{spgm.path.name}: {str(error)[:160]}") from None

    def _tensor(self, value: Any) -> Any:
        x = self.torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        x = x.to(self.device, self.dtype)
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def infer(self, image: np.ndarray) -> np.ndarray:
        x = self._tensor(image)
        with self.torch.inference_mode():
            alpha, _ = self._spgm(x, self.spd(x), ())
        return alpha.float().cpu().contiguous().numpy()

    def infer_tensor(self, image: Any) -> Any:
        """Alpha ``(N, 1, H, W)`` float32 on ``device`` for an image tensor ``(N, 3, H, W)`` in [0, 1] there."""
        x = self._tensor(image)
        with self.torch.no_grad():
            alpha, _ = self._spgm(x, self.spd(x), ())
        return alpha.float()

    def _spgm(self, x: Any, features: Sequence[Any], state: Sequence[Any]) -> tuple[Any, tuple[Any, ...]]:
        """The traced SPGM on tensors in the run's dtype: ``(alpha, new_state)``; an empty state means zeros."""
        zeros = partial(self.torch.zeros, dtype=self.dtype, device=x.device)
        state = state_or_zeros(self.state_tensors, state, x.shape, self.name, zeros)
        outputs: Any = self.spgm(x, *features, *(self._tensor(s) for s in state))
        if not self.state_tensors:
            return outputs, ()
        alpha, *new_state = outputs
        return alpha, tuple(new_state)

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """SPD's outputs as tensors in the run's dtype, on :attr:`device` (numpy or tensor in)."""
        with self.torch.no_grad():
            return tuple(self.spd(self._tensor(image)))

    def run_spgm(self, image: Any, features: Sequence[Any], state: Sequence[Any] | None = None) -> Any:
        """Alpha float32: a numpy array on the CPU, a tensor on a GPU; with ``state``, ``(alpha, new_state)``, the
        state as tensors in the run's dtype (see :meth:`~.protocol.Backend.run_spgm`)."""
        with self.torch.no_grad():
            alpha, new_state = self._spgm(self._tensor(image), [self._tensor(f) for f in features], tuple(state or ()))
        alpha = alpha.float()
        alpha = alpha.contiguous().numpy() if self.device == "cpu" else alpha
        return alpha if state is None else (alpha, new_state)
