"""A seeded network with its strategy applied, and the loaders to train and validate it (no tracking)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lesionseg.networks.transfer import build_for_strategy
from lesionseg.training.engine import resolve_device
from lesionseg.training.loaders import load_items, train_loader
from lesionseg.training.spec import RunSpec
from lesionseg.training.transforms import train_transforms


@dataclass
class TrainingSetup:
    """A network with its strategy applied, and the data to train and validate it on."""

    model: torch.nn.Module
    model_info: dict[str, Any]
    loader: Any
    val_items: list[dict]
    roi_size: list[int]


def setup_training(spec: RunSpec) -> TrainingSetup:
    """Seeded network (strategy applied) and loaders for ``spec``; ``model_info["precision"]`` says which
    arithmetic training will use on this machine (bf16, fp16 or fp32)."""
    torch.set_num_threads(spec.train.num_threads)
    torch.manual_seed(spec.train.seed)
    model, model_info = build_for_strategy(spec.model, spec.network, spec.strategy, spec.freeze_depth,
                                           spec.pretrained)
    device = resolve_device(spec.train.device)
    model = model.to(device)
    model_info = {**model_info, "precision": spec.precision}
    train_items = load_items(spec.prepared_dir, spec.train_ids)
    val_items = load_items(spec.prepared_dir, spec.val_ids)
    roi_size = list(spec.train.patch_size or train_items[0]["image"].shape[1:])
    augment = spec.train.augment if spec.augment else None
    loader = train_loader(train_items, train_transforms(augment, spec.train.patch_size), spec.train.batch_size,
                          spec.train.seed, iterations=spec.train.iterations_per_epoch,
                          lesion_fraction=spec.train.lesion_fraction)
    return TrainingSetup(model, model_info, loader, val_items, roi_size)
