"""MONAI's UNet, DynUNet and UNETR, configured from ``params.yaml`` keywords and listing their blocks.

Each class is a thin subclass of the MONAI network of the same name: parameter names (and so checkpoints) are
MONAI's. What the subclasses add:

- a constructor whose keywords are the ``params.yaml`` ones, with CPU-friendly defaults, 3D only;
- ``blocks()``: the network's blocks in the order data flows from input to output, for ``freeze_depth``;
- any input size: UNet and DynUNet pad the input (edge replication, at the far end of each axis) to a multiple of
  their total downsampling factor and crop the output back; UNETR pads up to its fixed ``img_size`` (larger inputs
  need sliding-window inference with ``roi_size = img_size``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets import DynUNet as _MonaiDynUNet
from monai.networks.nets import UNETR as _MonaiUNETR
from monai.networks.nets import UNet as _MonaiUNet
from torch import nn

__all__ = ["UNet", "DynUNet", "UNETR", "UNETR_PATCH_SIZE"]

SPATIAL_DIMS = 3
UNETR_PATCH_SIZE = 16  # fixed inside MONAI's UNETR


def _per_axis(value: int | Sequence[int], name: str) -> tuple[int, ...]:
    """An int or a 3-sequence of positive ints as a 3-tuple; ``name`` is used in the error."""
    values = (value,) * SPATIAL_DIMS if isinstance(value, int) else tuple(value)
    if len(values) != SPATIAL_DIMS or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name}={value!r} must be a positive int or {SPATIAL_DIMS} positive ints")
    return values


def _downsampling_factor(strides: Sequence[int | Sequence[int]]) -> tuple[int, ...]:
    """Product of the strides along each axis: the size every input axis must be a multiple of."""
    factor = [1] * SPATIAL_DIMS
    for i, stride in enumerate(strides):
        factor = [f * s for f, s in zip(factor, _per_axis(stride, f"strides[{i}]"))]
    return tuple(factor)


def _pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Pad the spatial axes of ``x`` at their far end, replicating the edge, up to ``size``."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    pads: list[int] = []
    for have, want in zip(reversed(x.shape[2:]), reversed(tuple(size))):
        pads += [0, want - have]
    return F.pad(x, pads, mode="replicate")


def _crop_to(y: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the last three (spatial) axes of ``y`` to ``size``; leading axes (batch, heads, channels) stay."""
    return y[..., : size[0], : size[1], : size[2]]


def _check_input(x: torch.Tensor, network: str) -> tuple[int, ...]:
    if x.ndim != 2 + SPATIAL_DIMS:
        raise ValueError(f"{network} expects (batch, channel, x, y, z) input, got shape {tuple(x.shape)}")
    return tuple(x.shape[2:])


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")


class UNet(_MonaiUNet):
    """MONAI ``UNet`` (3D) for any input size.

    Args:
        in_channels: input channels.
        out_channels: output channels (2: background, lesion).
        channels: channels per level, top first; the last one is the bottom layer.
        strides: stride of each downsampling, ``len(channels) - 1`` of them.
        num_res_units: residual units per layer (0: plain convolutions).
        act: activation, MONAI name.
        norm: normalisation, MONAI name ("batch", "instance", ...).
        dropout: dropout probability.

    Blocks: ``down1 .. downN``, ``bottom``, ``upN .. up1`` (N = ``len(channels) - 1``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int | Sequence[int]] = (2, 2, 2),
        num_res_units: int = 0,
        act: str | tuple = "PRELU",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        if len(channels) < 2:
            raise ValueError(f"channels={channels!r} needs at least 2 levels")
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides={strides!r} needs len(channels) - 1 = {len(channels) - 1} values")
        if num_res_units < 0:
            raise ValueError(f"num_res_units={num_res_units!r} must be >= 0")
        _check_dropout(dropout)
        super().__init__(
            spatial_dims=SPATIAL_DIMS,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            act=act,
            norm=norm,
            dropout=dropout,
        )
        self.size_multiple = _downsampling_factor(strides)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """Encoder levels top to bottom, the bottom layer, then decoder levels bottom to top."""
        downs: list[tuple[str, nn.Module]] = []
        ups: list[tuple[str, nn.Module]] = []
        node: nn.Module = self.model
        for level in range(1, len(self.channels)):
            down, skip, up = node  # MONAI: Sequential(down, SkipConnection(next level), up)
            if not isinstance(skip, SkipConnection):
                raise RuntimeError("unexpected MONAI UNet structure; lesionseg expects Sequential(down, skip, up)")
            downs.append((f"down{level}", down))
            ups.append((f"up{level}", up))
            node = skip.submodule
        return downs + [("bottom", node)] + ups[::-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = _check_input(x, "UNet")
        padded = [math.ceil(s / m) * m for s, m in zip(size, self.size_multiple)]
        return _crop_to(super().forward(_pad_to(x, padded)), size)


class DynUNet(_MonaiDynUNet):
    """MONAI ``DynUNet`` (3D, nnU-Net style) for any input size, deep supervision on by default.

    Kernel sizes and strides follow from the number of levels (``len(filters)``) unless given: 3x3x3 kernels,
    stride 1 on the first level then 2. In train mode with deep supervision the output is the stack
    ``(B, deep_supr_num + 1, out_channels, x, y, z)``, full-resolution output first; in eval mode plain logits.

    Args:
        in_channels: input channels.
        out_channels: output channels (2: background, lesion).
        filters: channels per level, at least 3 levels.
        kernel_size: per-level kernel sizes (ints or 3-tuples); default 3 everywhere.
        strides: per-level strides (ints or 3-tuples); default ``(1, 2, 2, ...)``.
        deep_supervision: return the deep-supervision stack in train mode.
        deep_supr_num: number of deep-supervision heads (``1 <= deep_supr_num < len(filters) - 1``).
        norm_name: normalisation, MONAI name ("instance", "batch", ...).
        dropout: dropout probability.
        res_block: residual convolution blocks.

    Blocks: ``input_block``, ``downsamples.0 ..``, ``bottleneck``, ``upsamples.0 ..`` (deepest first),
    ``output_block``, then ``deep_supervision_heads.0 ..``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        filters: Sequence[int] = (16, 32, 64, 128),
        kernel_size: Sequence[int | Sequence[int]] | None = None,
        strides: Sequence[int | Sequence[int]] | None = None,
        deep_supervision: bool = True,
        deep_supr_num: int = 1,
        norm_name: str | tuple = "instance",
        dropout: float = 0.0,
        res_block: bool = False,
    ) -> None:
        levels = len(filters)
        if levels < 3:
            raise ValueError(f"filters={filters!r} needs at least 3 levels")
        kernel_size = [3] * levels if kernel_size is None else list(kernel_size)
        strides = [1] + [2] * (levels - 1) if strides is None else list(strides)
        for name, value in (("kernel_size", kernel_size), ("strides", strides)):
            if len(value) != levels:
                raise ValueError(f"{name}={value!r} needs one entry per level ({levels}, from filters)")
            for i, v in enumerate(value):
                _per_axis(v, f"{name}[{i}]")
        if deep_supervision and not 1 <= deep_supr_num < levels - 1:
            raise ValueError(f"deep_supr_num={deep_supr_num!r} must be in 1..{levels - 2} for {levels} levels")
        _check_dropout(dropout)
        super().__init__(
            spatial_dims=SPATIAL_DIMS,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=list(filters),
            dropout=dropout or None,
            norm_name=norm_name,
            deep_supervision=deep_supervision,
            deep_supr_num=deep_supr_num,
            res_block=res_block,
        )
        self.size_multiple = _downsampling_factor(strides)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """Input block, downsamples, bottleneck, upsamples (deepest first), output block, deep-supervision heads."""
        out: list[tuple[str, nn.Module]] = [("input_block", self.input_block)]
        out += [(f"downsamples.{i}", m) for i, m in enumerate(self.downsamples)]
        out.append(("bottleneck", self.bottleneck))
        out += [(f"upsamples.{i}", m) for i, m in enumerate(self.upsamples)]
        out.append(("output_block", self.output_block))
        if self.deep_supervision:
            out += [(f"deep_supervision_heads.{i}", m) for i, m in enumerate(self.deep_supervision_heads)]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = _check_input(x, "DynUNet")
        padded = [math.ceil(s / m) * m for s, m in zip(size, self.size_multiple)]
        return _crop_to(super().forward(_pad_to(x, padded)), size)


