"""torch.export + AOTInductor packages: parity with eager, loading without model code, refusals.

Compiles are the cost here (2 cores: about a minute per branch), so every test shares two compiles:
the fp32 pair with dynamic height and width (the live configuration's, from the session's shared
export, see conftest.py), and the tiny configuration's bf16 pair at one fixed size (which also
exercises the static path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from requirements import needs_tool, not_this_machine, unavailable

from spgim.aoti_build import aoti_compiler_missing
from spgim.errors import SpgimError
from spgim.export.io_spec import spd_spec, spgm_spec
from spgim.export.pt2 import accepted_sizes, dynamic_shapes, export_pt2
from spgim.machine import cpu_facts, native_bf16_missing
from spgim.runtime.aoti_backend import AOTInductorBackend, aoti_unavailable, load_package, resnet50_aoti
from spgim.runtime.artifacts import Artifact, load_artifacts, select_pair
from spgim.train.config import get_config
from spgim.train.models import attention_impl, build_model, guide_channels

# Tests that use a compiled pair are marked slow (the two shared compiles take minutes); the others are not.
needs_compiler = needs_tool(aoti_compiler_missing())

EXPORT_HW = (128, 128)
MIN_HW, MAX_HW = (64, 64), (512, 512)  # the shared live export's range


def _export_pair(folder: Path, precision: str, *, dynamic: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    config = get_config("tiny")
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    channels = guide_channels(config)
    specs = {"spd": spd_spec(channels), "spgm": spgm_spec(channels)}
    (image,) = specs["spd"].dummy_inputs(*EXPORT_HW)
    with torch.no_grad():
        examples = {"spd": (image,), "spgm": (image, *spd(image))}
    artifacts = {}
    for branch, model in (("spd", spd), ("spgm", spgm)):
        path = folder / f"{branch}.{precision}.pt2"
        facts = export_pt2(
            model,
            specs[branch],
            examples[branch],
            path,
            precision=precision,
            min_hw=MIN_HW,
            max_hw=MAX_HW,
            dynamic=dynamic,
        )
        sidecar = {**facts, "artifact_bytes": path.stat().st_size}
        artifacts[branch] = Artifact(branch, "pt2", precision, path, sidecar)
    return {"spd": spd, "spgm": spgm, "artifacts": artifacts}


@pytest.fixture(scope="module")
def fp32_pair(live_export: tuple[Path, torch.nn.Module, torch.nn.Module]) -> dict[str, Any]:
    if aoti_compiler_missing() is not None:
        unavailable(aoti_compiler_missing() or "")
    folder, spd, spgm = live_export
    spd_package, spgm_package = select_pair(load_artifacts(folder), "pt2", "fp32")
    return {"spd": spd, "spgm": spgm, "artifacts": {"spd": spd_package, "spgm": spgm_package}}


@pytest.fixture(scope="module")
def bf16_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if aoti_compiler_missing() is not None:
        unavailable(aoti_compiler_missing() or "")
    return _export_pair(tmp_path_factory.mktemp("pt2-bf16"), "bf16", dynamic=False)


def _eager(pair: dict[str, Any], image: torch.Tensor) -> np.ndarray:
    with torch.no_grad(), attention_impl(pair["spgm"], "fused"):
        return pair["spgm"](image, *pair["spd"](image)).numpy()


def _backend(pair: dict[str, Any], precision: str = "fp32") -> AOTInductorBackend:
    artifacts = pair["artifacts"]
    return AOTInductorBackend(artifacts["spd"], artifacts["spgm"], precision=precision)


@needs_compiler
@pytest.mark.slow
def test_fp32_pair_matches_eager_at_two_sizes(fp32_pair: dict[str, Any]) -> None:
    backend = _backend(fp32_pair)
    assert backend.name == "aotinductor (fp32)" and backend.device == "cpu"
    for height, width in (EXPORT_HW, (96, 160)):
        image = torch.rand(2, 3, height, width)
        alpha = backend.infer(image.numpy())
        assert alpha.dtype == np.float32 and alpha.shape == (2, 1, height, width)
        assert np.abs(alpha - _eager(fp32_pair, image)).max() < 1e-4


@needs_compiler
@pytest.mark.slow
def test_sidecar_facts(fp32_pair: dict[str, Any], bf16_pair: dict[str, Any]) -> None:
    dynamic = fp32_pair["artifacts"]["spgm"].sidecar
    assert dynamic["io_dtype"] == "float32" and dynamic["batch"] == 1
    assert dynamic["dynamic_dims"] == {"height": "32*h32", "width": "32*w32"}
    assert dynamic["package_sizes"]["min_hw"] == list(MIN_HW) and dynamic["package_sizes"]["max_hw"] == list(MAX_HW)
    assert dynamic["compile_seconds"] > 0 and dynamic["compiler"] and dynamic["vec_isa"]
    static = bf16_pair["artifacts"]["spgm"].sidecar
    assert static["io_dtype"] == "bfloat16" and static["dynamic_dims"] == {}
    assert static["package_sizes"]["min_hw"] == static["package_sizes"]["max_hw"] == list(EXPORT_HW)
    json.dumps(dynamic)  # the exporter writes these facts into a JSON sidecar


@needs_compiler
@pytest.mark.slow
def test_bf16_pair_close_to_fp32_eager(bf16_pair: dict[str, Any]) -> None:
    backend = _backend(bf16_pair, "bf16")
    assert backend.name == "aotinductor (bf16)"
    image = torch.rand(1, 3, *EXPORT_HW)
    alpha = backend.infer(image.numpy())
    assert alpha.dtype == np.float32
    difference = np.abs(alpha - _eager(bf16_pair, image))
    print(f"bf16 package vs fp32 eager: max {difference.max():.2e}, mean {difference.mean():.2e}")
    assert difference.max() < 5e-2 and difference.mean() < 5e-3


@needs_compiler
@pytest.mark.slow
def test_packages_load_and_run_without_spgim_model_code(fp32_pair: dict[str, Any], tmp_path: Path) -> None:
    image = torch.rand(1, 3, *EXPORT_HW)
    np.save(tmp_path / "image.npy", image.numpy())
    described = {
        branch: {"path": str(a.path), "precision": a.precision, "sidecar": a.sidecar}
        for branch, a in fp32_pair["artifacts"].items()
    }
    (tmp_path / "artifacts.json").write_text(json.dumps(described))
    code = """
