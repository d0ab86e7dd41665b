"""The shipped reference checkpoints (live and tiny): intact, loadable safely, a pair, and they matte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import spgim.reference as reference
from spgim.errors import SpgimError
from spgim.train.checkpoint import load_checkpoint, load_model, weights_digest
from spgim.train.config import get_config
from spgim.train.data.clips import render_frames

# What each shipped pair scores on a generated clip it never saw (measured when shipped: live 0.57, tiny
# 0.67): mean IoU at 0.5 of the alpha with SPD on every frame, at 384x224, every 4th of 12 frames.
MIN_CLIP_IOU = {"live": 0.4, "tiny": 0.5}


@pytest.mark.parametrize("config", reference.CONFIGS)
def test_the_manifest_names_both_branches_with_their_digests(config: str) -> None:
    manifest = reference.reference_manifest(config)
    assert manifest["config"] == config and "generated scenes only" in manifest["note"]
    for branch in ("spd", "spgm"):
        path = reference.reference_checkpoint(branch, config)
        assert path.parent == reference.WEIGHTS and path.name == manifest["branches"][branch]["file"]
        assert path.name == f"{config}-{branch}.pt"


@pytest.mark.parametrize("config", reference.CONFIGS)
def test_the_checkpoints_load_into_todays_configuration(config: str) -> None:
    model_config = get_config(config)
    spd_path, spgm_path = (reference.reference_checkpoint(branch, config) for branch in ("spd", "spgm"))
    spd = load_model(spd_path, "spd", model_config)  # weights_only, config checked
    spgm_payload = load_checkpoint(spgm_path, branch="spgm", config=model_config)
    # `spgim export` accepts the pair: the SPGM names the shipped SPD by its weights' digest.
    assert spgm_payload["extra"]["spd_digest"] == weights_digest(spd.state_dict())
    assert load_checkpoint(spd_path)["extra"]["mask_sigma"] > 0


def test_a_configuration_without_a_reference_is_one_line() -> None:
    with pytest.raises(SpgimError, match="no reference checkpoints of the 'paper' configuration"):
        reference.reference_checkpoint("spd", "paper")


def test_a_changed_or_missing_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(reference.WEIGHTS, weights)
    monkeypatch.setattr(reference, "WEIGHTS", weights)
    assert reference.reference_checkpoint("spd") == weights / "live-spd.pt"
    data = bytearray((weights / "live-spd.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (weights / "live-spd.pt").write_bytes(bytes(data))
    with pytest.raises(SpgimError, match="is not the one shipped"):
        reference.reference_checkpoint("spd")
    (weights / "live-spgm.pt").unlink()
    with pytest.raises(SpgimError, match="cannot be read"):
        reference.reference_checkpoint("spgm")
    with pytest.raises(SpgimError, match="no reference caption"):
        reference.reference_checkpoint("caption")
    (weights / "live.json").write_text("{not json")
    with pytest.raises(SpgimError, match="unreadable"):
        reference.reference_manifest()


@pytest.mark.parametrize("config", reference.CONFIGS)
def test_the_shipped_pair_mattes_a_generated_clip(config: str) -> None:
    spd = load_model(reference.reference_checkpoint("spd", config), "spd").eval()
    spgm = load_model(reference.reference_checkpoint("spgm", config), "spgm").eval()
    images, alphas, _, _ = render_frames(frames=12, size=(768, 448), seed=5)
    scores = []
    for image, truth in zip(images[::4], alphas[::4], strict=True):
        small = cv2.resize(image, (384, 224), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
            alpha = spgm(x, *spd(x))[0, 0].numpy()
        target = cv2.resize(truth, (384, 224), interpolation=cv2.INTER_AREA) / 255.0
        union = ((alpha > 0.5) | (target > 0.5)).sum()
        scores.append(((alpha > 0.5) & (target > 0.5)).sum() / max(union, 1))
    print(f"{config} reference pair on a generated clip (seed 5): IoU {np.round(scores, 3).tolist()}")
    assert float(np.mean(scores)) >= MIN_CLIP_IOU[config], scores


@pytest.mark.parametrize("config", reference.CONFIGS)
def test_the_manifest_records_how_it_was_trained(config: str) -> None:
    manifest = json.loads(reference.manifest_path(config).read_text())
    assert f"scripts/train_reference.sh {config}" in manifest["command"]
    # The live SPGM learned half its guides from a moved truth, as a stream's propagated guide is.
    assert manifest["training"]["spgm"]["propagated_guide"] == (0.5 if config == "live" else 0.0)
