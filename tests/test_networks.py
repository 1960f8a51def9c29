"""Networks: output shapes on odd sizes, RatLesNetV2 against the published checkpoint, the registry."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lesionseg.networks import NETWORKS, RatLesNetV2, build_network, load_pretrained, network_blocks
from lesionseg.networks.monai_nets import UNETR, DynUNet, UNet
from lesionseg.networks.ratlesnetv2 import ENCODER_DEPTH, FROM_AUTHORS_AXES, TO_AUTHORS_AXES

def _find_pretrained(name: str = "ratlesnetv2-heterogeneous-model-1") -> Path:
    """The authors' checkpoint in a ``shared/pretrained`` folder beside the checkout (or an ancestor's)."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "shared" / "pretrained" / name
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parents[2] / "shared" / "pretrained" / name


PRETRAINED = _find_pretrained()
needs_pretrained = pytest.mark.skipif(not PRETRAINED.is_file(), reason=f"published checkpoint absent: {PRETRAINED}")

UNETR_SMALL = dict(img_size=(32, 32, 16), feature_size=8, hidden_size=64, mlp_dim=128, num_heads=4)
SMALL = {
    "ratlesnetv2": dict(filters=4),
    "unet": dict(channels=(4, 8, 16, 32)),
    "dynunet": dict(filters=(4, 8, 16, 32)),
    "unetr": UNETR_SMALL,
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("shape", [(1, 1, 17, 19, 9), (2, 1, 16, 16, 8), (1, 1, 9, 1, 5)])
def test_output_shape_any_input_size(name, shape):
    model = build_network(name, **SMALL[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 2, *shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_channels_follow_arguments(name):
    model = build_network(name, in_channels=2, out_channels=3, **SMALL[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 9, 11, 7))
    assert out.shape == (1, 3, 9, 11, 7)


@pytest.mark.parametrize("shape", [(1, 1, 17, 19, 9), (1, 1, 16, 16, 8)])
def test_default_ratlesnetv2_forward_odd_size(shape):
    model = RatLesNetV2().train()
    out = model(torch.randn(shape))
    assert out.shape == (1, 2, *shape[2:]) and torch.isfinite(out).all()


def test_networks_train_on_odd_sizes():
    """Gradients flow through the pad/crop wrappers (train mode, batch statistics)."""
    for name, kwargs in SMALL.items():
        model = build_network(name, **kwargs).train()
        out = model(torch.randn(2, 1, 17, 19, 9))
        out = out[:, 0] if name == "dynunet" else out
        out.mean().backward()
        # MONAI's TransformerBlock always builds a cross-attention norm that UNETR never uses
        unused = [n for n, p in model.named_parameters() if p.grad is None and "norm_cross_attn" not in n]
        assert not unused, f"{name}: {unused}"


@pytest.mark.parametrize("deep_supr_num", [1, 2])
def test_dynunet_deep_supervision_train_vs_eval(deep_supr_num):
    model = DynUNet(filters=(4, 8, 16, 32), deep_supr_num=deep_supr_num)
    x = torch.randn(2, 1, 17, 19, 9)
    assert model.train()(x).shape == (2, deep_supr_num + 1, 2, 17, 19, 9)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 2, 17, 19, 9)


def test_dynunet_without_deep_supervision_and_derived_strides():
    model = DynUNet(filters=(4, 8, 16), deep_supervision=False).train()
    assert model.strides == [1, 2, 2] and model.kernel_size == [3, 3, 3]
    assert model.size_multiple == (4, 4, 4)
    assert model(torch.randn(1, 1, 5, 6, 7)).shape == (1, 2, 5, 6, 7)


def test_anisotropic_strides_set_the_padding_multiple():
    model = UNet(channels=(4, 8, 16), strides=((2, 1, 2), 2)).eval()
    assert model.size_multiple == (4, 2, 4)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 9, 3, 5)).shape == (1, 2, 9, 3, 5)


def test_unetr_size_checks():
    with pytest.raises(ValueError, match=r"img_size=\(30, 32, 16\) must be multiples of 16"):
        UNETR(img_size=(30, 32, 16))
    with pytest.raises(ValueError, match="hidden_size=64 must be divisible by num_heads=5"):
        UNETR(img_size=(16, 16, 16), hidden_size=64, num_heads=5)
    model = UNETR(**UNETR_SMALL)
    with pytest.raises(ValueError, match="exceeds img_size=.*sliding-window"):
        model(torch.randn(1, 1, 33, 16, 16))


def test_unetr_default_is_small():
    model = build_network("unetr", img_size=(16, 16, 16))
    assert model.hidden_size == 256
    assert sum(p.numel() for p in model.parameters()) < 10_000_000


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(filters=0), "filters"),
        (dict(in_channels=-1), "in_channels"),
        (dict(out_channels=1.5), "out_channels"),
    ],
)
def test_ratlesnetv2_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        RatLesNetV2(**kwargs)


