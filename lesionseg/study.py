"""Study-level steps that combine several library pieces for one stage (used by pipelines/ and the CLI)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from lesionseg.config import from_mapping, section
from lesionseg.data.io import write_json
from lesionseg.runs import RunSpec, train_tracked
from lesionseg.specs import finetune_spec
from lesionseg.tracking.registry import TARGET_MODEL
from lesionseg.tuning import TuneConfig, log_study_summary, study_outcome, tune

TUNE_STAGE_KEYS = ("model", "sample_sizes", "train")


def tune_config(params: Mapping[str, Any], storage: str | None = None) -> TuneConfig:
    """The ``tune`` section as a :class:`TuneConfig` (``storage`` overrides ``tune.storage``)."""
    values = {k: v for k, v in section(params, "tune").items() if k not in TUNE_STAGE_KEYS}
    if storage:
        values["storage"] = storage
    return from_mapping(TuneConfig, values, "params.yaml tune")


def tune_base_spec(params: Mapping[str, Any], sample_size: int, root: Path) -> RunSpec:
    """The spec every trial starts from: tune.model, full fine-tuning, tune.train overrides applied."""
    tune_section = section(params, "tune")
    base = finetune_spec(params, tune_section["model"], "full", sample_size, "noaug", root, stage="tune")
    return dataclasses.replace(base, train=dataclasses.replace(base.train, **(tune_section.get("train") or {})))


def tune_and_retrain(params: Mapping[str, Any], sample_size: int, root: Path, *, workers: int = 1,
                     storage: str | None = None) -> dict[str, Any]:
    """Tune freeze_depth/lr at ``sample_size``, then retrain the best setting and register it (tag ``tuned``).

    Writes ``tuning/n{N}/best.json`` and ``tuning/n{N}/plots/``; the final model goes to ``models/tuned/n{N}``.
    """
    cfg = tune_config(params, storage)
    model = section(params, "tune")["model"]
    base = tune_base_spec(params, sample_size, root)
    study = tune(base, cfg, root, workers=workers)
    outcome = study_outcome(study)
    out_dir = root / "tuning" / f"n{sample_size}"
    log_study_summary(study, outcome, out_dir / "plots")
    best = outcome["best_params"]
    final = finetune_spec(params, model, "partial" if best["freeze_depth"] else "full", sample_size,
                          "aug" if best.get("augment", base.augment) else "noaug", root,
                          freeze_depth=best["freeze_depth"] or None, lr=best["lr"])
    result = train_tracked(final, root, root / "models" / "tuned" / f"n{sample_size}",
                           root / "checkpoints" / "tuned" / f"n{sample_size}", register_as=TARGET_MODEL,
                           tags={"tuned": "true", "optuna_study": outcome["study"]})
    outcome["final"] = {k: result[k] for k in ("run_id", "version", "best_val_dice", "model_uri")}
    write_json(out_dir / "best.json", outcome)
    return outcome
