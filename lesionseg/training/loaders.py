"""Prepared cases as MONAI datasets and loaders."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from torch.utils.data import WeightedRandomSampler

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


def case_weights(items: list[dict], lesion_fraction: float) -> np.ndarray:
    """Sampling weight per case so that a draw holds a lesion with probability ``lesion_fraction`` (when the
    set has both lesion scans and shams; otherwise uniform)."""
    has_lesion = np.array([bool(np.asarray(it["label"]).any()) for it in items])
    n_lesion, n_sham = int(has_lesion.sum()), int((~has_lesion).sum())
    if n_lesion == 0 or n_sham == 0:
        return np.full(len(items), 1.0 / len(items))
    return np.where(has_lesion, lesion_fraction / n_lesion, (1.0 - lesion_fraction) / n_sham)


def train_loader(items: list[dict], transform, batch_size: int, seed: int, *, iterations: int,
                 lesion_fraction: float) -> DataLoader:
    """One epoch = ``iterations`` batches drawn with replacement (lesion scans oversampled to
    ``lesion_fraction``), as nnU-Net does; so the number of updates does not depend on the sample size.
    The draw is reseeded each epoch by :func:`lesionseg.training.engine.seed_epoch`."""
    dataset = Dataset([{k: it[k] for k in ("image", "label")} for it in items], transform=transform)
    sampler = WeightedRandomSampler(case_weights(items, lesion_fraction).tolist(), iterations * batch_size,
                                    replacement=True, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=0)
