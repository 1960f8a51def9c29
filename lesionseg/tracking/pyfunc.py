"""The models a run logs: the pyfunc flavour (a volume and its spacing in, a binary mask out), which is
registered, and the bare network (tensor in, logits out).

Request (``mlflow models serve``): ``{"inputs": {"volume": <X x Y x Z or B x X x Y x Z numbers>,
"spacing": [sx, sy, sz]}}``; the volume's axes are taken as RAS (x = left->right, y = posterior->anterior,
z = inferior->superior) with ``spacing`` in mm (one triple, or one per volume of a batch). The response holds a
uint8 mask of the same shape. A bad request gets HTTP 400 with a one-line ``message`` (:class:`RequestError`).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModelContext
import nibabel as nib
import numpy as np
import torch

from lesionseg.data.io import Volume
from lesionseg.errors import DataError
from lesionseg.inference import Segmenter

PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "monai", "nibabel", "scipy", "numpy", "mlflow"]
REQUEST_FIELDS = ("volume", "spacing")
DEFAULT_SPACING_MM = (1.0, 1.0, 1.0)
MAX_RESAMPLED_VOXELS = 2**26
REQUEST_FORMAT = '{"inputs": {"volume": [...], "spacing": [sx, sy, sz]}}'
_KINDS = {"U": "strings", "S": "bytes", "O": "nulls or mixed values", "b": "true/false values", "c": "complex numbers"}
_SCALARS = {str: "a string", bytes: "bytes", bool: "true/false", dict: "an object", type(None): "null"}


class RequestError(MlflowException):
    """A bad request to the pyfunc: INVALID_PARAMETER_VALUE (HTTP 400) with a one-line message.

    MLflow's scoring server rewrites the ``message`` of an exception raised in ``predict`` to quote the whole
    request; this one keeps its line (``args[0]``) and ignores the rewrite."""

    def __init__(self, line: str) -> None:
        super().__init__(line, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    @message.setter
    def message(self, _rewritten: str) -> None:
        pass


def _describe(array: np.ndarray) -> str:
    """What a non-numeric array holds, in words."""
    if array.ndim == 0:
        value = array.item()
        return _SCALARS.get(type(value), f"a {type(value).__name__}")
    return _KINDS.get(array.dtype.kind, f"values of type {array.dtype}")


def _numbers(value: Any, field: str) -> np.ndarray:
    """``value`` as a numeric array, or a :class:`RequestError` naming ``field``."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise RequestError(f"{field}: expected a regular array of numbers, got nested lists of unequal lengths") from None
    if array.dtype.kind not in "iuf":
        raise RequestError(f"{field}: expected numbers, got {_describe(array)}")
    return array


def parse_volume(value: Any) -> np.ndarray:
    """``value`` as a float32 volume (X, Y, Z) or batch (B, X, Y, Z) with finite voxels."""
    volume = _numbers(value, "volume")
    if volume.ndim not in (3, 4) or 0 in volume.shape:
        raise RequestError(f"volume: expected (X,Y,Z) or (B,X,Y,Z), got shape {volume.shape}")
    volume = volume.astype(np.float32, copy=False)
    if not np.isfinite(volume).all():
        raise RequestError("volume: contains NaN or Inf; replace them before sending")
    return volume


def parse_spacings(value: Any, n_volumes: int) -> np.ndarray:
    """One (sx, sy, sz) in mm per volume: ``value`` is a triple, or one triple per volume."""
    spacing = _numbers(DEFAULT_SPACING_MM if value is None else value, "spacing").astype(np.float64)
    if spacing.shape not in ((3,), (1, 3), (n_volumes, 3)):
        per_volume = f" or ({n_volumes},3), one per volume" if n_volumes > 1 else ""
        raise RequestError(f"spacing: expected [sx, sy, sz] in mm{per_volume}, got shape {spacing.shape}")
    valid = np.isfinite(spacing) & (spacing > 0)
    if not valid.all():
        raise RequestError(f"spacing: expected positive finite numbers (mm), got {spacing[~valid][0]:g}")
    return np.broadcast_to(spacing.reshape(-1, 3), (n_volumes, 3))


def _request_kind(model_input: Any) -> str:
    """A short description of a request that is not a volume/spacing mapping."""
    if isinstance(model_input, Mapping):
        return f"fields {sorted(map(str, model_input))}"
    return type(model_input).__name__


