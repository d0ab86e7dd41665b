"""The four stage folders install as spgim.<stage>, editable and from a built wheel alike."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import spgim

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "runtime", "streaming")


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
    import spgim.export
    import spgim.runtime
    import spgim.streaming
    import spgim.train

    for module, stage in (
        (spgim.train, "train"),
        (spgim.export, "export"),
        (spgim.runtime, "runtime"),
        (spgim.streaming, "streaming"),
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
