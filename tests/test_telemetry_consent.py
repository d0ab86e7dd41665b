"""OpenVINO's converter and NNCF report usage to Google Analytics where the user never chose; spgim's exporters
make that silence a no, and an explicit choice is still obeyed. Each case runs in its own process with its own
HOME (where OpenVINO keeps the choice), since NNCF decides at import and turns itself off inside pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# What NNCF and the converter would do in a fresh process: True where they would send reports.
PROBE = """
import sys
from spgim.telemetry_consent import decline_unasked_telemetry
if sys.argv[1] == "spgim":
    assert decline_unasked_telemetry()
import nncf.telemetry.wrapper as nncf_telemetry
from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry
print(nncf_telemetry.telemetry._impl.consent, init_ovc_telemetry().consent)
"""


def _consent(home: Path, mode: str) -> str:
    environment = {key: value for key, value in os.environ.items() if key not in ("CI", "NNCF_CI", "NNCF_DEV")}
    environment["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split("\n")[-2]


@pytest.fixture(scope="module")
def unasked_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home-never-asked")


def test_a_user_who_never_chose_is_not_reported_on(unasked_home: Path) -> None:
    assert _consent(unasked_home, "library") == "True True"  # what OpenVINO does left alone
    assert _consent(unasked_home, "spgim") == "False False"
    assert not (unasked_home / "intel" / "openvino_telemetry").exists()  # nothing written on the user's behalf


@pytest.mark.parametrize(("choice", "expected"), [("1", "True True"), ("0", "False False")])
def test_an_explicit_choice_is_obeyed(tmp_path: Path, choice: str, expected: str) -> None:
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text(choice + "\n")
    assert _consent(tmp_path, "spgim") == expected
