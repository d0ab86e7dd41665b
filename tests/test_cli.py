"""The ``spgim`` command: help, summary, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spgim.cli import build_parser
from spgim.train.config import get_config
from spgim.train.summary import PAPER_PARAMS_M, model_summary

SPGIM = str(Path(sys.executable).with_name("spgim"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SPGIM, *args], capture_output=True, text=True, timeout=300, check=False)


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)  # type: ignore[arg-type]


def test_help_lists_every_subcommand() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for name in _subcommands():
        assert name in result.stdout


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_help_shows_an_example(name: str) -> None:
    result = _run(name, "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and f"spgim {name}" in result.stdout.split("example:")[1]


def test_summary_json_has_params_and_flops_per_branch() -> None:
    result = _run("summary", "--config", "tiny", "--size", "160x96", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("params", "flops"):
        assert set(summary[key]) == {"spd", "spgm", "total"}
        assert summary[key]["total"] == summary[key]["spd"] + summary[key]["spgm"] > 0
    assert (summary["height"], summary["width"]) == (96, 160)
    # The per-module breakdown accounts for each branch whole; TST stages are listed inside "tst" too.
    for branch in ("spd", "spgm"):
        top = {name: row for name, row in summary["modules"][branch].items() if "." not in name}
        assert sum(row["params"] for row in top.values()) == summary["params"][branch]
        assert sum(row["flops"] for row in top.values()) == summary["flops"][branch]
    stages = {name: row for name, row in summary["modules"]["spgm"].items() if name.startswith("tst.")}
    assert stages and sum(row["flops"] for row in stages.values()) == summary["modules"]["spgm"]["tst"]["flops"]
    assert all(0 < row["attention_flops"] < row["flops"] for row in stages.values())


def test_summary_table_for_paper_config_cites_table6() -> None:
    result = _run("summary", "--config", "paper", "--size", "512x512")
    assert result.returncode == 0, result.stderr
    # The counted parameters and FLOPs of the built model, each next to Table 6's figure.
    summary = model_summary(get_config("paper"), 512, 512)
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:5]}
    for key, label in (("spd", "SPD"), ("spgm", "SPGM"), ("total", "total")):
        counted, table6, gflops = rows[label]
        assert counted == f"{summary['params'][key] / 1e6:.2f}" and table6 == f"{PAPER_PARAMS_M[key]:.1f}"
        assert gflops == f"{summary['flops'][key] / 1e9:.1f}"
    assert abs(summary["params"]["total"] / 1e6 - PAPER_PARAMS_M["total"]) < 0.02 * PAPER_PARAMS_M["total"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("summary", "--size", "100x100"), "multiples of 32"),
        (("summary", "--config", "huge"), "unknown configuration"),
        (("summary", "--variant", "nope"), "unknown variant"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(args: tuple[str, ...], message: str) -> None:
    result = _run(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