import json, sys
from pathlib import Path
import numpy as np
# Any import of the model code or the exporter fails from here on.
sys.modules["spgim.train"] = None
sys.modules["spgim.export"] = None
from spgim.runtime.aoti_backend import AOTInductorBackend
from spgim.runtime.artifacts import Artifact, load_artifacts, select_pair
folder = Path(sys.argv[1])
described = json.loads((folder / "artifacts.json").read_text())
spd, spgm = (Artifact(b, "pt2", d["precision"], Path(d["path"]), d["sidecar"]) for b, d in described.items())
alpha = AOTInductorBackend(spd, spgm).infer(np.load(folder / "image.npy"))
np.save(folder / "alpha.npy", alpha)
"""
    # No compiler on PATH either: a package runs where nothing can compile.
    env = {"PATH": "/nonexistent", "CXX": "/nonexistent/g++", "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    alpha = np.load(tmp_path / "alpha.npy")
    assert np.abs(alpha - _eager(fp32_pair, image)).max() < 1e-4


@needs_compiler
@pytest.mark.slow
def test_truncated_package_is_one_line_error(fp32_pair: dict[str, Any], tmp_path: Path) -> None:
    source = fp32_pair["artifacts"]["spd"].path
    broken = tmp_path / source.name
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(SpgimError, match="cannot load AOTInductor package") as error:
        load_package(broken)
    assert "\n" not in str(error.value)
    spd = fp32_pair["artifacts"]["spd"]
    with pytest.raises(SpgimError, match="cannot load AOTInductor package"):
        AOTInductorBackend(
            Artifact("spd", "pt2", "fp32", broken, spd.sidecar), fp32_pair["artifacts"]["spgm"], precision="fp32"
        )


@needs_compiler
@pytest.mark.slow
def test_size_outside_the_dynamic_range_is_refused(fp32_pair: dict[str, Any]) -> None:
    backend = _backend(fp32_pair)
    for height, width in ((32, 64), (544, 128), (100, 128)):
        with pytest.raises(SpgimError, match="outside the packages' sizes"):
            backend.infer(np.zeros((1, 3, height, width), np.float32))
    # The package itself checks too (AOTI_RUNTIME_CHECK_INPUTS): an exception, not a crash or a wrong read.
    with pytest.raises(RuntimeError, match="too small"), torch.inference_mode():
        backend.spd(torch.zeros(1, 3, 32, 64))


@needs_compiler
@pytest.mark.slow
def test_package_for_another_cpu_is_refused(fp32_pair: dict[str, Any]) -> None:
    have = {name for name, present in cpu_facts()["flags"].items() if present}
    missing = sorted({"avx512f", "amx_bf16"} - have)
    if not missing:
        not_this_machine("this CPU has every flag the test could fake as missing")
    spd = fp32_pair["artifacts"]["spd"]
    foreign = Artifact(
        "spd", "pt2", "fp32", spd.path, {**spd.sidecar, "cpu_flags": [*spd.sidecar["cpu_flags"], *missing]}
    )
    with pytest.raises(SpgimError, match=f"lacks.*{missing[0]}|{missing[0]}.*lacks"):
        AOTInductorBackend(foreign, fp32_pair["artifacts"]["spgm"], precision="fp32")


def test_precision_mismatch_and_probe(tmp_path: Path) -> None:
    artifact = Artifact("spd", "pt2", "fp32", tmp_path / "spd.pt2", {})
    with pytest.raises(SpgimError, match="fp32 package, bf16 was asked"):
        AOTInductorBackend(artifact, artifact, precision="bf16")
    assert aoti_unavailable("fp32") is None
    assert aoti_unavailable("bf16") == native_bf16_missing()
    assert "fp16" in (aoti_unavailable("fp16") or "")


def test_missing_compiler_is_one_line_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-c++")
    hint = aoti_compiler_missing()
    assert hint is not None and "apt-get install g++" in hint and "\n" not in hint
    model = build_model("spd", get_config("tiny")).eval()
    spec = spd_spec(guide_channels(get_config("tiny")))
    with pytest.raises(SpgimError, match="needs a C\\+\\+ compiler"):
        export_pt2(
            model,
            spec,
            spec.dummy_inputs(64, 64),
            tmp_path / "spd.pt2",
            precision="fp32",
            min_hw=MIN_HW,
            max_hw=MAX_HW,
            dynamic=True,
        )
    assert not (tmp_path / "spd.pt2").exists()
    # The bench's AOTInductor ceiling needs the compiler too: one line, which the bench keeps beside the row.
    with pytest.raises(SpgimError, match="needs a C\\+\\+ compiler"):
        resnet50_aoti(torch.rand(1, 3, 64, 64), precision="fp32", workdir=tmp_path)


def test_compiler_found_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("g++") is None:
        unavailable("no g++ here")
    monkeypatch.delenv("CXX", raising=False)
    assert aoti_compiler_missing() is None


@needs_compiler
def test_failed_compile_is_one_line_error(tmp_path: Path) -> None:
    # A "compiler" that answers --version and fails every compile; in a child process, because Inductor
    # caches facts about the compiler it saw first.
    fake = tmp_path / "fake-c++"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && echo "fake c++ 1.0" && exit 0\necho "fake: cannot compile" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    code = """
import sys, torch
from pathlib import Path
from spgim.aoti_build import compile_package
from spgim.errors import SpgimError
class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2 + 1
program = torch.export.export(Double(), (torch.rand(2, 3),))
try:
    compile_package(program, Path(sys.argv[1]))
except SpgimError as error:
    print(error)
    sys.exit(3)
"""
    env = {**os.environ, "CXX": str(fake), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "double.pt2")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    message = result.stdout.strip()
    assert message.startswith("AOTInductor could not compile double.pt2") and "\n" not in message
    assert not (tmp_path / "double.pt2").exists()


def test_accepted_sizes_come_from_the_program() -> None:
    config = get_config("tiny")
    spec = spd_spec(guide_channels(config))
    model = build_model("spd", config).eval()
    (image,) = spec.dummy_inputs(128, 96)
    with torch.no_grad():
        dynamic = torch.export.export(model, (image,), dynamic_shapes=dynamic_shapes(spec, (32, 64), (1280, 640)))
        static = torch.export.export(model, (image,))
    # torch.export raises a dynamic dim's lower bound to 2 steps: 32 px becomes 64.
    assert accepted_sizes(dynamic) == ([64, 64], [1280, 640])
    assert accepted_sizes(static) == ([128, 96], [128, 96])
