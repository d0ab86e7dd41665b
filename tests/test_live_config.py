"""The ``live`` configuration: MobileNetV3 encoders, shapes at 512x288, one training step per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from requirements import unavailable

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.stream_defaults import CONFIGURATION_STREAMS, StreamDefaults
from spgim.train.checkpoint import load_checkpoint, load_model
from spgim.train.config import MODEL_CONFIGS, get_config, stream_defaults
from spgim.train.data.synth import generate_dataset
from spgim.train.distributed import DistInfo
from spgim.train.loop import run_training
from spgim.train.models import (
    SPD,
    SPGM,
    CaptionModel,
    MobileNetV3Backbone,
    ResNetBackbone,
    backbone_channels,
    build_backbone,
    build_model,
    guide_channels,
)
from spgim.train.recipes import get_recipe
from spgim.train.stages import SPDStage, SPGMStage

HEIGHT, WIDTH = 288, 512


@pytest.fixture(scope="module")
def live() -> dict:
    return get_config("live")


def test_live_builds_every_branch_with_mobilenet_encoders(live: dict) -> None:
    torch.manual_seed(0)
    caption, spd, spgm = (build_model(branch, live) for branch in ("caption", "spd", "spgm"))
    assert isinstance(caption, CaptionModel) and isinstance(spd, SPD) and isinstance(spgm, SPGM)
    assert isinstance(caption.backbone, MobileNetV3Backbone) and isinstance(spd.backbone, MobileNetV3Backbone)
    assert isinstance(spgm.encoder, MobileNetV3Backbone) and spgm.encoder.num_stages == 3
    # Caption pre-training hands SPD its front-end under the same names (dilation has no weights).
    spd.backbone.load_state_dict(caption.backbone.state_dict())
    assert spd.backbone.stage_strides == [4, 8, 16, 16] and caption.backbone.stage_strides == [4, 8, 16, 32]
    tokens = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    loss = caption(torch.rand(2, 3, 64, 64), tokens)
    loss.backward()
    assert torch.isfinite(loss)


def test_live_forward_shapes_at_512x288(live: dict) -> None:
    spd, spgm = build_model("spd", live).eval(), build_model("spgm", live).eval()
    image = torch.rand(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        mask, r2, r3, r4 = spd(image)
        assert mask.shape == (1, 1, HEIGHT // 4, WIDTH // 4)
        strides = (4, 8, 16)
        for feature, channels, stride in zip((r2, r3, r4), spd.feature_channels, strides, strict=True):
            assert feature.shape == (1, channels, HEIGHT // stride, WIDTH // stride)
        alpha = spgm(image, mask, r2, r3, r4)
        assert isinstance(alpha, torch.Tensor) and alpha.shape == (1, 1, HEIGHT, WIDTH)
        assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
        os8, os4, os1 = spgm.train()(image, mask, r2, r3, r4)
    assert os8.shape[2:] == (HEIGHT // 8, WIDTH // 8)
    assert os4.shape[2:] == (HEIGHT // 4, WIDTH // 4)
    assert os1.shape[2:] == (HEIGHT, WIDTH)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_guide_channels_match_the_built_spd(name: str) -> None:
    config = get_config(name)
    with torch.device("meta"):
        spd = build_model("spd", config)
        spgm = build_model("spgm", config)
    assert guide_channels(config) == spd.feature_channels
    for section, model in (("spd", spd.backbone), ("spgm", spgm.encoder)):
        stem, stages = backbone_channels(config[section], num_stages=model.num_stages)
        assert (stem, stages) == (model.stem_channels, model.stage_channels)


@pytest.mark.parametrize(("encoder", "knobs"), [("resnet", {"depth": 18, "width": 16}), ("mobilenetv3", {})])
@pytest.mark.parametrize("num_stages", [3, 4])
@pytest.mark.parametrize("dilate_last", [False, True])
def test_backbones_share_one_interface(encoder: str, knobs: dict, num_stages: int, dilate_last: bool) -> None:
    section = {"encoder": encoder, "arch": "small", "width_mult": 0.5, **knobs}
    backbone = build_backbone(section, in_channels=4, num_stages=num_stages, dilate_last=dilate_last)
    assert isinstance(backbone, ResNetBackbone if encoder == "resnet" else MobileNetV3Backbone)
    x = torch.rand(1, 4, 64, 96)
    with torch.no_grad():
        stem, *stages = backbone.eval()(x)
        assert torch.equal(backbone.forward_stem(x), stem)
    assert stem.shape == (1, backbone.stem_channels, 32, 48)
    assert len(stages) == backbone.num_stages == num_stages == len(backbone.stage_strides)
    for feature, channels, stride in zip(stages, backbone.stage_channels, backbone.stage_strides, strict=True):
        assert feature.shape == (1, channels, 64 // stride, 96 // stride)
    expected = [4, 8, 16, 16 if dilate_last else 32][:num_stages]
    assert backbone.stage_strides == expected


def test_encoder_key_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        build_backbone({"encoder": "vgg"}, in_channels=3, num_stages=4, dilate_last=False)
    with pytest.raises(ValueError, match="refine_stride"):
        SPGM({**get_config("live")["spgm"], "refine_stride": 4}, guide_channels(get_config("live")))


def test_stream_section_and_defaults() -> None:
    for name in MODEL_CONFIGS:  # each configuration's section reads back as the design it was made from
        assert stream_defaults(get_config(name)) == CONFIGURATION_STREAMS[name]
    live, tiny, paper = (stream_defaults(get_config(name)) for name in ("live", "tiny", "paper"))
    assert live.keyframe_interval > 0 and (live.work_size, tiny.work_size, paper.work_size) == (320, 320, 512)
    assert tiny.keyframe_interval == paper.keyframe_interval == 0
    # A checkpoint stored before the section had every key: the absent ones are StreamDefaults' own.
    older = {"name": "tiny", "stream": {"work_size": 320, "keyframe_interval": 0}}
    assert stream_defaults(older) == StreamDefaults(work_size=320)
    assert stream_defaults({"name": "x"}) == StreamDefaults()
    overridden = get_config("live", stream__work_size=512, spgm__tst_kv_stride=2)
    assert stream_defaults(overridden).work_size == 512 and overridden["spgm"]["tst_kv_stride"] == 2
    assert MODEL_CONFIGS["live"]["stream"]["work_size"] != 512  # the deep copy left the table alone
    with pytest.raises(SpgimError, match=r"configuration 'live'.s stream section: work size must be at least 32"):
        stream_defaults(get_config("live", stream__work_size=16))


def test_summary_command_for_live(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--config", "live", "--size", f"{WIDTH}x{HEIGHT}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"] == "live"
    assert 0 < summary["params"]["spgm"] < summary["params"]["spd"] < summary["params"]["total"]
    assert 0 < summary["flops"]["spgm"] < summary["flops"]["spd"]
    assert main(["summary", "--config", "live"]) == 0
    assert "SPG-IM live config" in capsys.readouterr().out


def test_one_training_step_of_spd_and_spgm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_dataset(data, count=5, size=64, seed=1, test_fraction=0.2, workers=1)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    small = {"crop": 64, "batch_size": 2, "bg_per_fg": 1, "epochs": 1, "max_steps_per_epoch": 1}
    torch.manual_seed(0)
    spd_stage = SPDStage(data=data, config_name="live", recipe=get_recipe("tiny", "spd", **small), info=info, seed=0)
    spd_before = {k: v.clone() for k, v in spd_stage.model.state_dict().items()}
    run_training(spd_stage, out_dir=tmp_path / "spd", info=info, seed=0, workers=0)
    spd_path = tmp_path / "spd" / "last.pt"
    assert load_checkpoint(spd_path, branch="spd")["config"]["name"] == "live"
    spd_after = load_model(spd_path, "spd").state_dict()
    assert any(not torch.equal(spd_before[k], spd_after[k]) for k in spd_before if k.endswith("weight"))

    recipe = get_recipe("tiny", "spgm", **small)
    spgm_stage = SPGMStage(data=data, config_name="live", recipe=recipe, info=info, seed=0, spd_path=spd_path)
    spgm_before = {k: v.clone() for k, v in spgm_stage.model.state_dict().items()}
    run_training(spgm_stage, out_dir=tmp_path / "spgm", info=info, seed=0, workers=0)
    spgm_after = load_model(tmp_path / "spgm" / "last.pt", "spgm").state_dict()
    assert any(not torch.equal(spgm_before[k], spgm_after[k]) for k in spgm_before if k.endswith("weight"))
    records = [json.loads(line) for line in (tmp_path / "spgm" / "log.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["loss"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "precision", "tolerance"),
    [
        ("onnxruntime", "fp32", 1e-4),
        ("onnxruntime", "fp16", 1e-2),
        ("onnxruntime-twin", "fp32", 1e-4),
        ("openvino", "fp32", 1e-4),
        ("torchscript", "fp32", 1e-4),
        ("aotinductor", "fp32", 1e-4),
    ],
)
def test_live_export_runs_on_every_cpu_backend_like_eager(
    live_export: tuple, backend: str, precision: str, tolerance: float
) -> None:
    import numpy as np

    from spgim.runtime.artifacts import load_artifacts
    from spgim.runtime.matting import Matter
    from spgim.runtime.registry import BACKENDS, runnable
    from spgim.train.models.upsample import GuidedUpsampler

    folder, spd, spgm = live_export
    reason = runnable(BACKENDS[backend], load_artifacts(folder), precision)
    if reason is not None:
        unavailable(reason)  # every CPU backend in fp32 runs on the build machines
    matter = Matter(folder, backend=backend, precision=precision, keyframe_interval=0, upsampling="guided")
    assert (matter.work_size, matter.scheduler.policy.guide_sigma) == (320, 1.0)  # the export's stream entry
    assert Matter(folder, backend=backend, precision=precision).keyframe_interval == 8
    import cv2

    frames = np.random.default_rng(5).integers(0, 256, (1, 360, 640, 3), dtype=np.uint8)  # works at 320x192
    image = cv2.resize(frames[0], (320, 192), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None]
    image = torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
    with torch.no_grad():
        expected = GuidedUpsampler()(spgm(image, *spd(image)), image, torch.from_numpy(frames))[:, 0].numpy()
    error = np.abs(matter(frames) - expected)
    print(f"{matter.backend_name}: max {error.max():.2e} mean {error.mean():.2e}")
    assert (error.max() if precision == "fp32" else error.mean()) < tolerance
