"""The stage folders install as spgim.<stage>, editable and from a built wheel alike."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import spgim

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "runtime", "streaming", "cluster", "serving", "gstreamer")


def _source_packages() -> dict[str, Path]:
    """Every package of the source tree, by its installed name."""
    found = {"spgim": ROOT / "spgim"}
    for stage in STAGES:
        for init in sorted((ROOT / stage).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / stage)
            name = ".".join(("spgim", stage, *relative.parts))
            found[name] = init.parent
    return found


def test_every_source_package_is_declared_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(config["packages"]) == sorted(_source_packages())
    for stage in STAGES:
        assert config["package-dir"][f"spgim.{stage}"] == stage


def test_editable_install_maps_stages_to_top_level_folders() -> None:
    import spgim.cluster
    import spgim.export
    import spgim.gstreamer
    import spgim.runtime
    import spgim.serving
    import spgim.streaming
    import spgim.train

    for module, stage in (
        (spgim.train, "train"),
        (spgim.export, "export"),
        (spgim.runtime, "runtime"),
        (spgim.streaming, "streaming"),
        (spgim.cluster, "cluster"),
        (spgim.serving, "serving"),
        (spgim.gstreamer, "gstreamer"),
    ):
        assert Path(module.__file__ or "").resolve() == ROOT / stage / "__init__.py"


def test_runtime_and_streaming_never_import_train() -> None:
    code = (
        "import sys, spgim.runtime.matting, spgim.runtime.bench, spgim.streaming.job, spgim.streaming.bench, "
        "spgim.streaming.commands, spgim.streaming.outputs, spgim.streaming.sources, spgim.streaming.pipeline; "
        "bad = [m for m in sys.modules if m.startswith(('spgim.train', 'spgim.export'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _imported(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports anywhere (function bodies too), as absolute names; ``package`` is the
    package it belongs to (relative imports are resolved against it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _stage_imports(folder: Path, package: str) -> dict[str, set[str]]:
    """Per source file under ``folder`` (installed as ``package``), the stages it imports (``train``, ...)."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        inner = ".".join((package, *path.parent.relative_to(folder).parts))
        parts = [name.split(".") for name in _imported(path, inner)]
        stages = {part[1] for part in parts if part[0] == "spgim" and len(part) > 1 and part[1] in STAGES}
        found[str(path.relative_to(ROOT))] = {stage for stage in stages if not inner.startswith(f"spgim.{stage}")}
    return found


def test_train_imports_no_other_stage() -> None:
    """The bottom stage: models, data and training import only the shared ground (never streaming, runtime, export)."""
    offenders = {path: stages for path, stages in _stage_imports(ROOT / "train", "spgim.train").items() if stages}
    assert not offenders, offenders


def test_the_shared_ground_imports_no_stage() -> None:
    """``spgim/*.py`` is what every stage may use, so it imports none of them; the command layer (the CLI and
    the commands it lists from ``spgim/`` itself, which use several stages at once) is the exception."""
    from spgim.cli import COMMAND_MODULES

    layer = {"spgim/cli.py"} | {f"spgim/{name.split('.')[1]}.py" for name in COMMAND_MODULES if name.count(".") == 1}
    assert layer >= {"spgim/cli.py", "spgim/eval_command.py", "spgim/demo.py"}
    ground = _stage_imports(ROOT / "spgim", "spgim")
    offenders = {path: stages for path, stages in ground.items() if stages and path not in layer}
    assert not offenders, offenders
    assert ground["spgim/eval_command.py"] >= {"train", "streaming"}  # the check sees a command layer's imports


def test_runtime_and_streaming_import_only_what_is_below_them() -> None:
    """runtime imports no other stage; streaming only runtime; cluster, serving and gstreamer only streaming and
    runtime."""
    allowed_below = {"runtime": set(), "streaming": {"runtime"}}
    allowed_below |= {stage: {"streaming", "runtime"} for stage in ("cluster", "serving", "gstreamer")}
    for stage, allowed in allowed_below.items():
        found = _stage_imports(ROOT / stage, f"spgim.{stage}")
        offenders = {path: stages - allowed for path, stages in found.items() if stages - allowed}
        assert not offenders, offenders
    found = _stage_imports(ROOT / "gstreamer", "spgim.gstreamer")
    assert found["gstreamer/stream.py"] == {"streaming", "runtime"}  # the check sees the element's imports
    assert "gstreamer/plugin/python/spgimmatte.py" in found  # the loader's shim is checked too


def test_export_imports_train_and_reaches_serving_only_from_its_command() -> None:
    """export builds on train; ``spgim export --triton`` writes the repository with serving's writer (from the
    command module alone, so that the exporter itself never depends on what serves its artifacts)."""
    found = _stage_imports(ROOT / "export", "spgim.export")
    offenders = {
        path: stages - ({"train", "serving"} if path == "export/commands.py" else {"train"})
        for path, stages in found.items()
    }
    assert not {path: stages for path, stages in offenders.items() if stages}, offenders
    assert "serving" in found["export/commands.py"]  # the check sees the command's import


@pytest.mark.slow
def test_built_wheel_holds_and_imports_every_package(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(ROOT),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = wheel_dir.glob("spgim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{name.replace('.', '/')}/{source.name}"
        for name, folder in _source_packages().items()
        for source in folder.glob("*.py")
    }
    assert expected <= names, sorted(expected - names)
    assert "spgim/gstreamer/plugin/python/spgimmatte.py" in names  # GStreamer's loader imports it (package data)
    assert any(n.endswith("entry_points.txt") for n in names)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    packages = sorted(_source_packages())
    code = (
        "import importlib, sys\n"
        f"for name in {packages!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(unpacked)!r}), (name, module.__file__)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert spgim.__version__ != "0.0.0+unknown"
