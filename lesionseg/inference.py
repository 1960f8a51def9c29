"""Load a trained model and segment scans: prepared volumes, or raw NIfTI mapped back to their own grid."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lesionseg.data.io import Volume, read_volume, write_text, write_volume
from lesionseg.data.preprocess import prepare_volume, restore_to_input
from lesionseg.networks import build_network
from lesionseg.postprocess import keep_inside_head, remove_small_lesions
from lesionseg.training.engine import predict_volume
from lesionseg.training.fit import load_checkpoint


def load_model_file(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, list[int]]:
    """A ``model.pt`` written by a training stage -> (network in eval mode, its sliding-window size)."""
    payload = load_checkpoint(Path(path))
    model = build_network(payload["arch"], **payload["network"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), list(payload["roi_size"])


def predict_mask(model: torch.nn.Module, image: np.ndarray, roi_size: list[int], *,
                 device: torch.device | str = "cpu", threshold: float = 0.5, amp: bool = False) -> np.ndarray:
    """Binary (uint8) lesion mask for one prepared 3D image, under ``torch.inference_mode``; ``amp``: the
    training path's mixed precision (:func:`lesionseg.training.precision.resolve_precision`), fp32 without it."""
    tensor = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    prob = predict_volume(model, tensor, roi_size, torch.device(device), amp=amp)
    return (prob[0] > threshold).cpu().numpy().astype(np.uint8)


@dataclass
class Segmenter:
    """A trained network plus the preprocessing it was trained with: raw scan in, mask on its grid out.
    ``amp``: predict with the mixed precision the model was trained with (``train.amp``: bf16 on CPUs with
    native bf16, fp16 on CUDA), as validation did; fp32 without it."""

    model: torch.nn.Module
    roi_size: list[int]
    preprocessing: dict[str, Any]  # target_spacing, shape, clip_percentiles, crop (from the prepared manifest)
    postprocessing: dict[str, Any] = field(default_factory=dict)  # head_only; min_lesion_mm3 (chosen on validation)
    amp: bool = False

    @classmethod
    def from_file(cls, path: str | Path, *, amp: bool = False) -> "Segmenter":
        """Load a ``model.pt`` written by a training stage."""
        model, roi_size = load_model_file(path)
        payload = load_checkpoint(Path(path))
        return cls(model, roi_size, dict(payload["preprocessing"]), dict(payload.get("postprocessing") or {}),
                   amp=amp)

    def segment(self, volume: Volume) -> np.ndarray:
        """uint8 lesion mask of ``volume``'s shape, in its voxel grid (any orientation and spacing), without the
        voxels outside the head (``head_only``) and the lesion components smaller than the model's ``min_lesion_mm3``
        (chosen on its validation data): :mod:`lesionseg.postprocess`."""
        p = self.preprocessing
        image, _, affine = prepare_volume(volume, None, target_spacing=p["target_spacing"], shape=p["shape"],
                                          clip_percentiles=tuple(p["clip_percentiles"]), crop=p.get("crop", "head"))
        prepared_mask = predict_mask(self.model, image, self.roi_size, amp=self.amp)
        if self.postprocessing.get("head_only", False):
            prepared_mask = keep_inside_head(prepared_mask, image)
        mask = restore_to_input(prepared_mask, affine, volume)
        return remove_small_lesions(mask, float(self.postprocessing.get("min_lesion_mm3", 0.0)),
                                    float(np.prod(volume.spacing)))


def predict_files(segmenter: Segmenter, inputs: Sequence[str | Path], out_dir: str | Path,
                  *, progress: bool = True) -> pd.DataFrame:
    """Segment each NIfTI in ``inputs``; write ``OUT/<name>_mask.nii.gz`` (uint8, the input's affine and
    header) and ``OUT/volumes.csv`` (lesion volume in mm3 per scan). Every input is read and checked
    before anything is written."""
    volumes = [(Path(p), read_volume(p)) for p in inputs]  # fail on a bad input before writing anything
    out_dir = Path(out_dir)
    rows = []
    for path, volume in tqdm(volumes, desc="predict", unit="scan", disable=not progress):
        mask = segmenter.segment(volume)
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        header = volume.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        write_volume(out_dir / f"{stem}_mask.nii.gz", mask, volume.affine, header=header)
        voxel_mm3 = float(np.prod(volume.spacing))
        rows.append({"input": str(path), "mask": str(out_dir / f"{stem}_mask.nii.gz"),
                     "lesion_voxels": int(mask.sum()), "lesion_volume_mm3": float(mask.sum()) * voxel_mm3})
    table = pd.DataFrame(rows)
    write_text(out_dir / "volumes.csv", table.to_csv(index=False, float_format="%.6g"))
    return table


def predict_cases(segmenter: Segmenter, raw_dir: str | Path, case_ids: Sequence[str], out_dir: str | Path,
                  *, progress: bool = False) -> Path:
    """Segment the scans ``case_ids`` of the nnU-Net raw dataset ``raw_dir``; write ``OUT/CASE.nii.gz`` (uint8, on
    each scan's own grid, with its affine and header: a viewer opens it over the scan, and any tool can score
    it) as one atomic folder. Returns ``out_dir``."""
    from lesionseg.data.dataset import read_cases
    from lesionseg.data.io import atomic_dir
    from lesionseg.errors import DataError

    records = {r.case_id: r for r in read_cases(raw_dir)}
    missing = [c for c in case_ids if c not in records]
    if missing:
        raise DataError(f"{raw_dir}: no scans {missing[:3]}; the split and the raw dataset disagree: re-run dvc repro")
    with atomic_dir(out_dir) as tmp:
        for case_id in tqdm(case_ids, desc="predict", unit="scan", disable=not progress):
            volume = read_volume(records[case_id].image)
            header = volume.header.copy()
            header.set_data_dtype(np.uint8)
            header.set_slope_inter(1.0, 0.0)
            mask = np.asarray(segmenter.segment(volume), dtype=np.uint8)
            write_volume(tmp / f"{case_id}.nii.gz", mask, volume.affine, header=header)
    return Path(out_dir)
