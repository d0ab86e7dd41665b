"""TensorRT engines on a CUDA GPU, driven the TensorRT 10/11 way.

Name-based I/O (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_dtype``),
torch CUDA tensors as buffers, ``set_input_shape`` + ``set_tensor_address`` and ``execute_async_v3`` on
a torch CUDA stream. SPD's outputs stay on the device and are bound straight as SPGM's inputs.
Before anything is deserialised the sidecars are checked against this machine (TensorRT version,
GPU) and the plugin library is found and loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.tst_plugin import find_plugin_library, load_plugin_library

from .artifacts import Artifact, check_engine_gpu, check_engine_tensorrt
from .devices import gpu_facts, import_tensorrt
from .protocol import SPD_OUTPUTS, batch_slices, check_state, recurrent_state


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise SpgimError(f"engine tensors of type {dtype} are not supported by the spgim runtime")
    return table[dtype]


class EngineRunner:
    """One deserialised engine and its execution context.

    Args:
        path: the serialised engine.
        runtime: the ``tensorrt.Runtime`` that deserialises it (the caller keeps it alive with the engine).
        device: the torch CUDA device its buffers are allocated on.
    """

    def __init__(self, path: Path, runtime: Any, device: Any) -> None:
        import tensorrt as trt

        self.path = path
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SpgimError(
                f"TensorRT could not deserialise {path.name}: built by another TensorRT or for another GPU, or "
                "its plugin is not loaded (see TensorRT's log above)"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise SpgimError(f"TensorRT could not create an execution context for {path.name} (GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        smallest, _, largest = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.batch_range = (int(smallest[0]), int(largest[0]))

    def __call__(self, inputs: dict[str, Any], stream: Any) -> dict[str, Any]:
        """Enqueue one run on ``stream`` (a ``torch.cuda.Stream``); returns the output tensors.

        Call it inside ``torch.cuda.stream(stream)``: buffers allocated here then belong to that
        stream, so the caching allocator reuses them only after the engine has read or written them.
        """
        import torch

        # Converted inputs must outlive the enqueue, or the allocator could hand their memory to an output.
        held = []
        for name in self.inputs:
            tensor = inputs[name].to(self.dtypes[name]).contiguous()
            held.append(tensor)
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise SpgimError(
                    f"{self.path.name}: input {name} {tuple(tensor.shape)} is outside the engine's optimisation profile"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise SpgimError(f"TensorRT failed to run {self.path.name} (see TensorRT's log above)")
        return outputs


class TensorRTBackend:
    """The SPD and SPGM engines of one precision on one CUDA GPU.

    Args:
        spd: SPD's engine artifact (``spd.fp32.engine`` or ``spd.fp16.engine``).
        spgm: SPGM's engine artifact, built with the TST attention plugin.
        gpu: CUDA device index.
        plugin: the plugin library; by default ``$SPGIM_TST_PLUGIN``, then spgim's own ``build/native``
            (never the model folder: :func:`spgim.tst_plugin.find_plugin_library`).
    """

    def __init__(self, spd: Artifact, spgm: Artifact, *, gpu: int = 0, plugin: str | Path | None = None) -> None:
        trt = import_tensorrt()
        for artifact in (spd, spgm):
            check_engine_tensorrt(artifact, None if trt is None else str(trt.__version__))
        assert trt is not None  # check_engine_tensorrt refused a machine without it
        facts = gpu_facts(gpu)
        for artifact in (spd, spgm):
            warning = check_engine_gpu(artifact, facts)
            if warning:
                warnings.warn(warning, RuntimeWarning, stacklevel=2)
        if any("plugin" in artifact.sidecar for artifact in (spd, spgm)):
            # The sidecar's library is a file name for the record; the library itself never comes from the export.
            load_plugin_library(find_plugin_library(plugin))
        import torch

        self.torch = torch
        self.device = f"cuda:{gpu}"
        self.name = f"tensorrt ({spgm.precision})"
        self._device = torch.device(self.device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self._device):
            self.runtime = trt.Runtime(self.logger)
            self.spd = EngineRunner(spd.path, self.runtime, self._device)
            self.spgm = EngineRunner(spgm.path, self.runtime, self._device)
            self.stream = torch.cuda.Stream(self._device)
        self.state_tensors = recurrent_state(spgm.sidecar)
        states = [t.name for t in self.state_tensors]
        # TensorRT may drop inputs a graph declares but never reads (r2/r3 of a SPGM attending only at res4).
        taken = {"image", *self.spd.outputs, *states}
        if not set(self.spgm.inputs) <= taken or set(self.spd.outputs) != set(SPD_OUTPUTS):
            raise SpgimError(
                f"{spgm.path.name}'s inputs {self.spgm.inputs} are not image + {spd.path.name}'s outputs"
                + (f" + {', '.join(states)}" if states else "")
            )
        missing = [t.output for t in self.state_tensors if t.output not in self.spgm.outputs]
        if missing or not set(states) <= set(self.spgm.inputs):
            raise SpgimError(f"{spgm.path.name} does not take and give the state its sidecar records: export again")
        self.alpha_name = next(name for name in self.spgm.outputs if name not in {t.output for t in self.state_tensors})
        # The exporter's profiles default to batch 1..1: larger batches are run in slices.
        self.largest_batch = min(self.spd.batch_range[1], self.spgm.batch_range[1])

    def infer_tensor(self, image: Any) -> Any:
        """Alpha ``(N, 1, H, W)`` float32 on the GPU for an image ``(N, 3, H, W)`` in [0, 1] on the GPU.

        Runs on the backend's own stream, ordered after the caller's stream and before its next work.
        """
        torch = self.torch
        with torch.cuda.device(self._device):
            caller = torch.cuda.current_stream(self._device)
            self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                x = image.to(self._device, self.spd.dtypes["image"]).contiguous()
                parts = [self._pair(x[part]) for part in batch_slices(len(x), self.largest_batch)]
                alpha = (parts[0] if len(parts) == 1 else torch.cat(parts)).float()
            caller.wait_stream(self.stream)
            alpha.record_stream(caller)
        return alpha

    def _pair(self, image: Any) -> Any:
        features = self.spd({"image": image}, self.stream)
        return self.spgm({"image": image, **features, **self._state(image, ())}, self.stream)[self.alpha_name]

    def _state(self, image: Any, state: Any) -> dict[str, Any]:
        """The SPGM engine's state inputs for ``image``: ``state`` on the device, or zeros where it is empty."""
        check_state(self.state_tensors, state, image.shape, self.name)
        if state:
            return {t.name: value.to(self._device) for t, value in zip(self.state_tensors, state, strict=True)}
        batch, _, height, width = image.shape
        dtypes = self.spgm.dtypes
        return {
            t.name: self.torch.zeros(t.shape(batch, height, width), dtype=dtypes[t.name], device=self._device)
            for t in self.state_tensors
        }

    def _on_stream(self, run: Any) -> Any:
        """``run()`` on the backend's stream, ordered after the caller's stream and before its next work."""
        torch = self.torch
        with torch.cuda.device(self._device):
            caller = torch.cuda.current_stream(self._device)
            self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                result = run()
            caller.wait_stream(self.stream)
            for tensor in result if isinstance(result, tuple) else (result,):
                tensor.record_stream(caller)
        return result

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """SPD's outputs as GPU tensors in the engine's dtypes, in the order SPGM takes them."""

        def run() -> tuple[Any, ...]:
            x = image.to(self._device, self.spd.dtypes["image"]).contiguous()
            features = self.spd({"image": x}, self.stream)
            return tuple(features[name] for name in SPD_OUTPUTS)

        result: tuple[Any, ...] = self._on_stream(run)
        return result

    def run_spgm(self, image: Any, features: Sequence[Any], state: Sequence[Any] | None = None) -> Any:
        """Alpha float32 on the GPU; ``features`` are SPD's (or a float32 mask in place of its mask). With ``state``,
        ``(alpha, new_state)``, the state as GPU tensors in the engine's dtypes (see ``Backend.run_spgm``)."""
        given = tuple(state or ())

        def run() -> tuple[Any, ...]:
            x = image.to(self._device, self.spd.dtypes["image"]).contiguous()
            feed = {name: value.to(self._device) for name, value in zip(SPD_OUTPUTS, features, strict=True)}
            feed["image"] = x
            feed.update(self._state(x, given))
            outputs = self.spgm(feed, self.stream)
            return (outputs[self.alpha_name].float(), *(outputs[t.output] for t in self.state_tensors))

        alpha, *new_state = self._on_stream(run)
        return alpha if state is None else (alpha, tuple(new_state))

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 on the host for a host image (one upload, one download)."""
        tensor = self.torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self._device)
        return np.asarray(self.infer_tensor(tensor).cpu().numpy(), dtype=np.float32)
