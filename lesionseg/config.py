"""Typed configuration built from ``params.yaml``: one frozen dataclass per section.

Configuration flows one way: a stage entry point (or the CLI) calls :func:`load_config`, takes the sections
it needs (unknown keys and wrong types are a :class:`ConfigError` naming the key), and passes typed values
on to the library. No library module reads params.yaml.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from lesionseg.arm import ARM_STRATEGIES, Arm
from lesionseg.errors import ConfigError

T = TypeVar("T")

STRATEGIES = ("scratch", "partial", "full")
PIPELINE_WEIGHTS = "models/pretrained"  # finetune.source naming this pipeline's pretrain@MODEL outputs  # how a network is trained; an arm may also be tuned
LOSSES = ("dice", "dicece")
LR_SCHEDULES = ("poly", "cosine", "constant")


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
    """How one network is trained: a budget of optimizer steps (as nnU-Net counts it), the schedule, the
    loss, validation and early stopping, the sampling of training cases, the inference window.

    An "epoch" is ``iterations_per_epoch`` optimizer steps on batches drawn with replacement (lesion scans
    drawn with probability ``lesion_fraction``), followed by one validation; so every sample size and every
    arm gets the same ``epochs * iterations_per_epoch`` updates.
    """

    epochs: int = 100
    iterations_per_epoch: int = 20
    batch_size: int = 2
    lr: float = 1e-3
    lr_schedule: str = "poly"  # poly (nnU-Net's, power 0.9) | cosine | constant
    weight_decay: float = 3e-5
    loss: str = "dicece"
    patience_steps: int | None = None  # stop when the smoothed validation Dice has not improved for this many
    # steps; None: no early stopping, every run takes the whole budget (nnU-Net's default)
    val_ema: float = 0.5  # checkpoint and patience on an EMA of validation Dice (nnU-Net: 0.9 over 1000 epochs); 0 = raw
    lesion_fraction: float = 0.75  # share of drawn training cases that hold a lesion (when both kinds exist)
    seed: int = 0
    num_threads: int = 2
    patch_size: list[int] | None = None  # None: train on whole prepared volumes
    sw_overlap: float = 0.25
    device: str = "auto"  # "auto" picks CUDA when present
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16, fp32 on other CPUs
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"train.loss={self.loss!r} is not one of {LOSSES}; fix params.yaml")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule={self.lr_schedule!r} is not one of {LR_SCHEDULES}; fix params.yaml")
        for name in ("epochs", "iterations_per_epoch", "batch_size", "patience_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 1; fix params.yaml")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0; fix params.yaml")
        if not 0 <= self.val_ema < 1:
            raise ConfigError(f"train.val_ema={self.val_ema} must be in [0, 1); fix params.yaml")
        if not 0 <= self.lesion_fraction <= 1:
            raise ConfigError(f"train.lesion_fraction={self.lesion_fraction} must be in [0, 1]; fix params.yaml")

    @property
    def budget_steps(self) -> int:
        """Optimizer steps of a run that is not stopped early."""
        return self.epochs * self.iterations_per_epoch


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
        annotation = _optional_dataclass(hints[name]) if value is not None else hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = from_mapping(annotation, value, f"{where}.{name}")
            continue
        if not _type_ok(value, annotation):
            raise ConfigError(
                f"{where}.{name}={value!r} has the wrong type (expected {_type_name(annotation)}); fix params.yaml"
            )
        kwargs[name] = float(value) if annotation is float else value
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if required - set(kwargs):
        raise ConfigError(f"{where}: missing key(s) {sorted(required - set(kwargs))}; add them to params.yaml")
    return cls(**kwargs)


def _optional_dataclass(annotation: Any) -> Any:
    """``X`` for an annotation ``X | None`` where X is a dataclass, else the annotation itself."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else annotation


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml`` (one-line :class:`ConfigError` if missing or malformed)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the project root or pass --project DIR") from None
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


# --- one frozen dataclass per params.yaml section -------------------------------------------------------------


DATASET_KINDS = ("synthetic", "bruker", "nifti")


