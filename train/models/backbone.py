"""Backbones returning stage features: ResNet (torchvision's residual blocks) and MobileNetV3.

Both share one interface: keyword arguments ``in_channels``, a width knob, ``num_stages`` and
``dilate_last``; attributes ``stem_channels``, ``stage_channels``, ``stage_strides`` and
``num_stages``; ``forward(x)`` returns the stem's feature at output stride 2 followed by one
feature per stage (OS 4, 8, 16 and, with four stages, 32 or a dilated 16); ``forward_stem(x)``.
:func:`build_backbone` picks one from a configuration section's ``"encoder"`` key, and
:func:`backbone_channels` gives its channels without building it.

Parameter names match torchvision's models (``torchvision.models.resnet50``: ``conv1``, ``bn1``,
``layer1``..; ``mobilenet_v3_large``: ``features.0``..), so ImageNet weights a user has on disk
load with ``load_state_dict(strict=False)``. Unlike torchvision's constructors these take the
number of input channels (SPGM reads RGB plus a mask), a channel width (small configs shrink it)
and how many stages to build (SPGM stops after res4).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from torch import Tensor, nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import Conv2dNormActivation

# Blocks per stage for each supported depth, and whether it uses bottleneck blocks.
RESNET_LAYOUTS: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
}

# Detectron / ResNet-paper names of the stages; res2 is torchvision's layer1.
STAGE_NAMES = ("res2", "res3", "res4", "res5")

# The values of a configuration section's "encoder" key; absent means "resnet".
ENCODERS = ("resnet", "mobilenetv3")


def resnet_channels(depth: int, width: int, num_stages: int = 4) -> tuple[int, list[int]]:
    """(stem channels, stage channels) of :class:`ResNetBackbone`."""
    if depth not in RESNET_LAYOUTS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    expansion = Bottleneck.expansion if RESNET_LAYOUTS[depth][1] else BasicBlock.expansion
    return width, [width * 2**i * expansion for i in range(num_stages)]


class ResNetBackbone(nn.Module):
    """A ResNet trunk without its classifier.

    Args:
        depth: 18, 34 or 50.
        in_channels: channels of the input image (3 for RGB, 4 for RGB + mask).
        width: channels of the stem; 64 is torchvision's ResNet, smaller values shrink every stage.
        num_stages: how many residual stages to build, 1..4 (3 stops after res4).
        dilate_last: run the last stage (res5) with dilation 2 instead of stride 2, so the
            trunk ends at output stride 16 (DeepLabV3's OS16).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        in_channels: int = 3,
        width: int = 64,
        num_stages: int = 4,
        dilate_last: bool = False,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be 1..4, got {num_stages}")
        blocks, bottleneck = RESNET_LAYOUTS[depth]
        block: type[BasicBlock] | type[Bottleneck] = Bottleneck if bottleneck else BasicBlock
        self.depth = depth
        self.num_stages = num_stages
        self._inplanes = width
        self._dilation = 1
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stages = [f"layer{i + 1}" for i in range(num_stages)]
        for index in range(num_stages):
            dilate = dilate_last and index == 3
            layer = self._make_layer(block, width * 2**index, blocks[index], 1 if index == 0 else 2, dilate)
            self.add_module(f"layer{index + 1}", layer)
        self.stem_channels, self.stage_channels = resnet_channels(depth, width, num_stages)
        self.stage_strides = [4 * 2**i for i in range(num_stages)]
        if dilate_last and num_stages == 4:
            self.stage_strides[3] = 16
        del self._inplanes, self._dilation

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        count: int,
        stride: int,
        dilate: bool,
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [_make_block(block, self._inplanes, planes, stride, downsample, previous_dilation)]
        self._inplanes = planes * block.expansion
        layers += [_make_block(block, self._inplanes, planes, 1, None, self._dilation) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward_stem(self, x: Tensor) -> Tensor:
        """conv1 + bn + relu: features at output stride 2, before the max-pool."""
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Returns the stem's OS2 feature followed by one feature per built stage."""
        stem = self.forward_stem(x)
        features = [stem]
        x = self.maxpool(stem)
        for name in self.stages:
            x = getattr(self, name)(x)
            features.append(x)
        return features


def _make_block(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    stride: int,
    downsample: nn.Module | None,
    dilation: int,
) -> nn.Module:
    if block is Bottleneck:
        return Bottleneck(inplanes, planes, stride, downsample, dilation=dilation)
    # torchvision's BasicBlock refuses dilation; its 3x3 convs take it once built (padding = dilation
    # keeps the size), which lets the small ResNet-18/34 configs run at OS16 like ResNet-50.
    basic = BasicBlock(inplanes, planes, stride, downsample)
    if dilation > 1:
        for conv in (basic.conv1, basic.conv2):
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)
    return basic


class MobileNetBlock(NamedTuple):
    """One row of MobileNetV3's Tables 1-2: an inverted residual block at width multiplier 1."""

    kernel: int
    expanded: int
    out: int
    se: bool
    activation: str  # "RE" (ReLU) or "HS" (hard-swish)
    stride: int


# torchvision's mobilenet_v3_large / mobilenet_v3_small rows after the first conv (16 channels, stride 2).
# A stride-2 block starts a stage; stride-1 blocks before the first one belong to the stem (output stride 2).
MOBILENET_LAYOUTS: dict[str, tuple[MobileNetBlock, ...]] = {
    "large": (
        MobileNetBlock(3, 16, 16, False, "RE", 1),
        MobileNetBlock(3, 64, 24, False, "RE", 2),  # OS4
        MobileNetBlock(3, 72, 24, False, "RE", 1),
        MobileNetBlock(5, 72, 40, True, "RE", 2),  # OS8
        MobileNetBlock(5, 120, 40, True, "RE", 1),
        MobileNetBlock(5, 120, 40, True, "RE", 1),
        MobileNetBlock(3, 240, 80, False, "HS", 2),  # OS16
        MobileNetBlock(3, 200, 80, False, "HS", 1),
        MobileNetBlock(3, 184, 80, False, "HS", 1),
        MobileNetBlock(3, 184, 80, False, "HS", 1),
        MobileNetBlock(3, 480, 112, True, "HS", 1),
        MobileNetBlock(3, 672, 112, True, "HS", 1),
        MobileNetBlock(5, 672, 160, True, "HS", 2),  # OS32
        MobileNetBlock(5, 960, 160, True, "HS", 1),
        MobileNetBlock(5, 960, 160, True, "HS", 1),
    ),
    "small": (
        MobileNetBlock(3, 16, 16, True, "RE", 2),  # OS4
        MobileNetBlock(3, 72, 24, False, "RE", 2),  # OS8
        MobileNetBlock(3, 88, 24, False, "RE", 1),
        MobileNetBlock(5, 96, 40, True, "HS", 2),  # OS16
        MobileNetBlock(5, 240, 40, True, "HS", 1),
        MobileNetBlock(5, 240, 40, True, "HS", 1),
        MobileNetBlock(5, 120, 48, True, "HS", 1),
        MobileNetBlock(5, 144, 48, True, "HS", 1),
        MobileNetBlock(5, 288, 96, True, "HS", 2),  # OS32
        MobileNetBlock(5, 576, 96, True, "HS", 1),
        MobileNetBlock(5, 576, 96, True, "HS", 1),
    ),
}
MOBILENET_STEM = 16


def _mobilenet_stages(arch: str, num_stages: int) -> list[list[MobileNetBlock]]:
    """The layout's blocks grouped as [stem blocks, stage 1 blocks, ..] up to ``num_stages``."""
    if arch not in MOBILENET_LAYOUTS:
        raise ValueError(f"MobileNetV3 arch must be one of {sorted(MOBILENET_LAYOUTS)}, got {arch!r}")
    if not 1 <= num_stages <= 4:
        raise ValueError(f"num_stages must be 1..4, got {num_stages}")
    groups: list[list[MobileNetBlock]] = [[]]
    for row in MOBILENET_LAYOUTS[arch]:
        if row.stride == 2:
            groups.append([])
        groups[-1].append(row)
    return groups[: num_stages + 1]


def mobilenet_channels(arch: str, width_mult: float, num_stages: int = 4) -> tuple[int, list[int]]:
    """(stem channels, stage channels) of :class:`MobileNetV3Backbone`."""
    adjust = partial(InvertedResidualConfig.adjust_channels, width_mult=width_mult)
    groups = _mobilenet_stages(arch, num_stages)
    stem = adjust(groups[0][-1].out) if groups[0] else adjust(MOBILENET_STEM)
    return stem, [adjust(group[-1].out) for group in groups[1:]]


class MobileNetV3Backbone(nn.Module):
    """A MobileNetV3 trunk (torchvision's inverted residual blocks, SE and hard-swish) without its head.

    Stages split where the stride doubles, as in torchvision's LR-ASPP: the first conv and any
    stride-1 blocks after it are the stem (OS2), then stages at OS 4, 8, 16 and 32 ("res2".."res5").
    The last 1x1 conv of the classifier (to 960/576 channels) is not built.

    Args:
        arch: ``"large"`` or ``"small"`` (MobileNetV3 Tables 1 and 2).
        in_channels: channels of the input image (3 for RGB, 4 for RGB + mask).
        width_mult: channel multiplier, every width rounded to a multiple of 8 as torchvision does.
        num_stages: how many stages to build, 1..4.
        dilate_last: run the last stage with dilation 2 instead of stride 2 (ends at OS16).
    """

    def __init__(
        self,
        *,
        arch: str = "large",
        in_channels: int = 3,
        width_mult: float = 1.0,
        num_stages: int = 4,
        dilate_last: bool = False,
    ) -> None:
        super().__init__()
        groups = _mobilenet_stages(arch, num_stages)
        self.arch = arch
        self.num_stages = num_stages
        adjust = partial(InvertedResidualConfig.adjust_channels, width_mult=width_mult)
        # torchvision's eps, so ImageNet statistics keep their meaning; but PyTorch's default momentum (0.1), not
        # torchvision's 0.01, which is for fine-tuning from ImageNet: trained from scratch for a few hundred steps
        # (the demo), the running statistics were still mostly their initial values and eval-mode SPD gave ~0.
        norm: Callable[..., nn.Module] = partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
        channels = adjust(MOBILENET_STEM)
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                in_channels, channels, kernel_size=3, stride=2, norm_layer=norm, activation_layer=nn.Hardswish
            )
        ]
        bounds: list[int] = []  # index into ``features`` one past each group's last layer
        for index, group in enumerate(groups):
            dilation = 2 if dilate_last and index == 4 else 1
            for row in group:
                config = InvertedResidualConfig(
                    channels, row.kernel, row.expanded, row.out, row.se, row.activation, row.stride, dilation, 1.0
                )
                # Widths go through the multiplier here, not in InvertedResidualConfig, so the input
                # channels (already adjusted) are not rounded twice.
                config.expanded_channels, config.out_channels = adjust(row.expanded), adjust(row.out)
                layers.append(InvertedResidual(config, norm))
                channels = config.out_channels
            bounds.append(len(layers))
        self.features = nn.Sequential(*layers)
        self._bounds = bounds
        self.stem_channels, self.stage_channels = mobilenet_channels(arch, width_mult, num_stages)
        self.stage_strides = [4 * 2**i for i in range(num_stages)]
        if dilate_last and num_stages == 4:
            self.stage_strides[3] = 16
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_stem(self, x: Tensor) -> Tensor:
        """First conv and the stride-1 blocks after it: features at output stride 2."""
        for layer in self.features[: self._bounds[0]]:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> list[Tensor]:
        """Returns the stem's OS2 feature followed by one feature per built stage."""
        x = self.forward_stem(x)
        features = [x]
        for start, end in zip(self._bounds[:-1], self._bounds[1:], strict=True):
            for layer in self.features[start:end]:
                x = layer(x)
            features.append(x)
        return features


