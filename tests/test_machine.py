"""What the project records about the CPU: caches from sysfs, and a generation that tells apart CPUs with one
model name and the same flags (auto's cached ranking must not carry over between them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spgim import machine
from spgim.runtime import ranking
from spgim.runtime.artifacts import MANIFEST


def _cache(folder: Path, level: str, kind: str, size: str | None) -> None:
    folder.mkdir(parents=True)
    (folder / "level").write_text(level + "\n")
    (folder / "type").write_text(kind + "\n")
    if size is not None:
        (folder / "size").write_text(size + "\n")


def test_caches_are_read_from_sysfs_and_unreadable_ones_skipped(tmp_path: Path) -> None:
    _cache(tmp_path / "index0", "1", "Data", "48K")
    _cache(tmp_path / "index1", "1", "Instruction", "32K")
    _cache(tmp_path / "index2", "2", "Unified", "1024K")
    _cache(tmp_path / "index3", "3", "Unified", None)  # no size file: left out
    assert machine.cpu_caches(tmp_path) == {"L1d": "48K", "L1i": "32K", "L2": "1024K"}
    assert machine.cpu_caches(tmp_path / "absent") == {}


def test_this_cpu_names_its_generation_and_caches() -> None:
    facts = machine.cpu_facts()
    assert len(facts["generation"]) == 4 and isinstance(facts["caches"], dict)
    if Path("/proc/cpuinfo").is_file():
        family = facts["generation"][1]
        assert family.isdigit(), facts
        assert f"family {family} model" in machine.flags_line()


def test_another_generation_with_the_same_name_and_flags_gets_its_own_ranking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / MANIFEST).write_text("{}")
    facts: dict[str, Any] = {**machine.cpu_facts(), "generation": ["AuthenticAMD", "25", "17", "1"]}
    monkeypatch.setattr(ranking, "cpu_facts", lambda: facts)
    older = ranking.ranking_key(tmp_path, [], (192, 320))
    assert ranking.ranking_key(tmp_path, [], (192, 320)) == older
    monkeypatch.setattr(ranking, "cpu_facts", lambda: {**facts, "generation": ["AuthenticAMD", "26", "2", "1"]})
    assert ranking.ranking_key(tmp_path, [], (192, 320)) != older
