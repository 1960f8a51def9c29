"""Blocks partition the parameters; freeze_depth freezes weights and norm statistics; load_pretrained reports."""
from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.errors import DataError
from lesionseg.networks import RatLesNetV2, build_network, freeze_blocks, load_pretrained, network_blocks
from lesionseg.networks.ratlesnetv2 import ENCODER_DEPTH

SMALL = {
    "ratlesnetv2": dict(filters=4),
    "unet": dict(channels=(4, 8, 16, 32), norm="batch"),
    "dynunet": dict(filters=(4, 8, 16, 32), norm_name="batch"),
    "unetr": dict(img_size=(32, 32, 16), feature_size=8, hidden_size=64, mlp_dim=128, num_heads=4, norm_name="batch"),
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (running_mean/var, num_batches_tracked), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_steps(model: nn.Module, steps: int = 3) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    x = torch.randn(2, 1, 17, 19, 9)
    target = (x > 0.5).long()[:, 0]
    model.train()  # the training loop's call must not unfreeze the norm statistics
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model(x)
        stack = logits.unbind(1) if logits.ndim == 6 else [logits]  # DynUNet's deep-supervision stack
        sum(F.cross_entropy(level, target) for level in stack).backward()
        optimizer.step()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_blocks_partition_the_parameters(name):
    model = build_network(name, **SMALL[name])
    seen: dict[int, str] = {}
    for block_name, block in network_blocks(model):
        for param in block.parameters():
            assert id(param) not in seen, f"{block_name} shares a parameter with {seen.get(id(param))}"
            seen[id(param)] = block_name
    assert set(seen) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("depth", [0, 1, ENCODER_DEPTH, 11])
def test_freeze_depth_sets_requires_grad_per_block(depth):
    model = RatLesNetV2(filters=2)
    frozen = freeze_blocks(model, depth)
    blocks = network_blocks(model)
    assert frozen == [name for name, _ in blocks[:depth]]
    for index, (_, block) in enumerate(blocks):
        assert all(p.requires_grad == (index >= depth) for p in block.parameters())


def test_encoder_depth_freezes_exactly_the_encoder():
    model = RatLesNetV2(filters=2)
    assert freeze_blocks(model, ENCODER_DEPTH) == ["conv1", "block1", "block2", "block3", "bottleneck1"]
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"block4", "bottleneck2", "block5", "bottleneck3", "block6", "bottleneck4"}


@pytest.mark.parametrize("name, depth", [("ratlesnetv2", ENCODER_DEPTH), ("unet", 3), ("dynunet", 4), ("unetr", 15)])
def test_frozen_weights_and_norm_statistics_stay_put_in_training(name, depth):
    model = build_network(name, **SMALL[name])
    frozen_names = freeze_blocks(model, depth)
    blocks = dict(network_blocks(model))
    before = {n: _tensors(b) for n, b in blocks.items()}
    _train_steps(model)
    for block_name, block in blocks.items():
        after = _tensors(block)
        if block_name in frozen_names:
            for key, value in after.items():
                assert torch.equal(value, before[block_name][key]), f"frozen {block_name}.{key} changed"
        elif after:
            assert any(not torch.equal(v, before[block_name][k]) for k, v in after.items()), block_name
    running = [
        (block_name, key)
        for block_name in frozen_names
        for key in before[block_name]
        if key.endswith(("running_mean", "running_var"))
    ]
    assert running, "the test must cover frozen BatchNorm statistics"  # UNETR: encoder1 (depth 15)
    unfrozen_bn = [m for n, b in blocks.items() if n not in frozen_names for m in b.modules()
                   if isinstance(m, nn.BatchNorm3d)]
    if unfrozen_bn:
        assert unfrozen_bn[0].training  # unfrozen norm layers still follow model.train()


def test_refreezing_replaces_the_previous_state():
    model = RatLesNetV2(filters=2)
    freeze_blocks(model, 11)
    model.train()
    assert freeze_blocks(model, 2) == ["conv1", "block1"]
    assert all(p.requires_grad for p in model.block2.parameters())
    assert model.block2.seq[1].training  # unfrozen norm follows the model's mode again
    before = _tensors(model.block2)
    _train_steps(model, steps=1)
    assert not torch.equal(before["seq.1.running_mean"], model.block2.seq[1].running_mean)
    assert freeze_blocks(model, 0) == []
    assert all(p.requires_grad for p in model.parameters())


