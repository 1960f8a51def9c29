"""Typed configuration built from ``params.yaml`` sections.

Configuration flows one way: a stage entry point reads its own section of ``params.yaml``, turns it into
one of these dataclasses (unknown keys and wrong types are a :class:`ConfigError` naming the key), and
passes plain values on to the library.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from lesionseg.errors import ConfigError

T = TypeVar("T")

STRATEGIES = ("scratch", "partial", "full")
LOSSES = ("dice", "dicece")


@dataclass(frozen=True)
class AugmentConfig:
    """MONAI augmentation strengths (used only when a run has ``augment=True``)."""

    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity_prob: float = 0.5
    noise_prob: float = 0.3
    noise_std: float = 0.1
    bias_field_prob: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained: optimiser, loss, schedule, early stopping, inference window."""

    epochs: int = 10
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "dice"
    patience: int = 5
    seed: int = 0
    num_threads: int = 2
    patch_size: list[int] | None = None  # None: train on whole prepared volumes
    sw_overlap: float = 0.25
    device: str = "auto"  # "auto" picks CUDA when present
    amp: bool = True  # mixed precision, used on CUDA only
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"train.loss={self.loss!r} is not one of {LOSSES}; fix params.yaml")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 1; fix params.yaml")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0; fix params.yaml")


def _type_ok(value: Any, annotation: Any) -> bool:
    """Loose runtime check of a YAML value against a dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item_type) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, Mapping)
    if annotation is Any:
        return True
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``; ``where`` names the section in error messages."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = from_mapping(annotation, value, f"{where}.{name}")
            continue
        if not _type_ok(value, annotation):
            raise ConfigError(
                f"{where}.{name}={value!r} has the wrong type (expected {_type_name(annotation)}); fix params.yaml"
            )
        kwargs[name] = float(value) if annotation is float else value
    return cls(**kwargs)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml`` (one-line :class:`ConfigError` if missing or malformed)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}; fix the file") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level; fix the file")
    return params


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One top-level section of params.yaml; missing sections are a clear error."""
    if name not in params:
        raise ConfigError(f"params.yaml: missing section '{name}'; add it (see the README's params reference)")
    value = params[name]
    if not isinstance(value, Mapping):
        raise ConfigError(f"params.yaml: section '{name}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested params to dotted keys (``train.augment.flip_prob``), as MLflow params want them."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            flat.update(flatten(dataclasses.asdict(value), f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
