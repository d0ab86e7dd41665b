"""scripts/precision_profile.py on the tiny configuration: every part for each engine, shares that add up,
OpenVINO's layers with their kernels, bf16 kernels in a bf16 run where the CPU has native bf16, int8 kernels in
OpenVINO's int8 run (torch's skipped with its reason), and bad options refused in one line. No timing is
asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spgim.machine import native_bf16_missing

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "precision_profile.py"
# The parts the report promises, whatever a configuration has (0 where it has none).
PARTS = {
    "encoder convolutions",
    "tst attention",
    "aft",
    "decoder",
    "resize/upsample",
    "casts and reorders",
    "other",
}
ENGINES = ("openvino", "torch")


def _run(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *options], capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("precision-profile") / "profile.json"
    # One thread: two OpenMP threads on a shared 2-core machine can wait whole time slices at every op.
    options = ("--config", "tiny", "--size", "64x64", "--iters", "1", "--threads", "1", "--kv-stride", "2")
    result = _run(*options, "--precisions", "fp32,bf16,int8", "--json", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int8 speed-up" in result.stdout
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _runs(report: dict[str, Any], engine: str) -> dict[str, dict[str, Any]]:
    """The precisions that ran on ``engine`` (skipped ones left out)."""
    return {p: record for p, record in report["engines"][engine].items() if "skipped" not in record}


@pytest.mark.parametrize("engine", ENGINES)
def test_every_part_is_reported_and_shares_add_up(report: dict[str, Any], engine: str) -> None:
    runs = _runs(report, engine)
    assert "fp32" in runs
    for precision, record in runs.items():
        for where, summary in [("both", record), *record["branches"].items()]:
            assert set(summary["parts"]) == PARTS, f"{engine} {precision} {where}"
            shares = sum(part["share"] for part in summary["parts"].values())
            assert shares == pytest.approx(1.0, abs=1e-6), f"{engine} {precision} {where}"
            assert summary["total_ms"] > 0
        assert set(record["branches"]) == {"spd", "spgm"}
    assert set(report["speedups"][engine]) == {p for p in runs if p != "fp32"}
    for ratios in report["speedups"][engine].values():
        assert set(ratios) == {*PARTS, "total"}


def test_openvino_lists_layers_with_their_kernels(report: dict[str, Any]) -> None:
    for record in _runs(report, "openvino").values():
        for branch in record["branches"].values():
            layers = branch["layers"]
            assert layers
            assert all(layer["kernel"] and layer["part"] in PARTS for layer in layers)
            executed = [layer for layer in layers if layer["executed"]]
            assert executed
            assert sum(branch["kernel_precisions"].values()) == len(executed)


@pytest.mark.skipif(native_bf16_missing() is not None, reason=native_bf16_missing() or "")
def test_bf16_run_records_bf16_kernels(report: dict[str, Any]) -> None:
    runs = _runs(report, "openvino")
    assert "bf16" in runs, report["engines"]["openvino"].get("bf16")
    for branch in runs["bf16"]["branches"].values():
        assert branch["kernel_precisions"].get("bf16", 0) > 0
    for branch in runs["fp32"]["branches"].values():
        assert "bf16" not in branch["kernel_precisions"]
    assert "bf16" in _runs(report, "torch")


def test_int8_runs_int8_kernels_on_openvino_only(report: dict[str, Any]) -> None:
    runs = _runs(report, "openvino")
    assert "int8" in runs, report["engines"]["openvino"].get("int8")
    for branch in runs["int8"]["branches"].values():
        kernels = branch["kernel_precisions"]
        assert kernels.get("i8", 0) + kernels.get("u8", 0) > 0, kernels
    for branch in runs["fp32"]["branches"].values():
        assert "i8" not in {layer["precision"] for layer in branch["layers"] if layer["type"] == "Convolution"}
    assert "torch has no int8" in report["engines"]["torch"]["int8"]["skipped"]
    assert report["resnet50"]["openvino"]["int8_speedup"] > 0
    assert "torch has no int8" in report["resnet50"]["torch"]["int8_skipped"]


def test_the_kv_stride_pools_the_attention_keys(report: dict[str, Any]) -> None:
    assert report["tst_kv_stride"] == 2
    layers = report["engines"]["openvino"]["fp32"]["branches"]["spgm"]["layers"]
    assert any(layer["part"] == "tst attention" and "Pool" in layer["type"] for layer in layers), layers


def test_machine_and_resnet_are_recorded(report: dict[str, Any]) -> None:
    assert "avx512_bf16" in report["machine"]["cpu"]["flags"]
    for engine in ENGINES:
        assert report["resnet50"][engine]["fp32_ms"] > 0


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (("--size", "100x7"), "size"),
        (("--engines", "tensorrt"), "--engines"),
        (("--config", "huge"), "configuration"),
        (("--kv-stride", "-1"), "--kv-stride"),
    ],
)
def test_bad_options_are_one_line(options: tuple[str, ...], says: str) -> None:
    result = _run(*options)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("precision_profile: ") and says in lines[0], result.stderr


def test_the_attention_alone_is_timed_in_each_form_and_precision(tmp_path: Path) -> None:
    if native_bf16_missing():
        pytest.skip(f"bf16 is not native here: {native_bf16_missing()}")
    script = ROOT / "scripts" / "attention_precision.py"
    options = ["--positions", "256", "--dim", "32", "--runs", "1", "--rounds", "1", "--json", str(tmp_path / "a.json")]
    run = subprocess.run([sys.executable, str(script), *options], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "a.json").read_text())
    assert [row["form"] for row in report["rows"]] == ["sdpa", "matmul", "blocked"]
    for row in report["rows"]:
        assert set(row["seconds"]) == {"f32", "bf16"} and all(s > 0 for s in row["seconds"].values())
        assert row["bf16_speedup"] == pytest.approx(row["seconds"]["f32"] / row["seconds"]["bf16"])
        assert row["layers"]["bf16"], row  # what OpenVINO compiled the form into
    assert "cpu" in report and "256 positions" in run.stdout
