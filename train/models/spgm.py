"""SPGM, Situational Perception Guided Matting: 4-channel encoder, TST fusion, AFT decoder.

``SPGM.forward(image, mask, r2, r3, r4)`` reads the RGB image, SPD's saliency mask and SPD's
res2..res4 features. Training returns the alphas at output strides 8, 4 and 1; eval returns only
the full-resolution alpha. ``use_tst`` and ``use_aft`` give the paper's four ablation variants
(Table 4): Basic, Basic+AFT, SPG-IM w/o AFT, SPG-IM.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import TSTAttention
from .backbone import STAGE_NAMES, build_backbone
from .layers import ImageNormalize, alpha_head, clamp_unit, conv_bn_relu, resize_to, upsample2

ENCODER_STAGES = STAGE_NAMES[:3]  # SPGM's encoder stops after res4


class TST(nn.Module):
    """Textual Semantic Transformation (Eqs. 3-4) at one feature scale.

    Keys ``k`` from SPGM's feature and ``k'`` from SPD's are compared position by position;
    the attention ``softmax(k k'^T * scale)`` retrieves SPD's values ``v'``, which are concatenated
    with SPGM's own values ``v``. Output channels: ``2 * value_dim``.

    Args:
        channels: SPGM feature channels at this scale.
        guide_channels: SPD feature channels at this scale.
        key_dim: channels of ``k`` and ``k'``.
        value_dim: channels of ``v`` and ``v'``.
        scale: attention logit scale; ``None`` means ``1/sqrt(key_dim)``, which keeps fp16 logits in range.
        kv_stride: average-pool SPD's feature by this factor before ``k'``/``v'`` (1 = full resolution).
    """

    def __init__(
        self,
        channels: int,
        guide_channels: int,
        *,
        key_dim: int,
        value_dim: int,
        scale: float | None = None,
        kv_stride: int = 1,
    ) -> None:
        super().__init__()
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.value = nn.Conv2d(channels, value_dim, 1)
        self.guide_key = nn.Conv2d(guide_channels, key_dim, 1)
        self.guide_value = nn.Conv2d(guide_channels, value_dim, 1)
        self.scale = float(scale) if scale is not None else 1.0 / math.sqrt(key_dim)
        self.kv_stride = kv_stride
        self.attention = TSTAttention()
        self.out_channels = 2 * value_dim

    def forward(self, feature: Tensor, guide: Tensor) -> Tensor:
        if self.kv_stride > 1:
            guide = F.avg_pool2d(guide, self.kv_stride, ceil_mode=True)
        batch, _, height, width = feature.shape
        q = self.key(feature).flatten(2).transpose(1, 2)
        k = self.guide_key(guide).flatten(2).transpose(1, 2)
        v = self.guide_value(guide).flatten(2).transpose(1, 2)
        retrieved = self.attention(q, k, v, self.scale).transpose(1, 2)
        retrieved = retrieved.reshape(batch, -1, height, width)
        return torch.cat([self.value(feature), retrieved], dim=1)


def focal_mask(previous_alpha: Tensor) -> Tensor:
    """u_i of Eq. 5: 1 where ``0 < a_{i-1} < 1``, 0 where the previous alpha is exactly 0 or 1."""
    return ((previous_alpha > 0) & (previous_alpha < 1)).to(previous_alpha.dtype)


def focal_alpha(previous_alpha: Tensor) -> Tensor:
    """``a_{i-1} * u_i``: the previous alpha inside its focal region, 0 elsewhere.

    A select rather than a product with :func:`focal_mask`, so the exported graph has no Cast
    whose target type an fp16 conversion would have to rewrite.
    """
    inside = (previous_alpha > 0) & (previous_alpha < 1)
    return torch.where(inside, previous_alpha, torch.zeros_like(previous_alpha))


class AFTBlock(nn.Module):
    """One level of the Adaptive Focal Transformation refinement decoder.

    The fused feature is read twice: with the upsampled previous alpha through large receptive
    fields (an atrous 3x3 and a separable k x 1 / 1 x k pair) for the main body, and with the
    previous alpha restricted to its focal region through small 3x3 kernels for boundary detail.
    More convs fuse both; a 3x3 head predicts this level's alpha, clamped to [0, 1].
    """

    def __init__(self, in_channels: int, channels: int, *, dilation: int, separable: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(in_channels, channels, 1)
        self.body = nn.Sequential(
            conv_bn_relu(channels + 1, channels),
            conv_bn_relu(channels, channels, dilation=dilation),
            conv_bn_relu(channels, channels, (separable, 1)),
            conv_bn_relu(channels, channels, (1, separable)),
        )
        self.detail = nn.Sequential(conv_bn_relu(channels + 1, channels), conv_bn_relu(channels, channels))
        self.fuse = conv_bn_relu(2 * channels, channels)
        self.head = alpha_head(channels)

    def forward(self, feature: Tensor, previous_alpha: Tensor) -> tuple[Tensor, Tensor]:
        previous = resize_to(previous_alpha, feature)
        focus = resize_to(focal_alpha(previous_alpha), feature)
        x = self.reduce(feature)
        body = self.body(torch.cat([x, previous], dim=1))
        detail = self.detail(torch.cat([x, focus], dim=1))
        x = self.fuse(torch.cat([body, detail], dim=1))
        return x, clamp_unit(self.head(x), self.training)


class PlainBlock(nn.Module):
    """A decoder level without AFT: two 3x3 convs on the skip-connected feature, then a head."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(in_channels, channels), conv_bn_relu(channels, channels))
        self.head = alpha_head(channels)

    def forward(self, feature: Tensor, previous_alpha: Tensor) -> tuple[Tensor, Tensor]:
        x = self.convs(feature)
        return x, clamp_unit(self.head(x), self.training)


class ConvGRU(nn.Module):
    """A convolutional GRU cell: ``h' = (1 - z) h + z tanh(W [x, r h])`` with gates ``r, z = sigmoid(W [x, h])``."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.gates = nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.candidate = nn.Conv2d(2 * channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, state: Tensor) -> Tensor:
        reset, update = torch.sigmoid(self.gates(torch.cat([x, state], dim=1))).split(self.channels, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * state], dim=1)))
        return (1 - update) * state + update * candidate


class RecurrentUnit(nn.Module):
    """Memory for one decoder level: a :class:`ConvGRU` over the first ``state_channels`` of the level's
    feature, added back to the whole feature through a 1x1 convolution that starts at zero.

    At zero, the unit passes the feature through unchanged whatever its state, so a fresh recurrent model
    computes exactly what the model without it computes, and training starts from that model's quality.
    """

    def __init__(self, channels: int, state_channels: int) -> None:
        super().__init__()
        self.state_channels = state_channels
        self.gru = ConvGRU(state_channels)
        self.residual = nn.Conv2d(state_channels, channels, 1)
        nn.init.zeros_(self.residual.weight)
        bias = self.residual.bias
        assert bias is not None
        nn.init.zeros_(bias)

    def forward(self, feature: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        new_state = self.gru(feature[:, : self.state_channels], state)
        return feature + self.residual(new_state), new_state


# The decoder levels a recurrent SPGM may keep state at, with their output strides.
RECURRENT_LEVELS = {"os16": 16, "os8": 8, "os4": 4}


class SPGM(nn.Module):
    """The SPGM branch.

    Args:
        config: the ``"spgm"`` section of a model configuration. Its optional ``refine_stride``
            (default 1) is the output stride of the last decoder level: 1 runs it at the full input
            resolution (the paper); 2 runs it at the stem's resolution on the half-size image and
            upsamples its alpha bilinearly, a quarter of the cost of the decoder's most expensive level.
            Its optional ``recurrent`` (default None: stateless) gives the model memory across the frames of a
            stream: ``{"levels": [...], "fraction": f}`` puts a :class:`RecurrentUnit` over ``f`` of the channels
            of each named decoder level (of :data:`RECURRENT_LEVELS`), and the forward pass then takes and
            returns one state tensor per level (:attr:`state_names`, :meth:`state_shapes`).
        guide_channels: channels of SPD's ``(r2, r3, r4)``.
    """

    def __init__(self, config: dict[str, Any], guide_channels: list[int]) -> None:
        super().__init__()
        self.config = config
        self.use_tst = bool(config["use_tst"])
        self.use_aft = bool(config["use_aft"])
        self.refine_stride = int(config.get("refine_stride", 1))
        if self.refine_stride not in (1, 2):
            raise ValueError(f"refine_stride must be 1 or 2, got {self.refine_stride}")
        self.normalize = ImageNormalize()
        self.encoder = build_backbone(config, in_channels=4, num_stages=3, dilate_last=False)
        stage_channels = self.encoder.stage_channels
        unknown = set(config["tst_stages"]) - set(ENCODER_STAGES)
        if unknown:
            raise ValueError(f"tst_stages must be among {ENCODER_STAGES}, got {sorted(unknown)}")
        self.tst = nn.ModuleDict()
        fused_channels = list(stage_channels)
        if self.use_tst:
            for index, stage in enumerate(ENCODER_STAGES):
                if stage in config["tst_stages"]:
                    key_dim = max(8, int(stage_channels[index] * config["tst_key_ratio"]))
                    block = TST(
                        stage_channels[index],
                        guide_channels[index],
                        key_dim=key_dim,
                        value_dim=key_dim,
                        scale=config["tst_scale"],
                        kv_stride=config["tst_kv_stride"],
                    )
                    self.tst[stage] = block
                    fused_channels[index] = block.out_channels
        c16, c8, c4, c1 = config["decoder_channels"]
        self.bottleneck = nn.Sequential(
            *[conv_bn_relu(fused_channels[2] if i == 0 else c16, c16) for i in range(config["bottleneck_convs"])]
        )
        self.stem_fuse = conv_bn_relu(c4 + self.encoder.stem_channels, c1)
        level_inputs = (c16 + fused_channels[1], c8 + fused_channels[0], c1 + 3)
        level_channels = (c8, c4, c1)
        if self.use_aft:
            self.levels = nn.ModuleList(
                AFTBlock(i, c, dilation=d, separable=config["aft_separable"])
                for i, c, d in zip(level_inputs, level_channels, config["aft_dilations"], strict=True)
            )
        else:
            self.levels = nn.ModuleList(PlainBlock(i, c) for i, c in zip(level_inputs, level_channels, strict=True))
        self.recurrent = nn.ModuleDict()
        recurrent = config.get("recurrent")
        if recurrent:
            level_width = {"os16": c16, "os8": c8, "os4": c4}
            unknown = set(recurrent["levels"]) - set(RECURRENT_LEVELS)
            if unknown:
                raise ValueError(f"recurrent levels must be among {list(RECURRENT_LEVELS)}, got {sorted(unknown)}")
            for level in RECURRENT_LEVELS:  # one order, whatever the configuration lists
                if level in recurrent["levels"]:
                    width = level_width[level]
                    self.recurrent[level] = RecurrentUnit(width, max(1, round(width * float(recurrent["fraction"]))))

    @property
    def state_names(self) -> tuple[str, ...]:
        """The state tensors a recurrent model takes and returns, in order (``state_os16``, ...); empty otherwise."""
        return tuple(f"state_{level}" for level in self.recurrent)

    def state_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The shape of each state tensor for ``batch`` images of ``height`` x ``width`` (multiples of 32)."""
        shapes = []
        for level, unit in self.recurrent.items():
            assert isinstance(unit, RecurrentUnit)
            stride = RECURRENT_LEVELS[level]
            shapes.append((batch, unit.state_channels, height // stride, width // stride))
        return shapes

    def initial_state(self, image: Tensor) -> list[Tensor]:
        """Zero states for a stream that starts with ``image`` (what a new stream, a cut or a reset gets)."""
        batch, _, height, width = image.shape
        return [image.new_zeros(shape) for shape in self.state_shapes(batch, height, width)]

    def _remember(self, level: str, x: Tensor, states: list[Tensor], new_states: list[Tensor]) -> Tensor:
        """``x`` through the level's recurrent unit, if it has one (its new state appended to ``new_states``)."""
        if level not in self.recurrent:
            return x
        x, state = self.recurrent[level](x, states[len(new_states)])
        new_states.append(state)
        return x

    def forward(
        self, image: Tensor, mask: Tensor, r2: Tensor, r3: Tensor, r4: Tensor, *state: Tensor
    ) -> Tensor | tuple[Tensor, ...]:
        """Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1].
            mask: SPD's saliency mask ``(B, 1, H/4, W/4)``.
            r2, r3, r4: SPD's front-end features at output strides 4, 8, 16.
            state: a recurrent model's state tensors (:attr:`state_names`), the previous frame's; none given
                starts a stream (zeros). A stateless model takes none.

        Returns: in training ``(alpha_os8, alpha_os4, alpha)``, in eval ``alpha``; each in [0, 1],
        ``alpha`` is ``(B, 1, H, W)``. A recurrent model returns its new state tensors after them.
        """
        if state and len(state) != len(self.recurrent):
            raise ValueError(f"SPGM takes {len(self.recurrent)} state tensors ({self.state_names}), got {len(state)}")
        states = list(state) if state else self.initial_state(image)
        new_states: list[Tensor] = []
        rgb = self.normalize(image)
        full_mask = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=False)
        stem, *features = self.encoder(torch.cat([rgb, full_mask], dim=1))
        guides = (r2, r3, r4)
        for index, stage in enumerate(ENCODER_STAGES):
            if stage in self.tst:
                features[index] = self.tst[stage](features[index], guides[index])
        f2, f3, f4 = features
        x = self._remember("os16", self.bottleneck(f4), states, new_states)
        x, alpha_os8 = self.levels[0](torch.cat([upsample2(x), f3], dim=1), mask)
        x = self._remember("os8", x, states, new_states)
        x, alpha_os4 = self.levels[1](torch.cat([upsample2(x), f2], dim=1), alpha_os8)
        x = self._remember("os4", x, states, new_states)
        x = self.stem_fuse(torch.cat([upsample2(x), stem], dim=1))
        if self.refine_stride == 1:
            x, alpha = self.levels[2](torch.cat([upsample2(x), rgb], dim=1), alpha_os4)
        else:
            x, alpha = self.levels[2](torch.cat([x, F.avg_pool2d(rgb, 2)], dim=1), alpha_os4)
            alpha = resize_to(alpha, image)  # bilinear between values in [0, 1] stays in [0, 1]
        outputs = (alpha_os8, alpha_os4, alpha) if self.training else (alpha,)
        if not self.recurrent:
            return outputs if self.training else alpha
        return (*outputs, *new_states)
