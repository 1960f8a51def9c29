"""RatLesNetV2 (Valverde et al. 2020, Front. Neurosci. 14:610239), able to load the authors' checkpoints.

The layer names, shapes and data flow follow the authors' published model so that their state dicts load with
``strict=True``: a 1x1x1 input convolution, three full-width residual blocks with max pooling in between, a 1x1x1
bottleneck at the lowest resolution, then three double-width residual blocks, each after trilinear upsampling to
the matching encoder size and concatenation with that encoder output, each followed by a 1x1x1 bottleneck.

Axis order. Our volumes are RAS arrays ``(B, C, x, y, z)`` with ``y`` the thick-slice (coronal) axis. The authors
fed ``(B, C, slices, rows, columns)`` of coronal slices, i.e. ``(y, z, x)`` in our terms. ``forward`` permutes
once on the way in (:data:`TO_AUTHORS_AXES`) and once on the way out (:data:`FROM_AUTHORS_AXES`), so pretrained
3x3x3 kernels see the slice axis where they were trained to see it. No flips are applied: the authors' in-plane
orientation is not published.

The authors ended in a softmax; this module returns the logits, ``softmax(logits, dim=1)`` is their output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RatLesNetV2", "ResidualBlock", "Bottleneck", "ENCODER_DEPTH", "TO_AUTHORS_AXES", "FROM_AUTHORS_AXES"]

# (B, C, x, y, z) -> (B, C, y, z, x): slice axis first, as the authors' (B, C, slices, H, W).
TO_AUTHORS_AXES = (0, 1, 3, 4, 2)
# (B, C, y, z, x) -> (B, C, x, y, z).
FROM_AUTHORS_AXES = (0, 1, 4, 2, 3)

# ``freeze_depth = ENCODER_DEPTH`` freezes exactly the encoder: conv1, block1, block2, block3, bottleneck1.
ENCODER_DEPTH = 5


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(bn(relu(conv(bn(relu(x))))))``, 3x3x3, channels kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm3d(channels),
            nn.Conv3d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.BatchNorm3d(channels),
            nn.Conv3d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.seq(x)


class Bottleneck(nn.Module):
    """ReLU, BatchNorm, then a 1x1x1 convolution that changes the channel count."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm3d(in_channels),
            nn.Conv3d(in_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


def _down(x: torch.Tensor) -> torch.Tensor:
    """The authors' 2x max pooling; ``ceil_mode`` keeps the last voxel of odd sizes."""
    return F.max_pool3d(x, kernel_size=2, ceil_mode=True)


def _up_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Trilinear upsampling of ``x`` to ``skip``'s exact size, then concatenation ``[x, skip]`` on channels."""
    x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
    return torch.cat([x, skip], dim=1)


class RatLesNetV2(nn.Module):
    """RatLesNetV2 for 3D volumes of any size.

    Args:
        in_channels: input channels (the authors used 1, a T2-weighted image).
        out_channels: output channels (2: background, lesion).
        filters: width of the encoder; the decoder is twice as wide. 32 gives the published 837,026 parameters.

    Input ``(B, in_channels, x, y, z)`` with ``y`` the slice axis; output logits ``(B, out_channels, x, y, z)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, filters: int = 32) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("filters", filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.filters = filters
        wide = 2 * filters
        self.conv1 = nn.Conv3d(in_channels, filters, kernel_size=1)
        self.block1 = ResidualBlock(filters)
        self.block2 = ResidualBlock(filters)
        self.block3 = ResidualBlock(filters)
        self.bottleneck1 = Bottleneck(filters, filters)
        self.block4 = ResidualBlock(wide)
        self.bottleneck2 = Bottleneck(wide, filters)
        self.block5 = ResidualBlock(wide)
        self.bottleneck3 = Bottleneck(wide, filters)
        self.block6 = ResidualBlock(wide)
        self.bottleneck4 = Bottleneck(wide, out_channels)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks in the order data flows through them; the first :data:`ENCODER_DEPTH` are the encoder."""
        names = (
            "conv1", "block1", "block2", "block3", "bottleneck1",
            "block4", "bottleneck2", "block5", "bottleneck3", "block6", "bottleneck4",
        )  # fmt: skip
        return [(name, getattr(self, name)) for name in names]

    def forward_authors_order(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' forward pass on ``(B, C, slices, rows, columns)``, returning logits in that order."""
        x = self.conv1(x)
        skip1 = self.block1(x)
        skip2 = self.block2(_down(skip1))
        skip3 = self.block3(_down(skip2))
        x = self.bottleneck1(_down(skip3))
        x = self.bottleneck2(self.block4(_up_cat(x, skip3)))
        x = self.bottleneck3(self.block5(_up_cat(x, skip2)))
        return self.bottleneck4(self.block6(_up_cat(x, skip1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"RatLesNetV2 expects (batch, channel, x, y, z) input, got shape {tuple(x.shape)}")
        logits = self.forward_authors_order(x.permute(*TO_AUTHORS_AXES).contiguous())
        return logits.permute(*FROM_AUTHORS_AXES).contiguous()
