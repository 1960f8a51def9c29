"""Load a trained model file and predict lesion masks on prepared volumes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lesionseg.networks import build_network
from lesionseg.training.engine import predict_volume
from lesionseg.training.fit import load_checkpoint


def load_model_file(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, list[int]]:
    """A ``model.pt`` written by a training stage -> (network in eval mode, its sliding-window size)."""
    payload = load_checkpoint(Path(path))
    model = build_network(payload["arch"], **payload["network"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), list(payload["roi_size"])


def predict_mask(model: torch.nn.Module, image: np.ndarray, roi_size: list[int], *,
                 device: torch.device | str = "cpu", threshold: float = 0.5) -> np.ndarray:
    """Binary (uint8) lesion mask for one prepared 3D image."""
    tensor = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    prob = predict_volume(model, tensor, roi_size, torch.device(device))
    return (prob[0] > threshold).cpu().numpy().astype(np.uint8)
