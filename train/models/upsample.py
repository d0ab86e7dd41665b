"""Guided upsampling of the working-size alpha to the frame's full resolution (the fast guided filter).

He & Sun 2015 (arXiv 1505.00996), with a grey guide and nothing learned: the linear coefficients
``A = cov(I, p) / (var(I) + eps)`` and ``b = mean(p) - A * mean(I)`` are computed with box filters of
radius ``r`` at the LOW (working) resolution, box-filtered once more, upsampled bilinearly to the frame
and applied to the full-resolution grey guide: ``alpha = A_hi * I_hi + b_hi``. Where the frame has an
edge that the working size blurs, the alpha takes that edge back; in flat regions it is the bilinear
upsampling of the low-resolution alpha.

It is exported as a third small graph, ``upsample`` (:func:`spgim.export.io_spec.upsample_spec`), always
in fp32 (box-filter sums of squares want it), with the frame's height and width dynamic. Its full-size
input is the decoder's frame as it comes, ``(N, H, W, 3)`` uint8 RGB, so the host never converts a
720p frame to a float tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ITU-R BT.601 luma weights of R, G, B: the grey guide at both resolutions.
GREY_WEIGHTS = (0.299, 0.587, 0.114)
# Chosen on composites with sharp star-shaped edges (skimage photos over skimage photos, 1280x720 frame, JPEG q80,
# working alpha 512x288 area-downsampled from the truth and blurred by a 1 px Gaussian): mean absolute error
# against the sharp truth is 0.0043 for bilinear upsampling, 0.0039 for r=1 with eps 1e-5 or 1e-4, 0.0043 with
# eps 1e-3, 0.0052 with 1e-2; r=2 (0.0047..0.0066) and r=3 lose to bilinear at every eps. The second box filter
# blurs by the radius wherever the frame has no edge to follow, so the smallest radius wins at this working
# size. eps: smaller follows the frame's edges more closely; 1e-4 keeps the gain of 1e-5 with 10x the margin
# against guide noise (the guide's variance at a real edge is ~1e-2..1e-1; sensor noise of 3/255 is ~1e-5).
DEFAULT_RADIUS = 1
DEFAULT_EPS = 1e-4


class GuidedUpsampler(nn.Module):
    """``(alpha, image, frame) -> alpha_full``: the fast guided filter with a grey guide, no weights.

    Args:
        radius: box-filter radius at the working (low) resolution; the window is ``2r + 1`` pixels.
        eps: regularisation of ``A = cov / (var + eps)``; larger is smoother (closer to bilinear).
    """

    grey_lo: Tensor
    grey_hi: Tensor

    def __init__(self, radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        if radius < 1:
            raise ValueError(f"guided upsampling radius must be at least 1, not {radius}")
        if eps <= 0:
            raise ValueError(f"guided upsampling eps must be positive, not {eps}")
        self.radius = int(radius)
        self.eps = float(eps)
        # Borders are normalised by the count of pixels inside the image (count_include_pad=False).
        self.box = nn.AvgPool2d(2 * self.radius + 1, stride=1, padding=self.radius, count_include_pad=False)
        grey = torch.tensor(GREY_WEIGHTS, dtype=torch.float32)
        self.register_buffer("grey_lo", grey.view(1, 3, 1, 1), persistent=False)
        # The frame's weights include the 1/255 of uint8 -> [0, 1]: one MatMul over its channel axis.
        self.register_buffer("grey_hi", (grey / 255.0).view(3, 1), persistent=False)

    def forward(self, alpha: Tensor, image: Tensor, frame: Tensor) -> Tensor:
        """Upsample ``alpha`` to ``frame``'s size, guided by the frame.

        Args:
            alpha: ``(N, 1, h, w)`` float32 in [0, 1], the working-size alpha.
            image: ``(N, 3, h, w)`` float32 RGB in [0, 1], the working-size image that produced it.
            frame: ``(N, H, W, 3)`` uint8 RGB, the full-resolution frame (any H, W).

        Returns:
            ``(N, 1, H, W)`` float32 in [0, 1].
        """
        # The guide centred on 0.5: var = mean(I*I) - mean(I)^2 cancels less of float32's precision (the
        # variance that matters, ~1e-4 at eps 1e-4, is a difference of numbers ~0.01 instead of ~0.25).
        guide = (image * self.grey_lo).sum(dim=1, keepdim=True) - 0.5
        # The four low-resolution means in one pooling: I, p, I*p, I*I.
        means = self.box(torch.cat((guide, alpha, guide * alpha, guide * guide), dim=1))
        mean_i, mean_p, mean_ip, mean_ii = means[:, 0:1], means[:, 1:2], means[:, 2:3], means[:, 3:4]
        cov = mean_ip - mean_i * mean_p
        var = mean_ii - mean_i * mean_i
        a = cov / (var + self.eps)
        # b for the uncentred full-resolution guide: A * (I - 0.5) + b = A * I + (b - 0.5 * A).
        b = mean_p - a * (mean_i + 0.5)
        coefficients = self.box(torch.cat((a, b), dim=1))
        size = (frame.shape[1], frame.shape[2])
        high = F.interpolate(coefficients, size=size, mode="bilinear", align_corners=False)
        grey = torch.matmul(frame.to(torch.float32), self.grey_hi).permute(0, 3, 1, 2)
        return torch.clamp(high[:, 0:1] * grey + high[:, 1:2], 0.0, 1.0)


def upsample_flops(height: int, width: int, frame_height: int, frame_width: int, radius: int) -> int:
    """Approximate floating-point operations of one :class:`GuidedUpsampler` call (batch 1).

    Low resolution: the grey guide, four products, six box filters of ``(2r + 1)^2`` adds each and the
    coefficients; full resolution: the grey guide, two bilinear taps (4 multiply-adds each), the
    multiply-add and the clamp.
    """
    window = (2 * radius + 1) ** 2
    low = height * width * (5 + 3 + 6 * window + 8)
    high = frame_height * frame_width * (6 + 2 * 8 + 2 + 2)
    return int(low + high)
