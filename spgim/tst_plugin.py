"""Finding and loading the TST attention plugin library, for the engine builder and the TensorRT runtime.

Dependency-free (ctypes and pathlib), so :mod:`spgim.export` and :mod:`spgim.runtime` share it
without one importing the other.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from .errors import SpgimError
from .tst_op import PLUGIN_LIBRARY

# Exit code for "this machine cannot build or run engines" (no TensorRT, no GPU, no plugin library).
NO_TENSORRT_EXIT = 2

BUILD_HINT = (
    "build it with: cmake -S . -B build/native -DTensorRT_ROOT=/path/to/TensorRT "
    "&& cmake --build build/native --target spgim_tst_plugin"
)


def find_plugin_library(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The plugin library: ``explicit`` (``--plugin``), else ``$SPGIM_TST_PLUGIN``, else this package's own build.

    Loading the library runs its code in this process, so it comes only from places the user chose or
    spgim built: never from an export folder, a path a sidecar names, or the working directory's ``build/``
    (docs/security.md).

    Args:
        explicit: a path the user gave (``--plugin``, ``plugin=``); it must exist.

    Returns:
        ``explicit``, or the first existing of ``$SPGIM_TST_PLUGIN`` and ``<repository>/build/native/``.
    """
    if explicit is not None:
        if Path(explicit).is_file():
            return Path(explicit)
        raise SpgimError(f"plugin library {explicit} does not exist", exit_code=NO_TENSORRT_EXIT)
    own_build = Path(__file__).resolve().parents[1] / "build" / "native" / PLUGIN_LIBRARY
    candidates = [Path(p) for p in (os.environ.get("SPGIM_TST_PLUGIN"),) if p] + [own_build]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SpgimError(
        f"{PLUGIN_LIBRARY} not found (looked in $SPGIM_TST_PLUGIN and {own_build.parent}); "
        f"{BUILD_HINT} (or pass --plugin PATH)",
        exit_code=NO_TENSORRT_EXIT,
    )


_LOADED: dict[Path, ctypes.CDLL] = {}


def load_plugin_library(path: str | os.PathLike[str]) -> None:
    """Load the plugin library once per process; its creator registers itself when loaded.

    The library uses ``REGISTER_TENSORRT_PLUGIN`` (a static registrar), so it is loaded with
    dlopen, not ``IPluginRegistry.load_library`` (which wants ``getCreators`` entry points); the
    handle is kept so the creator stays registered for parsing, building and deserialising.
    """
    resolved = Path(path).resolve()
    if resolved not in _LOADED:
        try:
            _LOADED[resolved] = ctypes.CDLL(str(resolved), mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            raise SpgimError(f"cannot load plugin library {path}: {error}", exit_code=NO_TENSORRT_EXIT) from None
