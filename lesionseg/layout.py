"""Every path of a lesionseg project, named once.

Stage entry points and the CLI build one :class:`Layout` for the project root and pass it (or the paths it
gives) down; no library module joins ``root / "data" / ...`` by hand. ``dvc.yaml`` writes the same paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The folders and files of the project rooted at ``root`` (absolute)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Layout":
        """The layout of the project at ``root``."""
        return cls(Path(root).resolve())

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the root (POSIX), as ``dvc.yaml`` and ``dvc.lock`` write it."""
        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def resolve(self, path: str | Path) -> Path:
        """``path`` as given in params.yaml (relative to the root, or absolute)."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    # data
    def bruker(self, dataset: str) -> Path:
        """ParaVision studies as the scanner wrote them (one per animal), with the lab's masks in labels/."""
        return self.root / "data" / "bruker" / dataset

    def raw(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset


    def processed(self, dataset: str) -> Path:
        return self.root / "data" / "processed" / dataset

    def split_file(self, dataset: str) -> Path:
        return self.root / "data" / "splits" / f"{dataset}.json"

    @property
    def subsets_dir(self) -> Path:
        """One file per repeat and sample size, so that a new size or repeat leaves existing cells up to date."""
        return self.root / "data" / "splits" / "subsets"

    def subsets_file(self, repeat: int, sample_size: int) -> Path:
        return self.subsets_dir / f"r{int(repeat)}-n{int(sample_size)}.json"

    # models and their checkpoints
    def pretrained_dir(self, model: str) -> Path:
        return self.root / "models" / "pretrained" / model

    def pretrained_weights(self, model: str) -> Path:
        return self.pretrained_dir(model) / "model.pt"

    @property
    def finetune_root(self) -> Path:
        return self.root / "models" / "finetune"

    def finetune_dir(self, cell: str) -> Path:
        return self.finetune_root / cell

    @property
    def tuned_root(self) -> Path:
        return self.root / "models" / "tuned"

    def tuned_dir(self, sample_size: int, repeat: int) -> Path:
        return self.tuned_root / f"n{sample_size}-r{repeat}"

    def checkpoints(self, kind: str, name: str) -> Path:
        """Crash-resume state of one run (git-ignored, not a DVC output)."""
        return self.root / "checkpoints" / kind / name

    # tuning
    def tuning_dir(self, sample_size: int, repeat: int) -> Path:
        return self.root / "tuning" / f"n{sample_size}-r{repeat}"

    # evaluation and report
    @property
    def test_metrics_dir(self) -> Path:
        return self.root / "metrics" / "test"

    @property
    def test_metrics_json(self) -> Path:
        return self.root / "metrics" / "test.json"

    @property
    def predictions_root(self) -> Path:
        """Each trained model's test segmentations, one folder per run: ``predictions/<run>/CASE.nii.gz``."""
        return self.root / "predictions"

    def predictions_dir(self, run: str) -> Path:
        return self.predictions_root / run

    @property
    def overlays_dir(self) -> Path:
        return self.root / "reports" / "overlays"

    @property
    def report_dir(self) -> Path:
        return self.root / "reports" / "study"

    @property
    def promotions_log(self) -> Path:
        return self.root / "reports" / "promotions.jsonl"

    # tracking
    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

    @property
    def run_records(self) -> list[Path]:
        """What ``dvc repro`` (and ``promote``) write into tracked places: dvc.lock and the cache-less metrics
        and report outputs, committed after a run. They record a run; they are not its code."""
        return [self.dvc_lock, self.test_metrics_dir, self.test_metrics_json, self.report_dir, self.promotions_log]

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"