def _check_dataset_name(name: str, where: str) -> None:
    """A dataset name is a folder name under data/raw/ and a DVC stage key: letters, digits, '-', '_'."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ConfigError(f"{where}: dataset name {name!r} must be letters, digits, '-' or '_' (it names "
                          "data/raw/NAME); fix params.yaml")


@dataclass(frozen=True)
class SyntheticDataset:
    """``datasets.synthetic.NAME``: generated here as ParaVision studies (stage synthesize@NAME), then imported
    like a lab's (stage import-synthetic@NAME). Same seed, same bytes."""

    domain: str  # rat | mouse
    cases: int
    seed: int
    matrix: int | None = None  # in-plane matrix; None = the domain's paper size
    n_slices: int | None = None
    sham_fraction: float = 0.25
    case_prefix: str | None = None  # case ids PREFIX_000...; None = the domain's name (keep cohorts apart)

    def __post_init__(self) -> None:
        if self.domain not in ("rat", "mouse"):
            raise ConfigError(f"datasets.synthetic: domain={self.domain!r} is not rat or mouse; fix params.yaml")
        if self.cases < 1:
            raise ConfigError(f"datasets.synthetic: cases={self.cases} must be >= 1; fix params.yaml")


@dataclass(frozen=True)
class BrukerDataset:
    """``datasets.bruker.NAME``: a lab's ParaVision studies and the masks drawn on them (stage import-bruker@NAME,
    brkraw, subject RAS)."""

    studies: str  # a folder of studies (folders or .zip exports), one study, or one .zip (relative to the project)
    masks: str  # CASE.nii.gz / CASE.seg.nrrd (ITK-SNAP, 3D Slicer) and an optional cases.csv of groups
    protocol: str = "T2"  # regular expression for the T2w scan's protocol name ...
    scan_id: int | None = None  # ... or the scan's E number
    subject_type: str | None = None  # override what the scanner recorded, e.g. Quadruped
    subject_pose: str | None = None  # e.g. Head_Prone

    def __post_init__(self) -> None:
        if not self.studies or not self.masks:
            raise ConfigError("datasets.bruker: studies and masks must name a folder (or a study .zip); fix params.yaml")


@dataclass(frozen=True)
class NiftiDataset:
    """``datasets.nifti.NAME``: a dataset already in the nnU-Net v2 raw layout (stage import-nifti@NAME validates
    and copies it to data/raw/NAME)."""

    path: str


@dataclass(frozen=True)
class DatasetsConfig:
    """``datasets``: every dataset the study uses, by kind; each lands in ``data/raw/NAME``. dvc.yaml runs the
    stages of a kind (``foreach``) for its declared datasets only, so an empty kind runs nothing."""

    synthetic: dict[str, SyntheticDataset] = field(default_factory=dict)
    bruker: dict[str, BrukerDataset] = field(default_factory=dict)
    nifti: dict[str, NiftiDataset] = field(default_factory=dict)

    @classmethod
    def from_section(cls, values: Mapping[str, Any]) -> "DatasetsConfig":
        values = dict(values)
        unknown = sorted(set(values) - set(DATASET_KINDS))
        if unknown:
            raise ConfigError(f"params.yaml datasets: unknown kind(s) {unknown}; kinds are {list(DATASET_KINDS)}")
        types_ = {"synthetic": SyntheticDataset, "bruker": BrukerDataset, "nifti": NiftiDataset}
        built: dict[str, dict[str, Any]] = {}
        seen: dict[str, str] = {}
        for kind in DATASET_KINDS:
            entries = values.get(kind) or {}
            if not isinstance(entries, Mapping):
                raise ConfigError(f"params.yaml datasets.{kind} must map dataset names to settings (or be {{}})")
            for name, spec in entries.items():
                _check_dataset_name(name, f"params.yaml datasets.{kind}")
                if name in seen:
                    raise ConfigError(f"params.yaml datasets: {name!r} is declared as {seen[name]} and {kind}; "
                                      "give each dataset one kind")
                seen[name] = kind
            built[kind] = {name: from_mapping(types_[kind], spec, f"params.yaml datasets.{kind}.{name}")
                           for name, spec in entries.items()}
        return cls(**built)

    def kind_of(self, name: str) -> str:
        """The kind of dataset ``name`` (a ConfigError when none declares it)."""
        for kind in DATASET_KINDS:
            if name in getattr(self, kind):
                return kind
        raise ConfigError(f"params.yaml: dataset {name!r} is not declared under datasets.synthetic, .bruker or "
                          f".nifti; declared: {self.names()}")

    def synthetic_dataset(self, name: str) -> SyntheticDataset:
        return self._of_kind("synthetic", name)

    def synthetic_as_bruker(self, name: str, studies: str) -> BrukerDataset:
        """The synthetic dataset ``name`` as the ParaVision studies it was written as (``studies``, the masks in
        its ``labels/``), to import like a lab's."""
        self.synthetic_dataset(name)  # declared, or a one-line error
        return BrukerDataset(studies=studies, masks=f"{studies}/labels")

    def bruker_dataset(self, name: str) -> BrukerDataset:
        return self._of_kind("bruker", name)

    def nifti_dataset(self, name: str) -> NiftiDataset:
        return self._of_kind("nifti", name)

    def _of_kind(self, kind: str, name: str) -> Any:
        entries = getattr(self, kind)
        if name not in entries:
            raise ConfigError(f"params.yaml: datasets.{kind}.{name} is not declared; declared {kind} datasets: "
                              f"{sorted(entries) or 'none'}")
        return entries[name]

    def names(self) -> list[str]:
        """Every declared dataset's name."""
        return [name for kind in DATASET_KINDS for name in getattr(self, kind)]


