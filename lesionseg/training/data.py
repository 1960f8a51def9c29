"""Prepared cases as MONAI datasets and loaders."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from lesionseg.data.preprocess import load_prepared_case
from lesionseg.errors import DataError


def load_items(prepared_dir: str | Path, case_ids: Sequence[str]) -> list[dict]:
    """Load prepared cases into memory as dicts with channel-first ``image``/``label`` arrays."""
    if not case_ids:
        raise DataError(f"{prepared_dir}: no cases selected; check data/splits and params.yaml subsets.sizes")
    items = []
    for case_id in case_ids:
        case = load_prepared_case(prepared_dir, case_id)
        label = case.label if case.label is not None else np.zeros_like(case.image, dtype=np.uint8)
        items.append(
            {
                "case_id": case.case_id,
                "image": case.image[None].astype(np.float32),
                "label": label[None].astype(np.float32),
                "affine": case.affine,
            }
        )
    return items


def train_loader(items: list[dict], transform, batch_size: int, seed: int) -> DataLoader:
    """Shuffled loader whose order is reseeded each epoch by :func:`lesionseg.training.engine.seed_epoch`."""
    dataset = Dataset([{k: it[k] for k in ("image", "label")} for it in items], transform=transform)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, num_workers=0)
