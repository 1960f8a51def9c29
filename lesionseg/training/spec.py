"""What defines one training run (:class:`RunSpec`), and how a cell of the study becomes one.

The builders take typed configuration (:mod:`lesionseg.config`) and the project's :class:`Layout` as plain
arguments; nothing here reads params.yaml.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lesionseg.arm import Arm
from lesionseg.config import STRATEGIES, DatasetRef, FinetuneConfig, PretrainConfig, TrainConfig
from lesionseg.data.io import read_json
from lesionseg.data.preprocess import MANIFEST
from lesionseg.errors import ConfigError
from lesionseg.layout import Layout

AUGMENT_FLAGS = {"aug": True, "noaug": False}


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run (and nothing about where it is logged)."""

    stage: str  # "pretrain" | "finetune" | "tune"
    model: str
    network: dict[str, Any]
    strategy: str
    freeze_depth: int
    augment: bool
    sample_size: int | None
    prepared_dir: Path
    train_ids: Sequence[str]
    val_ids: Sequence[str]
    train: TrainConfig
    pretrained: Path | None = None
    domain: str = "mouse"
    repeat: int = 0
    tuned: bool = False  # the final run of a tuning study (its arm is "tuned" whatever depth it chose)

    @property
    def arm(self) -> Arm:
        """The study arm this run belongs to."""
        return Arm(self.model, "tuned" if self.tuned else self.strategy, self.augment, self.freeze_depth)

    @property
    def run_name(self) -> str:
        """What the MLflow runs table shows, e.g. ``ratlesnetv2/partial-d5/n8/aug/r0``."""
        if self.stage == "pretrain":
            return f"{self.model}/pretrain/{self.domain}"
        aug = "aug" if self.augment else "noaug"
        return f"{self.model}/{self.arm.strategy}-d{self.freeze_depth}/n{self.sample_size}/{aug}/r{self.repeat}"

    @property
    def precision(self) -> str:
        """The arithmetic ``train.amp`` gives on this machine: bf16, fp16 or fp32
        (:func:`lesionseg.training.precision.resolve_precision`)."""
        from lesionseg.training.engine import resolve_device
        from lesionseg.training.precision import resolve_precision

        return resolve_precision(resolve_device(self.train.device), self.train.amp)

    def fingerprint(self) -> str:
        """Hash of the spec, with its files by content (the prepared manifest, the pretrained weights), never
        by where the checkout lies: a checkpoint resumes only a run with the same fingerprint (a stale one from
        other params is never picked up), and a tuning study is found again from another clone or machine.
        The precision is part of it: a bf16 checkpoint or study is never continued in fp32 (a machine without
        native bf16), nor the other way round."""
        payload = dataclasses.asdict(self)
        payload["precision"] = self.precision
        payload["prepared_dir"] = _file_md5(Path(self.prepared_dir) / MANIFEST)
        payload["pretrained"] = _file_md5(self.pretrained) if self.pretrained else None
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def pretrain_spec(model: str, network: dict[str, Any], train: TrainConfig, pretrain: PretrainConfig,
                  source: DatasetRef, layout: Layout) -> RunSpec:
    """Train ``model`` from scratch on the source domain's train split, selected on its val split."""
    split = read_json(layout.split_file(source.name))
    return RunSpec(
        stage="pretrain", model=model, network=network, strategy="scratch", freeze_depth=0,
        augment=pretrain.augment, sample_size=len(split["train"]), prepared_dir=layout.processed(source.name),
        train_ids=split["train"], val_ids=split["val"], train=train, domain=source.name,
    )


def pretrained_weights(source: str, model: str, layout: Layout) -> Path:
    """Where fine-tuning starts from: ``finetune.source`` = ``pretrain`` (this pipeline's pretrain stage)
    or a path to a checkpoint (e.g. the authors' published RatLesNetV2 weights)."""
    return layout.pretrained_weights(model) if source == "pretrain" else layout.resolve(source)


def finetune_spec(model: str, strategy: str, sample_size: int, augment: str, *, network: dict[str, Any],
                  train: TrainConfig, finetune: FinetuneConfig, target: DatasetRef, layout: Layout, repeat: int = 0,
                  freeze_depth: int | None = None, lr: float | None = None, stage: str = "finetune") -> RunSpec:
    """One cell of the study: ``model`` x ``strategy`` x ``sample_size`` x ``augment`` x ``repeat`` on the
    target domain. Repeat ``r`` trains on its own subset draw with training seed ``train.seed + r``; the
    learning rate is ``lr``, else the strategy's declared ``finetune.arms.<strategy>.lr``, else ``train.lr``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not one of {STRATEGIES}")
    if augment not in AUGMENT_FLAGS:
        raise ConfigError(f"augment={augment!r} must be one of {sorted(AUGMENT_FLAGS)}")
    split = read_json(layout.split_file(target.name))
    subset_file = layout.subsets_file(repeat, sample_size)
    if not subset_file.exists():
        raise ConfigError(
            f"sample_size={sample_size}, repeat={repeat}: {layout.relative(subset_file)} does not exist; "
            "add them to subsets.sizes / study.repeats in params.yaml and run dvc repro"
        )
    if strategy == "partial" and freeze_depth is None:
        freeze_depth = finetune.freeze_depth(model)
    lr = lr if lr is not None else finetune.lr_for(strategy)
    train = dataclasses.replace(train, lr=lr if lr is not None else train.lr, seed=train.seed + repeat)
    return RunSpec(
        stage=stage, model=model, network=network, strategy=strategy,
        freeze_depth=0 if strategy != "partial" else int(freeze_depth), augment=AUGMENT_FLAGS[augment],
        sample_size=int(sample_size), prepared_dir=layout.processed(target.name),
        train_ids=read_json(subset_file), val_ids=split["val"], train=train,
        pretrained=None if strategy == "scratch" else pretrained_weights(finetune.source, model, layout),
        domain=target.name, repeat=repeat,
    )


def finetune_name(model: str, strategy: str, sample_size: int, augment: str, repeat: int) -> str:
    """Directory/key name of one fine-tuning cell, as dvc.yaml's matrix writes it."""
    return f"{model}-{strategy}-n{sample_size}-{augment}-r{repeat}"


def tune_base_spec(model: str, sample_size: int, *, network: dict[str, Any], train: TrainConfig,
                   finetune: FinetuneConfig, target: DatasetRef, layout: Layout, repeat: int = 0) -> RunSpec:
    """The spec every tuning trial starts from: full fine-tuning of ``model`` without augmentation, with the
    trials' training budget ``train``; each trial then sets its own freeze_depth and lr."""
    return finetune_spec(model, "full", sample_size, "noaug", network=network, train=train, finetune=finetune,
                         target=target, layout=layout, repeat=repeat, stage="tune")