@pytest.mark.parametrize(
    "name, kwargs, argument",
    [
        ("unet", dict(channels=(8,)), "channels"),
        ("unet", dict(strides=(2, 2)), "strides"),
        ("unet", dict(dropout=1.5), "dropout"),
        ("dynunet", dict(filters=(8, 16)), "filters"),
        ("dynunet", dict(deep_supr_num=3), "deep_supr_num"),
        ("dynunet", dict(strides=(1, 2, 2)), "strides"),
        ("unetr", dict(img_size=(32, 32)), "img_size"),
    ],
)
def test_monai_builders_name_bad_arguments(name, kwargs, argument):
    kwargs = {**({"img_size": (16, 16, 16)} if name == "unetr" else {}), **kwargs}
    with pytest.raises(ValueError, match=argument):
        build_network(name, **kwargs)


def test_wrong_rank_input_is_rejected():
    for model in (RatLesNetV2(filters=2), UNet(channels=(4, 8), strides=(2,))):
        with pytest.raises(ValueError, match=r"expects \(batch, channel, x, y, z\)"):
            model(torch.randn(1, 1, 8, 8))


def test_registry_names_and_errors():
    assert sorted(NETWORKS) == ["dynunet", "ratlesnetv2", "unet", "unetr"]
    with pytest.raises(ValueError, match=re.escape("network='vnet' is not one of ['dynunet', 'ratlesnetv2'")):
        build_network("vnet")
    with pytest.raises(ValueError, match="takes no argument 'chanels'"):
        build_network("unet", chanels=(8, 16))
    with pytest.raises(ValueError, match="needs the argument 'img_size'"):
        build_network("unetr")
    assert isinstance(build_network("ratlesnetv2", filters=2), RatLesNetV2)


def test_ratlesnetv2_parameter_count():
    model = RatLesNetV2()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 837_026
    assert len(model.state_dict()) == 114


def test_ratlesnetv2_blocks_in_data_flow_order_with_encoder_prefix():
    names = [name for name, _ in network_blocks(RatLesNetV2(filters=2))]
    assert names == [
        "conv1", "block1", "block2", "block3", "bottleneck1",
        "block4", "bottleneck2", "block5", "bottleneck3", "block6", "bottleneck4",
    ]  # fmt: skip
    assert names[:ENCODER_DEPTH] == ["conv1", "block1", "block2", "block3", "bottleneck1"]


def test_monai_blocks_order():
    assert [n for n, _ in network_blocks(UNet())] == ["down1", "down2", "down3", "bottom", "up3", "up2", "up1"]
    assert [n for n, _ in network_blocks(DynUNet())] == [
        "input_block", "downsamples.0", "downsamples.1", "bottleneck",
        "upsamples.0", "upsamples.1", "upsamples.2", "output_block", "deep_supervision_heads.0",
    ]  # fmt: skip
    dyn = DynUNet()
    assert dict(network_blocks(dyn))["upsamples.0"].transp_conv.conv.in_channels == 128  # deepest first
    unetr_names = [n for n, _ in network_blocks(UNETR(**UNETR_SMALL))]
    assert unetr_names[0] == "vit.patch_embedding" and unetr_names[1:13] == [f"vit.blocks.{i}" for i in range(12)]
    assert unetr_names[13:] == [
        "vit.norm", "encoder1", "encoder2", "encoder3", "encoder4",
        "decoder5", "decoder4", "decoder3", "decoder2", "out",
    ]  # fmt: skip


def _authors_forward(model: RatLesNetV2, x: torch.Tensor) -> torch.Tensor:
    """The published forward pass written out layer by layer, on (B, C, slices, rows, columns)."""

    def pool(t):
        return F.max_pool3d(t, 2, ceil_mode=True)

    def up(t, like):
        return F.interpolate(t, size=like.shape[2:], mode="trilinear")

    b1 = model.block1(model.conv1(x))
    b2 = model.block2(pool(b1))
    b3 = model.block3(pool(b2))
    x = model.bottleneck1(pool(b3))
    x = model.bottleneck2(model.block4(torch.cat([up(x, b3), b3], 1)))
    x = model.bottleneck3(model.block5(torch.cat([up(x, b2), b2], 1)))
    return model.bottleneck4(model.block6(torch.cat([up(x, b1), b1], 1)))


def test_ratlesnetv2_permutes_to_authors_order_once():
    """Our (B, C, x, y, z) call equals the authors' net on (B, C, y, z, x), permuted back."""
    torch.manual_seed(3)
    model = RatLesNetV2(filters=4).eval()
    x = torch.randn(1, 1, 11, 6, 9)  # x, y (slices), z: all different
    assert TO_AUTHORS_AXES == (0, 1, 3, 4, 2)
    with torch.no_grad():
        ours = model(x)
        authors = _authors_forward(model, x.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        wrong_order = _authors_forward(model, x.permute(0, 1, 4, 2, 3)).permute(0, 1, 3, 4, 2)
    assert x.permute(*TO_AUTHORS_AXES).permute(*FROM_AUTHORS_AXES).equal(x)
    torch.testing.assert_close(ours, authors, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, wrong_order, atol=1e-3)


@needs_pretrained
def test_published_checkpoint_loads_strictly():
    state = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    assert len(state) == 114
    model = RatLesNetV2()
    model.load_state_dict(state, strict=True)
    report = load_pretrained(RatLesNetV2(), PRETRAINED, strict=True)
    assert len(report.matched) == 114 and report.complete
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.randn(1, 1, 16, 7, 16)), dim=1)
    assert probs.shape == (1, 2, 16, 7, 16) and torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 7, 16))
