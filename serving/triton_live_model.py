"""The stateful Triton Python-backend model of live streams: copied as ``<repository>/spgim_live/1/model.py``.

Each stream is a Triton sequence: one frame per request, uint8 ``frames`` ``(1, H, W, 3)`` RGB in, float32
``alpha`` ``(1, H, W)`` out (and int32 ``keyframe`` ``(1, 1)``: 1 where SPD ran on this frame). The server's
sequence batcher fills the control inputs ``START``, ``END`` (int32 0/1) and ``CORRID`` (uint64) of each request.
Per correlation id the model keeps a keyframe scheduler (:meth:`spgim.runtime.matting.Matter.new_stream`:
SPD's cached features, the previous alpha, the frame count) over one engine shared by every sequence of the
instance; SPD runs on keyframes only, every ``keyframe_interval`` frames as the export's stream defaults or the
config's parameters say. The state is made on START (afresh when a correlation id is reused), dropped on END,
and dropped when the sequence had no frame for ``max_sequence_idle_microseconds`` (the server forgets an idle
sequence without telling the model, so :class:`spgim.serving.sequences.StreamTable` keeps its own clock).

An execute may hold requests of several sequences (the oldest strategy batches at most one request of each);
each is matted with its own sequence's scheduler, in the order given. A frame of a sequence with no state
(never started, ended, or idle past the timeout) gets an error response with one line, as does a size outside
the export's profile (``frames 16x16: ...``); the model keeps serving. A wrong dtype, rank or batch size is
refused by the server against ``config.pbtxt``, and so is a first frame without START.

Like :mod:`spgim.serving.triton_model` (whose helpers it imports once spgim is importable), it reads and
writes every tensor through DLPack: the stub of nvidia-pytriton 0.7.0 garbles numpy-2 arrays otherwise.
"""

from __future__ import annotations

import json
import os
import site
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


def _add_site_directories() -> None:
    """Process the ``.pth`` files of every ``PYTHONPATH`` entry (an editable spgim), before importing spgim."""
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and os.path.isdir(entry):
            site.addsitedir(entry)


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def _scalar(request: Any, name: str) -> int | None:
    """The value of a control input (one per request), or None when the request has none."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return int(np.from_dlpack(tensor).reshape(-1)[0])


class TritonPythonModel:
    """Keyframed alpha mattes of the frames of many sequences, one scheduler per sequence."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the export named by the config's parameters; the idle timeout comes from its sequence batcher."""
        _add_site_directories()
        from spgim.errors import SpgimError
        from spgim.runtime.matting import Matter
        from spgim.serving.sequences import StreamTable
        from spgim.serving.triton_model import _model_dir, _one_line, _parameters

        self.refused: type[Exception] = SpgimError
        self.one_line = _one_line
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        model_dir = _model_dir(parameters, args)
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 0) or 0)
        if idle_us <= 0:
            raise SpgimError(
                "config.pbtxt has no sequence_batching idle timeout; write the repository with spgim serve or export"
            )

        def number(key: str) -> int | None:
            return int(parameters[key]) if key in parameters else None

        self.matter = Matter(
            model_dir,
            backend=parameters.get("backend", "auto"),
            precision=parameters.get("precision", "fp32"),
            work_size=number("work_size"),
            keyframe_interval=number("keyframe_interval"),
            keyframe_ramp=number("keyframe_ramp"),
            threads=int(parameters.get("threads", "0")),
            upsampling=parameters.get("upsampling", "auto"),
            smoothing=float(parameters["smoothing"]) if "smoothing" in parameters else None,
        )
        self.streams: Any = StreamTable(self.matter.new_stream, idle_us / 1e6)

    def _frame(self, request: Any) -> Any:
        """The response to one request of a sequence: its alpha and keyframe flag, or one line saying why not."""
        corrid = _scalar(request, "CORRID")
        if corrid is None:
            corrid = int(request.correlation_id())
        start, end = bool(_scalar(request, "START")), bool(_scalar(request, "END"))
        try:
            scheduler = self.streams.start(corrid) if start else self.streams.get(corrid)
        except self.refused as error:
            return _error(self.one_line(error))
        try:
            frames = pb_utils.get_input_tensor_by_name(request, "frames")
            if frames is None:
                return _error("no input named frames")
            shape = "x".join(str(side) for side in frames.shape()[2:0:-1])
            seen = len(scheduler.stats.keyframes)
            try:
                alpha = self.matter(np.from_dlpack(frames), scheduler)
            except self.refused as error:
                return _error(f"frames {shape}: {self.one_line(error)}")
            except Exception as error:  # one failing request must not stop the model serving the others
                return _error(f"matting failed: {type(error).__name__}: {self.one_line(error)}")
            keyframe = np.array([[int(len(scheduler.stats.keyframes) > seen)]], dtype=np.int32)
            outputs = [
                pb_utils.Tensor.from_dlpack("alpha", torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))),
                pb_utils.Tensor.from_dlpack("keyframe", torch.from_numpy(keyframe)),
            ]
            return pb_utils.InferenceResponse(output_tensors=outputs)
        finally:
            if end:
                self.streams.end(corrid)

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order; idle sequences are dropped first."""
        self.streams.expire()
        return [self._frame(request) for request in requests]

    def finalize(self) -> None:
        """Drop every sequence and release the engine."""
        self.streams = None
        self.matter = None
