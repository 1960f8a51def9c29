"""The MLflow pyfunc flavour of a lesionseg model: a volume (and its spacing) in, a binary mask out.

Request (``mlflow models serve``): ``{"inputs": {"volume": <X x Y x Z or B x X x Y x Z numbers>,
"spacing": [sx, sy, sz]}}``; the volume's axes are taken as RAS (x = left->right, y = posterior->anterior,
z = inferior->superior) with ``spacing`` in mm. The response holds a uint8 mask of the same shape.
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np

from lesionseg.data.io import Volume
from lesionseg.errors import DataError
from lesionseg.inference import Segmenter


def volume_from_array(data: np.ndarray, spacing) -> Volume:
    """A RAS volume with the given voxel ``spacing`` (mm)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(f"volume: expected 3 axes (x, y, z), got shape {data.shape}; send one volume per item")
    if not np.isfinite(data).all():
        raise DataError("volume: contains NaN/Inf; replace them before sending")
    spacing = np.asarray(spacing if spacing is not None else (1.0, 1.0, 1.0), dtype=np.float64).reshape(-1)[:3]
    return Volume(data=data, affine=np.diag([*spacing, 1.0]), header=nib.Nifti1Header())


class LesionSegModel(mlflow.pyfunc.PythonModel):
    """Wraps :class:`~lesionseg.inference.Segmenter`; the weights file is the model's only artifact."""

    def load_context(self, context) -> None:
        self.segmenter = Segmenter.from_file(context.artifacts["weights"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would try to enforce them
        """``model_input`` = {"volume": (X,Y,Z) or (B,X,Y,Z), "spacing": (3,) or (B,3)} -> uint8 mask(s)."""
        volume = np.asarray(model_input["volume"], dtype=np.float32)
        spacing = np.asarray(model_input.get("spacing", (1.0, 1.0, 1.0)), dtype=np.float64)
        if volume.ndim == 3:
            return self.segmenter.segment(volume_from_array(volume, spacing))
        if volume.ndim != 4:
            raise DataError(f"volume: expected (X,Y,Z) or (B,X,Y,Z), got shape {volume.shape}")
        spacings = np.broadcast_to(spacing.reshape(-1, 3), (len(volume), 3))
        return np.stack([self.segmenter.segment(volume_from_array(v, s)) for v, s in zip(volume, spacings)])


def log_pyfunc_model(weights_file: str, pip_requirements: list[str]):
    """Log ``weights_file`` (a training stage's model.pt) as a pyfunc model named ``model``."""
    return mlflow.pyfunc.log_model(
        name="model", python_model=LesionSegModel(), artifacts={"weights": weights_file},
        pip_requirements=pip_requirements, code_paths=[str(Path(__file__).resolve().parent)],
    )


def load_segmenter(model: str) -> Segmenter:
    """A model given as a ``model.pt`` path, a ``runs:/`` URI or a ``models:/`` registry URI."""
    if Path(model).is_file():
        return Segmenter.from_file(model)
    try:
        loaded = mlflow.pyfunc.load_model(model)
    except Exception as err:  # MLflow raises several types for a bad URI
        reason = str(err).splitlines()[0][:160]
        raise DataError(f"{model}: cannot load the model ({reason}); give a model.pt path, runs:/ or models:/ URI") from None
    python_model = loaded.unwrap_python_model()
    if not isinstance(python_model, LesionSegModel):
        raise DataError(f"{model}: not a lesionseg model (expected the pyfunc logged by a training stage)")
    return python_model.segmenter