class UNETR(_MonaiUNETR):
    """MONAI ``UNETR`` (3D) for inputs up to ``img_size``, small CPU-friendly defaults.

    The transformer sees a fixed grid of 16x16x16 patches, so ``img_size`` must be multiples of 16; smaller
    inputs are padded up to it and the output cropped back, larger inputs need sliding-window inference.

    Args:
        img_size: the (padded) input size, multiples of 16.
        in_channels: input channels.
        out_channels: output channels (2: background, lesion).
        feature_size: channels of the convolutional encoder/decoder at full resolution.
        hidden_size: transformer width (divisible by ``num_heads``).
        mlp_dim: transformer MLP width.
        num_heads: attention heads.
        norm_name: normalisation, MONAI name ("instance", "batch", ...).
        dropout: dropout probability in the transformer.
        res_block: residual convolution blocks.

    Blocks: ``vit.patch_embedding``, ``vit.blocks.0 .. 11``, ``vit.norm``, ``encoder1 .. 4``,
    ``decoder5 .. 2``, ``out``.
    """

    def __init__(
        self,
        img_size: Sequence[int],
        in_channels: int = 1,
        out_channels: int = 2,
        feature_size: int = 8,
        hidden_size: int = 256,
        mlp_dim: int = 512,
        num_heads: int = 8,
        norm_name: str | tuple = "instance",
        dropout: float = 0.0,
        res_block: bool = True,
    ) -> None:
        size = _per_axis(img_size, "img_size")
        if any(s % UNETR_PATCH_SIZE for s in size):
            raise ValueError(f"img_size={tuple(img_size)!r} must be multiples of {UNETR_PATCH_SIZE} (UNETR's patch)")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        _check_dropout(dropout)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            img_size=size,
            feature_size=feature_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            norm_name=norm_name,
            res_block=res_block,
            dropout_rate=dropout,
            spatial_dims=SPATIAL_DIMS,
        )
        self.img_size = size

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """Patch embedding, transformer blocks, final norm, convolutional encoders, decoders, output head."""
        out: list[tuple[str, nn.Module]] = [("vit.patch_embedding", self.vit.patch_embedding)]
        out += [(f"vit.blocks.{i}", m) for i, m in enumerate(self.vit.blocks)]
        out.append(("vit.norm", self.vit.norm))
        out += [(f"encoder{i}", getattr(self, f"encoder{i}")) for i in (1, 2, 3, 4)]
        out += [(f"decoder{i}", getattr(self, f"decoder{i}")) for i in (5, 4, 3, 2)]
        out.append(("out", self.out))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = _check_input(x, "UNETR")
        if any(s > m for s, m in zip(size, self.img_size)):
            raise ValueError(
                f"UNETR input size {size} exceeds img_size={self.img_size}; "
                "use sliding-window inference with roi_size=img_size"
            )
        return _crop_to(super().forward(_pad_to(x, self.img_size)), size)
