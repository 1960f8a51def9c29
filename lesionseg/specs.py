"""Turn params.yaml sections and the split files into :class:`~lesionseg.runs.RunSpec` objects.

This is where stage parameters become plain arguments; nothing below this reads params.yaml.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from lesionseg.config import STRATEGIES, TrainConfig, from_mapping, section
from lesionseg.data.io import read_json
from lesionseg.errors import ConfigError
from lesionseg.networks import NETWORKS
from lesionseg.runs import RunSpec

AUGMENT_FLAGS = {"aug": True, "noaug": False}


def train_config(params: Mapping[str, Any], stage: str) -> TrainConfig:
    """``train`` merged with the stage's own ``train:`` overrides (e.g. more epochs for pretraining)."""
    base = dict(section(params, "train"))
    overrides = dict(section(params, stage).get("train") or {})
    merged = {**base, **overrides}
    if "augment" in base and "augment" in overrides:
        merged["augment"] = {**base["augment"], **overrides["augment"]}
    return from_mapping(TrainConfig, merged, f"params.yaml {stage}.train")


def network_kwargs(params: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Keyword arguments of ``model`` from params.yaml ``networks:`` (unknown names are a ConfigError)."""
    if model not in NETWORKS:
        raise ConfigError(f"model={model!r} is not a known network; choose one of {sorted(NETWORKS)}")
    networks = section(params, "networks")
    if model not in networks:
        raise ConfigError(f"params.yaml: networks.{model} is missing; known networks: {sorted(networks)}")
    return dict(networks[model] or {})


def domain_name(params: Mapping[str, Any], role: str) -> str:
    """``rat``/``mouse`` (or a user's dataset name) for role ``source``/``target``."""
    return str(section(params, "data")[role]["name"])


def pretrain_spec(params: Mapping[str, Any], model: str, root: Path) -> RunSpec:
    """Train ``model`` from scratch on the source domain's train split, selected on its val split."""
    domain = domain_name(params, "source")
    split = read_json(root / "data" / "splits" / f"{domain}.json")
    return RunSpec(
        stage="pretrain", model=model, network=network_kwargs(params, model), strategy="scratch", freeze_depth=0,
        augment=bool(section(params, "pretrain").get("augment", False)), sample_size=len(split["train"]),
        prepared_dir=root / "data" / "processed" / domain, train_ids=split["train"], val_ids=split["val"],
        train=train_config(params, "pretrain"), domain=domain,
    )


def pretrained_weights(params: Mapping[str, Any], model: str, root: Path) -> Path:
    """Where fine-tuning starts from: ``finetune.source`` = ``pretrain`` (this pipeline's pretrain stage)
    or a path to a checkpoint (e.g. the authors' published RatLesNetV2 weights)."""
    source = section(params, "finetune").get("source", "pretrain")
    if source == "pretrain":
        return root / "models" / "pretrained" / model / "model.pt"
    path = Path(source)
    return path if path.is_absolute() else root / path


def finetune_spec(params: Mapping[str, Any], model: str, strategy: str, sample_size: int, augment: str,
                  root: Path, *, freeze_depth: int | None = None, lr: float | None = None,
                  stage: str = "finetune") -> RunSpec:
    """One cell of the study: ``model`` x ``strategy`` x ``sample_size`` x ``augment`` on the target domain."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not one of {STRATEGIES}")
    if augment not in AUGMENT_FLAGS:
        raise ConfigError(f"augment={augment!r} must be one of {sorted(AUGMENT_FLAGS)}")
    domain = domain_name(params, "target")
    split = read_json(root / "data" / "splits" / f"{domain}.json")
    subsets = read_json(root / "data" / "splits" / "subsets.json")
    if str(sample_size) not in subsets:
        raise ConfigError(
            f"sample_size={sample_size} is not in data/splits/subsets.json (sizes {list(subsets)}); "
            "add it to subsets.sizes in params.yaml and run dvc repro"
        )
    if freeze_depth is None and strategy == "partial":
        freeze_depth = section(params, "finetune").get("partial_freeze_depth", {}).get(model)
        if freeze_depth is None:
            raise ConfigError(f"params.yaml: finetune.partial_freeze_depth.{model} is missing; set how many blocks to freeze")
    train = train_config(params, "finetune")
    if lr is not None:
        train = dataclasses.replace(train, lr=lr)
    return RunSpec(
        stage=stage, model=model, network=network_kwargs(params, model), strategy=strategy,
        freeze_depth=0 if strategy != "partial" else int(freeze_depth), augment=AUGMENT_FLAGS[augment],
        sample_size=int(sample_size), prepared_dir=root / "data" / "processed" / domain,
        train_ids=subsets[str(sample_size)], val_ids=split["val"], train=train,
        pretrained=None if strategy == "scratch" else pretrained_weights(params, model, root), domain=domain,
    )


def finetune_name(model: str, strategy: str, sample_size: int, augment: str) -> str:
    """Directory/key name of one fine-tuning cell, as dvc.yaml's matrix writes it."""
    return f"{model}-{strategy}-n{sample_size}-{augment}"
