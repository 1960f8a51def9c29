"""A network ready for one transfer strategy: built, pretrained weights loaded, the first blocks frozen."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lesionseg.errors import ConfigError
from lesionseg.networks.freezing import freeze_blocks, load_pretrained, network_blocks
from lesionseg.networks.registry import build_network


def build_for_strategy(model: str, network: dict[str, Any], strategy: str, freeze_depth: int,
                       pretrained: str | Path | None) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` with ``strategy`` applied (scratch, partial = freeze the first ``freeze_depth`` blocks,
    full); returns it and what loading/freezing did (``n_blocks``, ``pretrained_load``, ``frozen_blocks``)."""
    net = build_network(model, **network)
    n_blocks = len(network_blocks(net))
    if strategy == "partial" and not 0 < freeze_depth < n_blocks:
        raise ConfigError(f"freeze_depth={freeze_depth} is out of range for partial fine-tuning of "
                          f"{model} (1..{n_blocks - 1}); fix finetune.arms.partial.freeze_depth in params.yaml")
    info: dict[str, Any] = {"n_blocks": n_blocks}
    if strategy != "scratch":
        if pretrained is None or not Path(pretrained).exists():
            raise ConfigError(
                f"strategy={strategy} needs pretrained weights for {model}, but {pretrained} is missing; "
                "run the pretrain stage or set finetune.source in params.yaml"
            )
        report = load_pretrained(net, pretrained)
        if not report.matched:
            raise ConfigError(f"{pretrained}: no weights match {model}; {report.summary()}")
        info["pretrained_load"] = report.summary()
    info["frozen_blocks"] = freeze_blocks(net, freeze_depth)
    return net, info
