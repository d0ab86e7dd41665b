"""One checkpoint format: round trip, refusals with one clear message, no code execution."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from spgim.errors import SpgimError
from spgim.train.checkpoint import load_checkpoint, load_model, save_checkpoint, weights_digest
from spgim.train.config import get_config
from spgim.train.models import build_model


def test_round_trip_restores_identical_outputs(tmp_path: Path) -> None:
    config = get_config("tiny")
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    save_checkpoint(tmp_path / "spd.pt", branch="spd", config=config, model=spd)
    path = save_checkpoint(tmp_path / "spgm.pt", branch="spgm", config=config, model=spgm, extra={"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spd.pt", "spgm.pt"]
    payload = load_checkpoint(path, branch="spgm", config=config)
    assert payload["extra"] == {"epoch": 3} and payload["config"] == config
    spd2, spgm2 = load_model(tmp_path / "spd.pt", "spd").eval(), load_model(path, "spgm", config).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(spgm(image, *spd(image)), spgm2(image, *spd2(image)))
    assert weights_digest(spgm.state_dict()) == weights_digest(spgm2.state_dict())
    assert weights_digest(spgm.state_dict()) != weights_digest(spd.state_dict())


def test_mismatched_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = get_config("tiny")
    path = save_checkpoint(tmp_path / "spgm.pt", branch="spgm", config=config, model=build_model("spgm", config))
    other = get_config("tiny", spgm__depth=34)
    with pytest.raises(SpgimError, match=r"spgm\.depth: expected 34, found 18"):
        load_checkpoint(path, config=other)
    with pytest.raises(SpgimError, match="holds the spgm branch, expected spd"):
        load_checkpoint(path, branch="spd")
    # SPD's section matters to SPGM (its guide channels), the caption section does not.
    load_checkpoint(path, config=get_config("tiny", caption__vocab_size=99))
    with pytest.raises(SpgimError, match=r"spd\.width"):
        load_checkpoint(path, config=get_config("tiny", spd__width=32))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "spgim-checkpoint", "payload": _RunsCode(marker)}, evil)
    with pytest.raises(SpgimError, match="pickled objects that could run code"):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_truncated_or_foreign_files_are_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.pt"
    if content is None:  # a truncated real checkpoint
        config = get_config("tiny")
        good = save_checkpoint(tmp_path / "good.pt", branch="spd", config=config, model=build_model("spd", config))
        content = good.read_bytes()[: good.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(SpgimError, match="unreadable or truncated"):
        load_checkpoint(path)


def test_missing_and_foreign_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(SpgimError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(SpgimError, match="is not an spgim checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    config = get_config("tiny")
    model = build_model("spd", config)
    target = tmp_path / "run" / "last.pt"
    save_checkpoint(target, branch="spd", config=config, model=model)
    first = target.read_bytes()
    save_checkpoint(target, branch="spd", config=config, model=model)
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]
    assert len(target.read_bytes()) == len(first)


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = get_config("tiny")
    model = build_model("spd", config)
    target = tmp_path / "last.pt"
    save_checkpoint(target, branch="spd", config=config, model=model, extra={"epoch": 1})
    before = target.read_bytes()
    real_save = torch.save

    def interrupted(payload: object, handle: Any) -> None:
        real_save(payload, handle)  # the whole archive reaches the temp file, then Ctrl-C lands
        handle.truncate(handle.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, branch="spd", config=config, model=model, extra={"epoch": 2})
    monkeypatch.undo()
    assert target.read_bytes() == before  # the previous checkpoint, whole and untouched
    assert load_checkpoint(target, branch="spd")["extra"] == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no half-written temp file left