def parse_request(model_input: Any) -> tuple[np.ndarray, np.ndarray]:
    """``{"volume": ..., "spacing": ...}`` -> (volume as :func:`parse_volume` gives it, spacings (B, 3) mm)."""
    if not isinstance(model_input, Mapping) or "volume" not in model_input:
        raise RequestError(f"request: expected {REQUEST_FORMAT}, got {_request_kind(model_input)}")
    unknown = sorted(set(model_input) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(f"request: unknown fields {unknown}; expected {REQUEST_FORMAT}")
    volume = parse_volume(model_input["volume"])
    return volume, parse_spacings(model_input.get("spacing"), len(volume) if volume.ndim == 4 else 1)


def volume_from_array(data: np.ndarray, spacing: Sequence[float]) -> Volume:
    """A RAS volume of ``data`` (X, Y, Z) with voxel ``spacing`` (mm), as :func:`parse_request` checked it."""
    return Volume(data=data, affine=np.diag([*np.asarray(spacing, dtype=np.float64), 1.0]), header=nib.Nifti1Header())


class LesionSegModel(mlflow.pyfunc.PythonModel):
    """Wraps :class:`~lesionseg.inference.Segmenter`; the weights file is the model's only artifact."""

    def load_context(self, context: PythonModelContext) -> None:
        self.segmenter = Segmenter.from_file(context.artifacts["weights"])

    def predict(self, context: PythonModelContext, model_input,  # no hint: MLflow 3.17 types list[...] inputs only
                params: dict[str, Any] | None = None) -> np.ndarray:
        """``model_input`` = {"volume": (X,Y,Z) or (B,X,Y,Z), "spacing": (3,) or (B,3)} -> uint8 mask(s) of the
        volume's shape; a bad request raises :class:`RequestError`."""
        volume, spacings = parse_request(model_input)
        batch = volume if volume.ndim == 4 else volume[None]
        masks = np.stack([self.segment(v, s) for v, s in zip(batch, spacings)])
        return masks if volume.ndim == 4 else masks[0]

    def segment(self, data: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        """The mask of one checked (X, Y, Z) volume; a scan the segmenter cannot use raises :class:`RequestError`."""
        self.check_resampled_size(data.shape, spacing)
        try:
            return self.segmenter.segment(volume_from_array(data, spacing))
        except DataError as err:
            raise RequestError(str(err)) from None

    def check_resampled_size(self, shape: Sequence[int], spacing: np.ndarray) -> None:
        """Refuse a volume whose resampling onto the model's grid would exceed :data:`MAX_RESAMPLED_VOXELS`."""
        target = np.asarray(self.segmenter.preprocessing["target_spacing"], dtype=np.float64)
        voxels = float(np.prod(np.asarray(shape) * spacing / target))
        if voxels > MAX_RESAMPLED_VOXELS:
            raise RequestError(f"spacing: {np.round(spacing, 6).tolist()} mm puts a {tuple(shape)} volume on "
                               f"{voxels:.3g} voxels of the model's {target.tolist()} mm grid "
                               f"(limit {MAX_RESAMPLED_VOXELS:.3g}); is the spacing in mm?")


def log_pyfunc_model(weights_file: str) -> ModelInfo:
    """Log ``weights_file`` (a training stage's model.pt) as a pyfunc model named ``model``; the whole
    ``lesionseg`` package travels with it as code."""
    return mlflow.pyfunc.log_model(
        name="model", python_model=LesionSegModel(), artifacts={"weights": weights_file},
        pip_requirements=PIP_REQUIREMENTS, code_paths=[str(Path(__file__).resolve().parents[1])],
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


def log_network(model: torch.nn.Module, roi_size: Sequence[int]) -> ModelInfo:
    """Log the bare network (tensor in, logits out) as ``network``, with the pickle format: MLflow 3's
    default ``pt2`` export specialises on the example's shape, and a segmentation network must take any
    volume size and batch. The registered model is the pyfunc (volume in, mask out) beside it."""
    example = np.zeros((1, 1, *roi_size), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    return mlflow.pytorch.log_model(
        model, name="network", serialization_format="pickle", input_example=example,
        signature=infer_signature(example, output), pip_requirements=PIP_REQUIREMENTS,
    )
