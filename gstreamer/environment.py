"""``spgim gst-env``: the variables that let GStreamer find ``spgimmatte`` in this install.

GStreamer's Python plugin loader (Debian's ``gstreamer1.0-python3-plugin-loader``, ``libgstpython.so``) embeds the
system's Python and imports every ``python/*.py`` under ``$GST_PLUGIN_PATH``. So the environment names the folder
holding the element's shim (``plugin/python/spgimmatte.py`` in this package) and, in ``SPGIM_SITE``, the site
folders of the interpreter running this command, where spgim and its dependencies are installed (with the folder
holding the ``spgim`` package where that is found some other way, e.g. ``PYTHONPATH``). The loader's Python and
this one must be the same minor version, as their compiled modules (numpy, ONNX Runtime) are shared.

GStreamer caches what each plugin holds in a registry file, and remembers a plugin whose loading failed (the Python
loader fails in a shell where a virtual environment is activated) until that plugin's files or folders change. So,
unless ``GST_REGISTRY`` is set already, the variables point GStreamer at a registry of spgim's own, which
:func:`verify_element` may delete to have it rebuilt.
"""

from __future__ import annotations

import importlib.machinery
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from spgim.errors import SpgimError

from .formats import NAME

PACKAGES = (
    "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav "
    "python3-gst-1.0 gstreamer1.0-python3-plugin-loader"
)
LOADER = "libgstpython.so"
# Where distributions put GStreamer's plugins (Debian: /usr/lib/<triplet>/gstreamer-1.0).
PLUGIN_FOLDERS = ("/usr/lib/*/gstreamer-1.0", "/usr/lib/gstreamer-1.0", "/usr/lib64/gstreamer-1.0")
PLUGIN_PATH_VARIABLES = ("GST_PLUGIN_PATH_1_0", "GST_PLUGIN_PATH")  # GStreamer reads the first one set
SYSTEM_PATH_VARIABLES = ("GST_PLUGIN_SYSTEM_PATH_1_0", "GST_PLUGIN_SYSTEM_PATH")
INSPECT_TIMEOUT_S = 300.0  # the first gst-inspect-1.0 in a new registry scans every plugin installed


def plugin_folder() -> Path:
    """The folder to put on ``GST_PLUGIN_PATH``: it holds ``python/spgimmatte.py``."""
    return Path(__file__).resolve().parent / "plugin"


def site_folders() -> list[str]:
    """This interpreter's site folders, then the folder ``spgim`` is imported from where they do not provide it.

    An editable install is provided by a ``.pth`` file in a site folder (the shim processes those), so only a
    package found on a plain ``sys.path`` entry (``PYTHONPATH``, the working folder) adds its folder.
    """
    paths = sysconfig.get_paths()
    folders = list(dict.fromkeys(str(Path(paths[key]).resolve()) for key in ("purelib", "platlib")))
    if importlib.machinery.PathFinder.find_spec("spgim", folders) is not None:
        return folders
    for finder in sys.meta_path:  # an editable install's finder maps spgim without a folder on sys.path
        if finder is not importlib.machinery.PathFinder and _finds_spgim(finder):
            return folders
    for entry in sys.path:
        folder = str(Path(entry or os.getcwd()).resolve())
        if folder not in folders and importlib.machinery.PathFinder.find_spec("spgim", [folder]) is not None:
            return [*folders, folder]
    return folders


def _finds_spgim(finder: object) -> bool:
    find_spec = getattr(finder, "find_spec", None)
    if find_spec is None:
        return False
    try:
        return find_spec("spgim", None) is not None
    except Exception:  # a finder that cannot answer for a name it does not handle
        return False


def find_loader(environ: Mapping[str, str]) -> Path | None:
    """GStreamer's Python plugin loader (``libgstpython.so``), or None where it is not installed."""
    folders = [folder for name in SYSTEM_PATH_VARIABLES for folder in environ.get(name, "").split(os.pathsep) if folder]
    for folder in (*folders, *PLUGIN_FOLDERS):
        for found in sorted(Path("/").glob(folder.lstrip("/"))) if "*" in folder else [Path(folder)]:
            if (found / LOADER).is_file():
                return found / LOADER
    return None


def loader_python(loader: Path) -> str | None:
    """The Python version the loader embeds (``"3.11"``, from the ``libpython3.11.so`` it links), or None."""
    found = re.search(rb"libpython(\d+\.\d+)", loader.read_bytes())
    return found.group(1).decode() if found else None


def virtual_environment_python(environ: Mapping[str, str]) -> Path | None:
    """The first ``python3`` on ``PATH`` where it is a virtual environment's, else None.

    The loader's embedded Python takes its standard library and site folders from the ``python3`` it finds on
    ``PATH``; a virtual environment's has neither the system's ``gi`` nor its standard library, so the loader fails
    ("pygobject initialization failed") and every Python element, ``spgimmatte`` included, is missing.
    """
    found = shutil.which("python3", path=environ.get("PATH", ""))
    if found is None:
        return None
    python = Path(found)
    if any((folder / "pyvenv.cfg").is_file() for folder in (python.parent, python.parent.parent)):
        return python
    return None


