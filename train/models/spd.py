"""SPD, Situational Perception Distillation: ResNet (or MobileNetV3) front-end + DeepLabV3 ASPP + decoder.

``SPD.forward(image) -> (mask, r2, r3, r4)``: the saliency mask M_s at output stride 4, in
[0, 1], and the front-end's res2, res3, res4 features (output strides 4, 8, 16) that SPGM's TST
attends to. The outputs are explicit so an exported SPD engine hands them straight to SPGM.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone, build_backbone
from .layers import ImageNormalize, alpha_head, clamp_unit, conv_bn_relu, resize_to


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling: 1x1, three atrous 3x3, image pooling, projection."""

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(in_channels, channels, 1)])
        self.branches.extend(conv_bn_relu(in_channels, channels, 3, dilation=r) for r in rates)
        # No BatchNorm after the pooled 1x1 conv: a 1x1 map would make BN fail at batch size 1.
        self.pooling = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout(0.1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pooling(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class SPDDecoder(nn.Module):
    """DeepLabV3+-style decoder: ASPP output upsampled to OS4, fused with reduced res2 features."""

    def __init__(self, aspp_channels: int, low_channels: int, low_reduced: int, channels: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(low_channels, low_reduced, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(aspp_channels + low_reduced, channels),
            conv_bn_relu(channels, channels),
        )
        self.head = alpha_head(channels, 1)

    def forward(self, aspp: Tensor, low: Tensor) -> Tensor:
        x = torch.cat([resize_to(aspp, low), self.reduce(low)], dim=1)
        return clamp_unit(self.head(self.fuse(x)), self.training)


def build_front_end(config: dict[str, Any], *, dilate_last: bool) -> Backbone:
    """The SPD visual front-end (``config["encoder"]``, ResNet by default); captioning runs it
    undilated (7x7 grid at 224 px), SPD at OS16."""
    return build_backbone(config, in_channels=3, num_stages=4, dilate_last=dilate_last)


class SPD(nn.Module):
    """The SPD branch. ``config`` is the ``"spd"`` section of a model configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.normalize = ImageNormalize()
        self.backbone = build_front_end(config, dilate_last=True)
        channels = self.backbone.stage_channels
        self.aspp = ASPP(channels[3], config["aspp_channels"], tuple(config["aspp_rates"]))
        self.decoder = SPDDecoder(
            config["aspp_channels"], channels[0], config["decoder_low_channels"], config["decoder_channels"]
        )

    @property
    def feature_channels(self) -> list[int]:
        """Channels of (r2, r3, r4)."""
        return self.backbone.stage_channels[:3]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Args: image ``(B, 3, H, W)`` RGB in [0, 1], H and W multiples of 32.

        Returns: ``(mask, r2, r3, r4)``; mask is ``(B, 1, H/4, W/4)`` in [0, 1].
        """
        _, r2, r3, r4, r5 = self.backbone(self.normalize(image))
        mask = self.decoder(self.aspp(r5), r2)
        return mask, r2, r3, r4


def saliency_target(alpha: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """S(a*) of Eq. 2: the ground-truth alpha downsampled to the mask's size, then Gaussian-blurred.

    Args:
        alpha: ``(B, 1, H, W)`` ground truth in [0, 1].
        size: the mask's ``(h, w)``.
        sigma: Gaussian standard deviation in mask pixels; 0 disables the blur.
    """
    small = F.interpolate(alpha, size=size, mode="area")
    if sigma <= 0:
        return small
    radius = max(1, round(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=alpha.dtype, device=alpha.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(small, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))
