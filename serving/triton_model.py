"""The Triton Python-backend model that serves an spgim export: copied as ``<repository>/spgim/1/model.py``.

Generic: everything it runs comes from the ``parameters`` of its ``config.pbtxt`` (written by
:func:`spgim.serving.repository.write_repository`): ``model_dir`` (absolute, or relative to the model's folder),
``backend``, ``precision``, ``upsampling``
and, when set, ``work_size`` and ``threads``. It opens one :class:`spgim.runtime.matting.Matter` per
instance, stateless (SPD on every frame, no smoothing, a recurrent SPGM's state from zeros at every request),
and answers each request on its own:
``frames`` uint8 ``(N, H, W, 3)`` RGB -> ``alpha`` float32 ``(N, H, W)``. Requests of different sizes
that the server batched together are matted one request at a time. A request Matter refuses (a size
outside the export's profile) gets an error response with Matter's one-line message after the frame size
(``frames 16x16: working size 32x32 is outside ...``); any other failure of one request is one line too,
and the model keeps serving. A wrong dtype, rank or channel count never reaches the model: the server
refuses it against ``config.pbtxt``.

The backend's stub runs this file in its own interpreter with ``PYTHONPATH`` set by
:class:`spgim.serving.server.TritonServer`; every ``PYTHONPATH`` entry is also taken as a site
directory so that its ``.pth`` files (an editable install of spgim) apply.

Tensors cross the stub through DLPack, never ``pb_utils.Tensor(name, ndarray)`` / ``Tensor.as_numpy()``: the
stub of nvidia-pytriton 0.7.0 reads numpy arrays with numpy 1's descriptor layout, and with numpy 2
(measured with 2.4.6) an output built from an ndarray arrives with 0 bytes and an input read with
``as_numpy()`` holds its first byte in every element. ``np.from_dlpack`` on the input and
``Tensor.from_dlpack`` of a torch view of the alpha carry the right bytes (torch's view: numpy's own
DLPack capsule makes the stub print ``PyCapsule_GetPointer called with incorrect name``).
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
    """Process the ``.pth`` files of every ``PYTHONPATH`` entry (``PYTHONPATH`` alone skips them)."""
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and os.path.isdir(entry):
            site.addsitedir(entry)


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The config's ``parameters`` as plain strings (empty values dropped)."""
    given = model_config.get("parameters", {})
    values = {key: str(value.get("string_value", "")) for key, value in given.items()}
    return {key: value for key, value in values.items() if value}


def _model_dir(parameters: dict[str, str], args: dict[str, str]) -> str:
    """The export folder the config names: absolute, or relative to this model's folder in the repository."""
    from spgim.errors import SpgimError

    if "model_dir" not in parameters:
        raise SpgimError("config.pbtxt has no model_dir parameter; write the repository with spgim serve or export")
    return os.path.join(args["model_repository"], parameters["model_dir"])


def _one_line(error: BaseException) -> str:
    """An error as one line: its message, or its type where it has none."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


class TritonPythonModel:
    """Alpha mattes of the frames of each request, from one Matter per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the export named by the config's parameters."""
        _add_site_directories()
        from spgim.errors import SpgimError
        from spgim.runtime.matting import Matter

        self.refused: type[Exception] = SpgimError
        parameters = _parameters(json.loads(args["model_config"]))
        work_size = parameters.get("work_size")
        self.matter = Matter(
            _model_dir(parameters, args),
            backend=parameters.get("backend", "auto"),
            precision=parameters.get("precision", "fp32"),
            work_size=int(work_size) if work_size else None,
            threads=int(parameters.get("threads", "0")),
            upsampling=parameters.get("upsampling", "auto"),
            keyframe_interval=0,
            smoothing=0.0,
        )

    def _alpha(self, request: Any) -> Any:
        """The response to one request: its alpha, or an error with one line saying why."""
        frames = pb_utils.get_input_tensor_by_name(request, "frames")
        if frames is None:
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError("no input named frames"))
        shape = "x".join(str(side) for side in frames.shape()[2:0:-1])
        try:
            # Requests are not a stream: a recurrent SPGM starts each from zeros (a no-op for a stateless one).
            self.matter.scheduler.reset()
            alpha = self.matter(np.from_dlpack(frames))
        except self.refused as error:
            message = f"frames {shape}: {_one_line(error)}"
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
        except Exception as error:  # one failing request must not stop the model serving the others
            message = f"matting failed: {type(error).__name__}: {_one_line(error)}"
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
        tensor = pb_utils.Tensor.from_dlpack("alpha", torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32)))
        return pb_utils.InferenceResponse(output_tensors=[tensor])

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order; each request is its own batch (sizes may differ)."""
        return [self._alpha(request) for request in requests]

    def finalize(self) -> None:
        """Release the engine."""
        self.matter = None