@dataclass(frozen=True)
class DatasetRef:
    """A raw dataset by name and path (the dataset a role names; its raw folder is data/raw/NAME)."""

    name: str
    raw: str


@dataclass(frozen=True)
class DataConfig:
    """``data``: which declared datasets are the source (pretraining) and the target (the study). Leave the source
    out when fine-tuning starts from published weights (``finetune.source``)."""

    source: str | None = None  # each stage reads (and DVC tracks) only the role it uses
    target: str | None = None

    def __post_init__(self) -> None:
        for role in ("source", "target"):
            if getattr(self, role) is not None:
                _check_dataset_name(getattr(self, role), f"params.yaml data.{role}")

    def role(self, role: str) -> DatasetRef:
        """The dataset of ``role`` (source or target)."""
        if role not in ("source", "target"):
            raise ConfigError(f"role={role!r} must be source or target")
        name = self.source if role == "source" else self.target
        if name is None:
            raise ConfigError(f"params.yaml: data.{role} is missing; name one of the datasets declared under datasets")
        return DatasetRef(name, f"data/raw/{name}")


@dataclass(frozen=True)
class GridConfig:
    """The prepared grid of one dataset (``prepare.<name>``)."""

    target_spacing: list[float]
    shape: list[int]


@dataclass(frozen=True)
class PrepareConfig:
    """``prepare``: intensity clipping plus one :class:`GridConfig` per dataset name."""

    clip_percentiles: tuple[float, float]
    grids: dict[str, GridConfig]

    @classmethod
    def from_section(cls, values: Mapping[str, Any]) -> "PrepareConfig":
        values = dict(values)
        clip = values.pop("clip_percentiles", [0.5, 99.5])
        if not _type_ok(clip, list[float]) or len(clip) != 2:
            raise ConfigError(f"prepare.clip_percentiles={clip!r} must be two numbers; fix params.yaml")
        grids = {name: from_mapping(GridConfig, grid, f"params.yaml prepare.{name}") for name, grid in values.items()}
        return cls(tuple(float(c) for c in clip), grids)

    def grid(self, dataset: str) -> GridConfig:
        """The grid of ``dataset`` (a missing entry is a ConfigError)."""
        if dataset not in self.grids:
            raise ConfigError(f"params.yaml: prepare.{dataset} is missing; add its target_spacing and shape")
        return self.grids[dataset]


@dataclass(frozen=True)
class SplitConfig:
    """``split``: train/val/test fractions, stratified by group and lesion-size bin."""

    seed: int
    fractions: list[float]
    n_size_bins: int = 3


@dataclass(frozen=True)
class SubsetsConfig:
    """``subsets``: nested, lesion-balanced training sets of each size."""

    seed: int
    sizes: list[int]
    n_size_bins: int = 3