def test_freezing_clears_stale_gradients():
    model = RatLesNetV2(filters=2)
    model(torch.randn(2, 1, 5, 4, 3)).sum().backward()
    freeze_blocks(model, 1)
    assert model.conv1.weight.grad is None and model.block1.seq[2].weight.grad is not None


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_frozen_model_survives_copy_and_pickle(clone):
    model = RatLesNetV2(filters=2)
    freeze_blocks(model, ENCODER_DEPTH)
    model = clone(model)
    before = _tensors(model.block1)
    _train_steps(model, steps=1)
    after = _tensors(model.block1)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("depth", [12, -1])
def test_out_of_range_depth(depth):
    message = f"freeze_depth={depth} is out of range for ratlesnetv2 (0..11 blocks)"
    with pytest.raises(ValueError, match=re.escape(message)):
        freeze_blocks(RatLesNetV2(filters=2), depth)
    with pytest.raises(ValueError, match=re.escape("out of range for unet (0..7 blocks)")):
        freeze_blocks(build_network("unet"), 8)


def test_network_without_blocks_is_rejected():
    with pytest.raises(ValueError, match=r"Linear does not list its blocks"):
        freeze_blocks(nn.Linear(2, 2), 1)


def _partial_source() -> tuple[dict[str, torch.Tensor], RatLesNetV2]:
    torch.manual_seed(1)
    source_model = RatLesNetV2(filters=4, out_channels=3)  # bottleneck4 has another shape
    state = dict(source_model.state_dict())
    del state["block6.seq.5.weight"]
    state["extra.weight"] = torch.zeros(3)
    return state, source_model


def test_load_pretrained_reports_a_partial_match():
    state, _ = _partial_source()
    torch.manual_seed(2)
    model = RatLesNetV2(filters=4)
    original = _tensors(model)
    report = load_pretrained(model, state)
    assert report.missing == ["block6.seq.5.weight"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == ["bottleneck4.seq.2.weight", "bottleneck4.seq.2.bias"]
    assert len(report.matched) == 114 - 3 and not report.complete
    loaded = model.state_dict()
    for key in report.matched:
        assert torch.equal(loaded[key], state[key]), key
    for key in report.missing + report.mismatched:
        assert torch.equal(loaded[key], original[key]), key
    assert report.summary() == (
        "111 matched, 1 missing, 1 unexpected, 2 shape-mismatched "
        "(e.g. bottleneck4.seq.2.weight, bottleneck4.seq.2.bias, block6.seq.5.weight)"
    )


def test_strict_load_refuses_a_partial_match_and_copies_nothing(tmp_path):
    state, _ = _partial_source()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "epoch": 3}, path)
    model = RatLesNetV2(filters=4)
    original = _tensors(model)
    message = f"{path}: 111 of 114 model keys match; 1 missing, 1 unexpected, 2 shape-mismatched"
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_pretrained(model, path, strict=True)
    assert "\n" not in str(info.value)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"model": s, "epoch": 1}, lambda s: {"state_dict": s}])
def test_load_pretrained_reads_files_and_checkpoint_dicts(tmp_path, wrap):
    torch.manual_seed(1)
    source = RatLesNetV2(filters=2)
    path = tmp_path / "weights.pt"
    torch.save(wrap(source.state_dict()), path)
    model = RatLesNetV2(filters=2)
    report = load_pretrained(model, str(path), strict=True)
    assert report.complete and len(report.matched) == 114
    assert torch.equal(model.block3.seq[2].weight, source.block3.seq[2].weight)


class _NotWeights:
    pass


def test_load_pretrained_unreadable_sources(tmp_path):
    with pytest.raises(DataError, match="no such checkpoint file"):
        load_pretrained(RatLesNetV2(filters=2), tmp_path / "absent.pt")
    unsafe = tmp_path / "unsafe.pt"
    torch.save(_NotWeights(), unsafe)
    with pytest.raises(DataError, match=r"unsafe\.pt: cannot be read with torch\.load\(weights_only=True\)") as info:
        load_pretrained(RatLesNetV2(filters=2), unsafe)
    assert "\n" not in str(info.value)
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(DataError, match="not a state dict"):
        load_pretrained(RatLesNetV2(filters=2), not_a_dict)