def without_virtual_environments(path: str) -> str:
    """``path`` (a ``PATH`` value) without virtual environments' folders (a ``pyvenv.cfg`` beside or above): what a
    program that runs GStreamer gives it, so that the loader starts the system's ``python3``."""
    kept = [
        folder
        for folder in path.split(os.pathsep)
        if folder and not any((place / "pyvenv.cfg").is_file() for place in (Path(folder), Path(folder).parent))
    ]
    return os.pathsep.join(kept)


def check_gstreamer(environ: Mapping[str, str]) -> None:
    """Refuse, with one line, where GStreamer could not load ``spgimmatte`` from this install.

    Raises:
        SpgimError: gst-inspect-1.0 or the Python plugin loader is missing, the loader embeds another Python
            version, or a virtual environment's ``python3`` comes first on ``PATH``.
    """
    loader = find_loader(environ)
    missing = [] if shutil.which("gst-inspect-1.0", path=environ.get("PATH", "")) else ["gst-inspect-1.0"]
    missing += [] if loader is not None else [f"GStreamer's Python plugin loader ({LOADER})"]
    if missing or loader is None:
        raise SpgimError(f"{' and '.join(missing)} not found: install the Debian packages {PACKAGES}")
    embedded = loader_python(loader)
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if embedded is not None and embedded != running:
        raise SpgimError(
            f"{loader} embeds Python {embedded}, but this spgim runs on Python {running}: their compiled modules "
            f"differ; install spgim with Python {embedded} to use {NAME}"
        )
    venv = virtual_environment_python(environ)
    if venv is not None:
        raise SpgimError(
            f"{venv} comes first on PATH: GStreamer's Python plugin loader would start this virtual environment's "
            "python3 and fail to import gi; deactivate it first, then run this spgim by its path "
            f'(eval "$({Path(sys.executable).with_name("spgim")} gst-env)")'
        )


def own_registry(environ: Mapping[str, str]) -> Path:
    """spgim's GStreamer registry file: ``spgim/gstreamer-registry.<machine>.bin`` in the user's cache folder."""
    cache = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "spgim" / f"gstreamer-registry.{platform.machine()}.bin"


def gst_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set: ``GST_PLUGIN_PATH`` (and ``GST_PLUGIN_PATH_1_0`` where set) with the plugin folder
    first, ``SPGIM_SITE``, and ``GST_REGISTRY`` (spgim's own) where it is not set."""
    plugins = str(plugin_folder())
    found: dict[str, str] = {}
    for name in PLUGIN_PATH_VARIABLES:
        if name in environ or name == "GST_PLUGIN_PATH":
            others = [folder for folder in environ.get(name, "").split(os.pathsep) if folder and folder != plugins]
            found[name] = os.pathsep.join([plugins, *others])
    found["SPGIM_SITE"] = os.pathsep.join(site_folders())
    if not environ.get("GST_REGISTRY"):
        found["GST_REGISTRY"] = str(own_registry(environ))
    return found


def verify_element(environ: Mapping[str, str], variables: Mapping[str, str]) -> None:
    """Check that ``gst-inspect-1.0 spgimmatte`` loads the element with ``variables`` set; spgim's own registry is
    deleted and rebuilt once where it does not (it may remember a failed load).

    Raises:
        SpgimError: the element still does not load; the line says why (the shim's own line where it printed one).
    """
    env = {**environ, **variables}
    registry = Path(env.get("GST_REGISTRY", "")) if env.get("GST_REGISTRY") else None
    for attempt in range(2):
        result = subprocess.run(
            ["gst-inspect-1.0", NAME], env=env, capture_output=True, text=True, timeout=INSPECT_TIMEOUT_S, check=False
        )
        problem = _load_problem(result)
        if problem is None:
            return
        own = "GST_REGISTRY" in variables and registry is not None and registry.is_file()
        if attempt == 0 and own:
            assert registry is not None
            registry.unlink()
            continue
        stale = "" if own or registry is None else f" (if GStreamer's registry {registry} is stale, delete it)"
        raise SpgimError(f"gst-inspect-1.0 {NAME} fails in this environment: {problem}{stale}")


def _load_problem(result: subprocess.CompletedProcess[str]) -> str | None:
    """Why ``gst-inspect-1.0 spgimmatte`` did not load the element, or None where it did."""
    for line in result.stderr.splitlines():
        if line.startswith(f"{NAME}: cannot load spgim"):
            return line
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def shell_lines(variables: Mapping[str, str]) -> str:
    """``export NAME=VALUE`` lines, each value quoted for a POSIX shell."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())