Backbone = ResNetBackbone | MobileNetV3Backbone


def backbone_channels(section: dict[str, Any], *, num_stages: int = 4) -> tuple[int, list[int]]:
    """(stem channels, stage channels) of the backbone :func:`build_backbone` makes, without building it."""
    encoder = section.get("encoder", "resnet")
    if encoder == "resnet":
        return resnet_channels(section["depth"], section["width"], num_stages)
    if encoder == "mobilenetv3":
        return mobilenet_channels(section["arch"], section["width_mult"], num_stages)
    raise ValueError(f"unknown encoder {encoder!r}; expected one of {ENCODERS}")


def build_backbone(section: dict[str, Any], *, in_channels: int, num_stages: int, dilate_last: bool) -> Backbone:
    """The backbone a configuration section (``"spd"`` or ``"spgm"``) asks for.

    ``section["encoder"]`` is ``"resnet"`` (the default when absent; reads ``depth`` and ``width``)
    or ``"mobilenetv3"`` (reads ``arch`` and ``width_mult``).
    """
    encoder = section.get("encoder", "resnet")
    if encoder == "resnet":
        return ResNetBackbone(
            depth=section["depth"],
            in_channels=in_channels,
            width=section["width"],
            num_stages=num_stages,
            dilate_last=dilate_last,
        )
    if encoder == "mobilenetv3":
        return MobileNetV3Backbone(
            arch=section["arch"],
            in_channels=in_channels,
            width_mult=section["width_mult"],
            num_stages=num_stages,
            dilate_last=dilate_last,
        )
    raise ValueError(f"unknown encoder {encoder!r}; expected one of {ENCODERS}")
