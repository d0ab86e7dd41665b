"""spgim: train, export and deploy SPG-IM, a trimap-free matting model.

The stages live in subpackages: :mod:`spgim.train` (models, data, training, metrics),
:mod:`spgim.export` (TorchScript, ONNX, TensorRT), :mod:`spgim.runtime` (engines behind one
interface) and :mod:`spgim.streaming` (video matting). This module imports none of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spgim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
