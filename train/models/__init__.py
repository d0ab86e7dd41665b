"""The SPG-IM model: SPD (+ its captioning pre-training head) and SPGM, built from a config dict."""

from __future__ import annotations

from typing import Any

from torch import nn

from .attention import ATTENTION_IMPLS, TSTAttention, attention_impl
from .backbone import MobileNetV3Backbone, ResNetBackbone, backbone_channels, build_backbone
from .caption import CaptionHead, CaptionModel
from .spd import SPD, saliency_target
from .spgm import SPGM, TST, focal_mask

BRANCHES = ("caption", "spd", "spgm")


def guide_channels(config: dict[str, Any]) -> list[int]:
    """Channels of SPD's (r2, r3, r4) for a configuration, without building SPD (any ``spd.encoder``)."""
    return backbone_channels(config["spd"])[1][:3]


def build_model(branch: str, config: dict[str, Any]) -> nn.Module:
    """Build ``"caption"``, ``"spd"`` or ``"spgm"`` from a whole model configuration."""
    if branch == "caption":
        return CaptionModel(config)
    if branch == "spd":
        return SPD(config["spd"])
    if branch == "spgm":
        return SPGM(config["spgm"], guide_channels(config))
    raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")


__all__ = [
    "ATTENTION_IMPLS",
    "BRANCHES",
    "SPD",
    "SPGM",
    "TST",
    "CaptionHead",
    "CaptionModel",
    "MobileNetV3Backbone",
    "ResNetBackbone",
    "TSTAttention",
    "attention_impl",
    "backbone_channels",
    "build_backbone",
    "build_model",
    "focal_mask",
    "guide_channels",
    "saliency_target",
]