@dataclass(frozen=True)
class NetworksConfig:
    """``networks``: constructor keywords (MONAI names) per network name."""

    kwargs: dict[str, dict]

    def of(self, model: str) -> dict[str, Any]:
        """Keyword arguments of ``model``."""
        if model not in self.kwargs:
            raise ConfigError(f"params.yaml: networks.{model} is missing; known networks: {sorted(self.kwargs)}")
        return dict(self.kwargs[model] or {})


@dataclass(frozen=True)
class PretrainConfig:
    """``pretrain``: the source-domain networks fine-tuning starts from."""

    models: list[str] = field(default_factory=lambda: ["ratlesnetv2"])
    augment: bool = False
    train: dict = field(default_factory=lambda: {"epochs": 80, "iterations_per_epoch": 15, "lr": 0.003,
                                                 "patience_steps": None})  # overrides of `train`

    def __post_init__(self) -> None:
        _check_train_overrides(self.train, "pretrain.train")


@dataclass(frozen=True)
class ArmSettings:
    """``finetune.arms.<strategy>``: its learning rate (None: ``train.lr``) and, for partial, the frozen blocks."""

    lr: float | None = None
    freeze_depth: dict[str, int] = field(default_factory=dict)  # model -> blocks kept frozen (partial only)

    def __post_init__(self) -> None:
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"finetune.arms: lr={self.lr} must be > 0; fix params.yaml")
        wrong = {m: d for m, d in self.freeze_depth.items() if not isinstance(d, int) or isinstance(d, bool) or d < 1}
        if wrong:
            raise ConfigError(f"finetune.arms.partial.freeze_depth: {wrong} must be block counts >= 1; fix params.yaml")


@dataclass(frozen=True)
class ArmsConfig:
    """``finetune.arms``: one :class:`ArmSettings` per strategy."""

    scratch: ArmSettings = field(default_factory=lambda: ArmSettings(lr=0.003))
    partial: ArmSettings = field(default_factory=lambda: ArmSettings(
        lr=0.001, freeze_depth={"ratlesnetv2": 5, "unet": 3, "dynunet": 3, "unetr": 14}))
    full: ArmSettings = field(default_factory=lambda: ArmSettings(lr=0.001))


