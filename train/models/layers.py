"""Small building blocks shared by the SPD and SPGM branches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 3,
    dilation: int = 1,
) -> nn.Sequential:
    """Conv (size-preserving padding, no bias) + BatchNorm + ReLU."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, (kh, kw), padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def alpha_head(in_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """A conv to one channel whose bias starts at 0.5, inside the [0, 1] clamp its output goes through.

    Starting at 0 or 1 would put many outputs on the clamp's flat side, where they get no gradient.
    """
    head = nn.Conv2d(in_channels, 1, kernel_size, padding=kernel_size // 2)
    bias = head.bias
    assert bias is not None
    nn.init.constant_(bias, 0.5)
    return head


def clamp_unit(x: Tensor, training: bool) -> Tensor:
    """``x`` clamped to [0, 1]; in training the gradient passes as if unclamped (straight-through).

    A plain clamp gives no gradient outside [0, 1]: a head pushed below 0 everywhere early in
    training (the saliency target is mostly 0) then stays there for good, predicting 0 for every
    pixel. Passing the gradient through lets the loss pull it back wherever the target is above 0.
    Eval (and so every export) is the plain clamp.
    """
    if not training:
        return x.clamp(0.0, 1.0)
    return x + (x.clamp(0.0, 1.0) - x).detach()


class ImageNormalize(nn.Module):
    """RGB in [0, 1] to ImageNet-normalised input; part of the graph so every backend agrees."""

    mean: Tensor
    std: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        return (image - self.mean) / self.std


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def upsample2(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
