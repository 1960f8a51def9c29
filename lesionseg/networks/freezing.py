"""Transfer-learning helpers: a network's blocks, freezing the first k of them, loading pretrained weights.

Freezing a block means two things: its parameters get ``requires_grad=False`` (and lose any stale gradient), and
its normalisation layers with running statistics (BatchNorm, InstanceNorm with ``track_running_stats``) stay in
eval mode, so the pretrained statistics are used and never updated. The second part must survive the
``model.train()`` that every training loop calls, so each such layer gets a forward pre-hook that puts it back in
eval mode right before it runs while it is frozen. The hook is a module-level function and the flag is a plain
attribute, so frozen models still pickle, deep-copy and ``torch.save`` whole. Dropout in frozen blocks is left as
it is.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from lesionseg.errors import DataError

__all__ = ["network_blocks", "freeze_blocks", "LoadReport", "load_pretrained"]

_FROZEN_FLAG = "_lesionseg_frozen"


def network_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks ``(name, module)`` in input-to-output order, from its ``blocks()`` method."""
    blocks = getattr(model, "blocks", None)
    if not callable(blocks):
        raise ValueError(
            f"{type(model).__name__} does not list its blocks (no blocks() method); "
            "build it with lesionseg.networks.build_network"
        )
    return list(blocks())


def _keep_frozen_norm_in_eval(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: a frozen normalisation layer runs in eval mode whatever ``model.train()`` said."""
    if getattr(module, _FROZEN_FLAG, False):
        module.training = False


def _set_norm_frozen(module: nn.Module, frozen: bool, training: bool) -> None:
    if not hasattr(module, _FROZEN_FLAG):
        module.register_forward_pre_hook(_keep_frozen_norm_in_eval)
    setattr(module, _FROZEN_FLAG, frozen)
    module.training = training and not frozen


def freeze_blocks(model: nn.Module, freeze_depth: int) -> list[str]:
    """Freeze the first ``freeze_depth`` blocks of ``model`` and make the rest trainable; return the frozen names.

    This sets the whole freezing state, so calling it again with another depth replaces the previous one.
    ``freeze_depth=0`` freezes nothing; ``freeze_depth=len(network_blocks(model))`` freezes everything.
    """
    blocks = network_blocks(model)
    if isinstance(freeze_depth, bool) or not isinstance(freeze_depth, int) or not 0 <= freeze_depth <= len(blocks):
        raise ValueError(
            f"freeze_depth={freeze_depth!r} is out of range for {type(model).__name__.lower()} "
            f"(0..{len(blocks)} blocks)"
        )
    for index, (_, block) in enumerate(blocks):
        frozen = index < freeze_depth
        for param in block.parameters():
            param.requires_grad_(not frozen)
            if frozen:
                param.grad = None
        for module in block.modules():
            if isinstance(module, _NormBase) and module.track_running_stats:
                _set_norm_frozen(module, frozen, model.training)
    return [name for name, _ in blocks[:freeze_depth]]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with each state-dict key."""

    matched: list[str] = field(default_factory=list)  # copied into the model
    missing: list[str] = field(default_factory=list)  # in the model, not in the source: left as they were
    unexpected: list[str] = field(default_factory=list)  # in the source, not in the model: ignored
    mismatched: list[str] = field(default_factory=list)  # in both, different shapes: left as they were

    @property
    def complete(self) -> bool:
        """True when every key matched in name and shape, both ways."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line of counts, with the first few keys that did not match."""
        line = (
            f"{len(self.matched)} matched, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape-mismatched"
        )
        examples = (self.mismatched + self.missing + self.unexpected)[:3]
        return f"{line} (e.g. {', '.join(examples)})" if examples else line


def _read_state_dict(source: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The state dict inside ``source`` and a name for it in messages."""
    if isinstance(source, Mapping):
        data: Any = source
        name = "<state dict>"
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise DataError(f"{name}: no such checkpoint file; check the path")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for unreadable or unsafe pickles
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(
                f"{name}: cannot be read with torch.load(weights_only=True): {first_line}"
            ) from err
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise DataError(f"{name}: not a state dict (nor a checkpoint dict with a 'model' or 'state_dict' key)")
    return data, name


def load_pretrained(
    model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], *, strict: bool = False
) -> LoadReport:
    """Copy the weights of ``source`` whose names and shapes match ``model``; report what happened to each key.

    ``source`` is a file read with ``torch.load(..., map_location="cpu", weights_only=True)`` or a mapping: a raw
    state dict, or a checkpoint dict holding one under ``"model"`` or ``"state_dict"``. With ``strict=True`` a
    source that does not match completely raises ``ValueError`` and nothing is copied.
    """
    state, name = _read_state_dict(source)
    own = model.state_dict()
    report = LoadReport()
    to_load: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            report.missing.append(key)
            continue
        value = state[key]
        if isinstance(value, torch.Tensor) and value.shape == target.shape:
            report.matched.append(key)
            to_load[key] = value
        else:
            report.mismatched.append(key)
    report.unexpected = [key for key in state if key not in own]
    if strict and not report.complete:
        raise ValueError(
            f"{name}: {len(report.matched)} of {len(own)} model keys match; {len(report.missing)} missing, "
            f"{len(report.unexpected)} unexpected, {len(report.mismatched)} shape-mismatched; "
            "use strict=False to load only the matching ones"
        )
    model.load_state_dict(to_load, strict=False)
    return report