def _check_train_overrides(overrides: Mapping[str, Any], where: str) -> None:
    """A stage's ``train:`` overrides name TrainConfig keys (their values are checked when merged)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise ConfigError(f"params.yaml {where}: unknown key(s) {unknown}; valid keys are those of `train`")


@dataclass(frozen=True)
class FinetuneConfig:
    """``finetune``: the transfer study's matrix and where its pretrained weights come from."""

    # where transfer arms start: `models/pretrained` (this pipeline's pretrain@MODEL; `pretrain` means the same)
    # or a weights file, e.g. the authors' published RatLesNetV2 (then leave pretrain.models empty)
    source: str = "pretrain"
    source_network: dict = field(default_factory=dict)  # a weights file's architecture, per model: every arm of
    # that model (scratch too) is built so, e.g. {ratlesnetv2: {filters: 32}} for the authors' weights
    models: list[str] = field(default_factory=lambda: ["ratlesnetv2"])
    strategies: list[str] = field(default_factory=lambda: ["full"])  # transfer only; scratch is its own stage
    sample_sizes: list[int] = field(default_factory=lambda: [4, 8, 16])
    augment: list[str] = field(default_factory=lambda: ["noaug"])
    # per strategy, what only its cells read (so dvc.yaml makes each cell depend on its own strategy's block):
    # the learning rate (else train.lr) and, for partial, how many blocks of each network stay frozen
    arms: ArmsConfig = field(default_factory=lambda: ArmsConfig())
    train: dict = field(default_factory=dict)  # overrides of `train` (checked against TrainConfig's keys here)

    def __post_init__(self) -> None:
        if self.source in ("pretrain", PIPELINE_WEIGHTS):  # the one spelling the training code knows
            object.__setattr__(self, "source", "pretrain")
        if self.source_network and not self.published:
            raise ConfigError("finetune.source_network describes a weights file, but finetune.source is this "
                              "pipeline's pretraining; set source to the file or empty source_network")
        for model, kwargs in self.source_network.items():
            if not isinstance(kwargs, Mapping):
                raise ConfigError(f"finetune.source_network.{model} must map keywords to values, e.g. {{filters: 32}}")
        _check_train_overrides(self.train, "finetune.train")
        wrong = [s for s in self.strategies if s not in ("partial", "full")]
        if wrong:
            raise ConfigError(f"finetune.strategies: {wrong} are not transfer strategies (partial, full); every model "
                              "and size trains from scratch in the `scratch` stage anyway; fix params.yaml")

    @property
    def published(self) -> bool:
        """Whether transfer starts from a weights file (published weights) instead of this pipeline's pretraining."""
        return self.source != "pretrain"

    def network(self, model: str, declared: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor keywords of ``model`` in this study: ``networks.<model>`` (``declared``), with the
        weights file's architecture on top when the source is one."""
        return {**declared, **(self.source_network.get(model) or {})}

    def lr_for(self, strategy: str) -> float | None:
        """The declared learning rate of ``strategy``, or None (then ``train.lr`` applies)."""
        arm = getattr(self.arms, strategy, None)
        return None if arm is None or arm.lr is None else float(arm.lr)

    def freeze_depth(self, model: str) -> int:
        """How many blocks of ``model`` partial fine-tuning keeps frozen."""
        depths = self.arms.partial.freeze_depth
        if model not in depths:
            raise ConfigError(f"params.yaml: finetune.arms.partial.freeze_depth.{model} is missing; "
                              "set how many blocks to freeze")
        return int(depths[model])


@dataclass(frozen=True)
class BaselineConfig:
    """``baseline``: MONAI networks trained from scratch, at sizes of their own (the `baseline` stage)."""

    models: list[str] = field(default_factory=lambda: ["unet"])
    sample_sizes: list[int] = field(default_factory=lambda: [16])
    augment: list[str] = field(default_factory=lambda: ["noaug"])


@dataclass(frozen=True)
class TuneConfig:
    """``tune``: the Optuna search of freeze_depth and lr per sample size."""

    model: str = "ratlesnetv2"
    sample_sizes: list[int] = field(default_factory=lambda: [16], compare=False)  # dvc.yaml's matrix only
    repeats: list[int] = field(default_factory=lambda: [0], compare=False)  # which repeats get a tuned arm
    n_trials: int = 3
    timeout_s: float | None = None
    lr_min: float = 1e-4
    lr_max: float = 1e-2
    tune_augment: bool = False
    pruner: str = "median"  # median | percentile | threshold | none
    pruner_startup_trials: int = 2
    pruner_warmup_epochs: int = 2
    pruner_percentile: float = 25.0
    pruner_threshold: float = 0.0  # threshold pruner: prune when val Dice is below this
    sampler_seed: int = 0
    storage: str = "tuning/journal.log"  # a journal file path, or an RDB URL (postgresql+psycopg2://...)
    heartbeat_s: int = 30  # RDB storages: a trial silent this long x3 is failed and retried
    train: dict = field(default_factory=lambda: {"epochs": 3})  # overrides of finetune's training for trials

    def __post_init__(self) -> None:
        _check_train_overrides(self.train, "tune.train")
        if not 0 < self.lr_min < self.lr_max:
            raise ConfigError(f"tune.lr_min={self.lr_min} / lr_max={self.lr_max}: need 0 < lr_min < lr_max")
        if self.pruner not in ("median", "percentile", "threshold", "none"):
            raise ConfigError(f"tune.pruner={self.pruner!r} is not one of median, percentile, threshold, none")

    def search_params(self) -> dict[str, Any]:
        """What shapes the search (logged on the study's parent run); not where it is stored."""
        skip = ("storage", "sample_sizes", "repeats", "train")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class StudyConfig:
    """``study``: how often every cell is repeated (each repeat: its own training seed and subset draw).

    ``repeats`` lists the repeat indices (``[0, 1]`` for R = 2) because dvc.yaml's ``matrix`` needs a list.
    """

    repeats: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate``."""

    n_overlays: int = 2


@dataclass(frozen=True)
class ArmRef:
    """An arm as a declared comparison names it; ``augment`` left out (None) means "within each of the
    study's augmentation settings"."""

    model: str
    strategy: str
    augment: bool | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ARM_STRATEGIES:
            raise ConfigError(f"report.comparisons: strategy={self.strategy!r} is not one of {ARM_STRATEGIES}")


@dataclass(frozen=True)
class Comparison:
    """``{treatment: ARM, control: ARM}``: run at every sample size where both arms have models."""

    treatment: ArmRef
    control: ArmRef

    def within(self, augments: Sequence[bool]) -> list[tuple[Arm, Arm]]:
        """The (treatment, control) arm pairs, one per augmentation setting when neither arm fixes one."""
        t, c = self.treatment, self.control
        settings = [(t.augment, c.augment)] if t.augment is not None or c.augment is not None else \
            [(a, a) for a in augments]
        return [(Arm(t.model, t.strategy, bool(c.augment if ta is None else ta)),
                 Arm(c.model, c.strategy, bool(t.augment if ca is None else ca))) for ta, ca in settings]


@dataclass(frozen=True)
class ReportConfig:
    """``report``: the comparisons, declared before any result, and the test's level."""

    comparisons: list[dict] = field(default_factory=list)  # [{treatment: ARM, control: ARM}], at every n
    alpha: float = 0.05  # after Holm's correction across all comparisons
    equivalence_margin: float = 0.03  # Dice; "equivalent" when the adjusted CI lies inside +-margin
    primary_sizes: list[int] | None = None  # the primary endpoint: the difference averaged over these sizes

    def __post_init__(self) -> None:
        self.declared()  # a malformed comparison fails when the section is read, not at the end of a study

    def declared(self) -> list[Comparison]:
        """The comparisons as values."""
        if not all(isinstance(c, Mapping) for c in self.comparisons):
            raise ConfigError("report.comparisons: each item must be {treatment: {model, strategy}, control: {...}}")
        return [from_mapping(Comparison, c, f"report.comparisons[{i}]") for i, c in enumerate(self.comparisons)]


@dataclass(frozen=True)
class PromoteConfig:
    """``promote``: when a candidate replaces the champion."""

    alpha: float = 0.05  # one-sided paired Wilcoxon: candidate's per-case Dice greater than the champion's;
    # the acceptance cohort needs more than log2(1 / alpha) lesion scans (5 at 0.05, 7 at 0.01) or promote refuses
    min_dice_gain: float = 0.0  # mean Dice must rise by more than this
    hd95_margin_mm: float = 0.5  # mean HD95 may not get worse by more than this
    min_dice_first: float = 0.5  # with no champion yet, the candidate needs at least this mean lesion Dice
    acceptance: str = "mouse-acceptance"  # the declared dataset of new animals (data/raw/NAME) promote decides on
    max_case_drop: float = 0.2  # refuse when any acceptance lesion scan loses more Dice than this
    max_looks: int = 3  # decisions allowed on one acceptance cohort; each is tested at alpha / max_looks

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ConfigError(f"promote.alpha={self.alpha} must be > 0; fix params.yaml")
        if not self.max_case_drop >= 0 or not int(self.max_looks) >= 1:
            raise ConfigError(f"promote.max_case_drop={self.max_case_drop} must be >= 0 and promote.max_looks="
                              f"{self.max_looks} >= 1; fix params.yaml")
        if not 0 <= self.min_dice_first <= 1:
            raise ConfigError(f"promote.min_dice_first={self.min_dice_first} must be in [0, 1]; fix params.yaml")


@dataclass(frozen=True)
class RuntimeConfig:
    """``runtime``: how stage processes start. No result depends on it, so no stage lists it among its params."""

    warm_start: bool = True  # hand each stage to a server that imported torch, MONAI, MLflow once (lesionseg.warmstart)
    idle_seconds: float = 120.0  # that server exits after this long without a stage

    def __post_init__(self) -> None:
        if not self.idle_seconds > 0:
            raise ConfigError(f"runtime.idle_seconds={self.idle_seconds} must be > 0; fix params.yaml")


SECTIONS: dict[str, Any] = {
    "datasets": DatasetsConfig.from_section, "data": DataConfig, "prepare": PrepareConfig.from_section,
    "split": SplitConfig, "subsets": SubsetsConfig, "networks": lambda v: NetworksConfig(dict(v)),
    "train": TrainConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig, "baseline": BaselineConfig,
    "tune": TuneConfig, "study": StudyConfig, "evaluate": EvaluateConfig, "report": ReportConfig, "promote": PromoteConfig,
    "runtime": RuntimeConfig,
}


class ProjectConfig:
    """params.yaml as typed sections. Each section is built and validated once, when first used, so a stage
    needs (and DVC tracks) only the sections it reads; a missing one is a one-line :class:`ConfigError`."""

    def __init__(self, params: Mapping[str, Any], source: str = "params.yaml") -> None:
        self._params = dict(params)
        self._source = source
        self._built: dict[str, Any] = {}

    def _section(self, name: str) -> Any:
        if name not in self._built:
            values = section(self._params, name)
            build = SECTIONS[name]
            self._built[name] = (build(values) if not isinstance(build, type)
                                 else from_mapping(build, values, f"{self._source} {name}"))
        return self._built[name]

    def __getattr__(self, name: str) -> Any:
        if name in SECTIONS:
            return self._section(name)
        raise AttributeError(name)

    def train_for(self, stage: str) -> TrainConfig:
        """``train`` merged with the stage's own ``train:`` overrides (``pretrain``, ``finetune`` or ``tune``;
        tune's overrides apply on top of finetune's)."""
        chain = {"pretrain": ["pretrain"], "finetune": ["finetune"], "tune": ["finetune", "tune"]}[stage]
        merged = dict(section(self._params, "train"))
        for name in chain:
            overrides = dict(self._section(name).train or {})
            if "augment" in merged and "augment" in overrides:
                overrides["augment"] = {**merged["augment"], **overrides["augment"]}
            merged.update(overrides)
        return from_mapping(TrainConfig, merged, f"{self._source} {stage}.train")


def load_config(path: str | Path) -> ProjectConfig:
    """The typed configuration of the params file at ``path``."""
    return ProjectConfig(load_params(path), str(Path(path).name))


def load_runtime(path: str | Path) -> RuntimeConfig | None:
    """The ``runtime`` section of the params file at ``path``; None when that file or section is missing or broken
    (a stage then runs without a warm start, and reports a broken params.yaml itself)."""
    try:
        return load_config(path).runtime
    except (ConfigError, OSError):
        return None


# --- the paper-scale study: params-full.yaml, overrides of params.yaml ---------------------------------------

FULL_STUDY_FILE = "params-full.yaml"


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with ``overrides`` set leaf by leaf, as ``dvc exp run -S KEY=VALUE`` sets them: nested
    mappings merge, any other value (a list too) replaces the old one."""
    merged = dict(params)
    for key, value in overrides.items():
        old = merged.get(key)
        merged[key] = (apply_overrides(old, value) if isinstance(value, Mapping) and isinstance(old, Mapping)
                       else value)
    return merged


def set_param_args(overrides: Mapping[str, Any]) -> list[str]:
    """``overrides`` as ``dvc exp run`` arguments: ``-S``, ``KEY=VALUE`` per leaf (VALUE in YAML flow style)."""
    args: list[str] = []
    for key, value in flatten(overrides).items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        args += ["-S", f"{key}={text}"]
    return args


def load_overrides(path: str | Path) -> dict[str, Any]:
    """An overrides file such as params-full.yaml: sections of params.yaml with only the keys it changes."""
    return load_params(path)


def load_full_config(root: str | Path) -> ProjectConfig:
    """The paper-scale study: ``<root>/params.yaml`` with ``<root>/params-full.yaml`` applied."""
    root = Path(root)
    params = apply_overrides(load_params(root / "params.yaml"), load_overrides(root / FULL_STUDY_FILE))
    return ProjectConfig(params, f"params.yaml + {FULL_STUDY_FILE}")


def full_study_command(root: str | Path, name: str = "full-study") -> str:
    """The shell command that runs the paper-scale study as a DVC experiment: ``dvc exp run -n NAME`` with one
    ``-S`` per key of ``<root>/params-full.yaml`` (``lesionseg study full-overrides`` prints it)."""
    import shlex

    args = ["dvc", "exp", "run", "-n", name, *set_param_args(load_overrides(Path(root) / FULL_STUDY_FILE))]
    return " ".join(shlex.quote(a) for a in args)
