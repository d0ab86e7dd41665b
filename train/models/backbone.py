"""ResNet backbones built from torchvision's residual blocks, returning stage features.

Parameter names match ``torchvision.models.resnet50`` (``conv1``, ``bn1``, ``layer1``..), so
ImageNet weights a user has on disk load with ``load_state_dict(strict=False)``. Unlike
torchvision's constructor this one takes the number of input channels (SPGM reads RGB plus a
mask), a channel width (the tiny config shrinks it) and how many stages to build (SPGM stops
after res4).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

# Blocks per stage for each supported depth, and whether it uses bottleneck blocks.
RESNET_LAYOUTS: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
}

# Detectron / ResNet-paper names of the stages; res2 is torchvision's layer1.
STAGE_NAMES = ("res2", "res3", "res4", "res5")


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
        self.stem_channels = width
        self.stage_channels = [width * 2**i * block.expansion for i in range(num_stages)]
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
