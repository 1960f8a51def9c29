"""Challenger vs champion: paired per-case comparison on the test split, then (maybe) move ``@champion``.

Order of work: evaluate both, decide, write the comparison artifact and the promotion log, tag the versions,
and only then move the alias, so any failure before the last step leaves the registry's aliases as they were.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from scipy.stats import wilcoxon

from lesionseg.data.preprocess import load_prepared_case
from lesionseg.config import PromoteConfig
from lesionseg.errors import ConfigError, TrackingError
from lesionseg.inference import Segmenter, predict_mask
from lesionseg.tracking.pyfunc import load_segmenter
from lesionseg.evaluation.metrics import case_metrics
from lesionseg.tracking.registry import CHAMPION
from lesionseg.training.engine import selection_dice


@dataclass
class Decision:
    """The outcome of one comparison."""

    promote: bool
    reasons: list[str]
    candidate_version: str
    champion_version: str | None
    summary: dict[str, float] = field(default_factory=dict)


def score_cases(segmenter: Segmenter, prepared_dir: str | Path, case_ids: Sequence[str]) -> pd.DataFrame:
    """Per-case ``score`` (Dice; a sham scores 1 if left empty, else 0) and ``hd95_mm`` on prepared cases."""
    rows = []
    for case_id in case_ids:
        case = load_prepared_case(prepared_dir, case_id)
        pred = predict_mask(segmenter.model, case.image, segmenter.roi_size)
        metrics = case_metrics(pred, case.label, tuple(voxel_sizes(case.affine)))
        rows.append({"case_id": case_id, "score": selection_dice(pred > 0, case.label > 0),
                     "hd95_mm": metrics["hd95_mm"]})
    return pd.DataFrame(rows).set_index("case_id")


def decide(candidate: pd.DataFrame, champion: pd.DataFrame | None, rule: PromoteConfig,
           candidate_version: str, champion_version: str | None) -> tuple[Decision, pd.DataFrame]:
    """Apply ``rule`` to paired per-case scores; returns the decision and the comparison table."""
    if champion is None:
        mean = float(candidate["score"].mean())
        ok = mean >= rule.min_dice_first
        reason = f"no champion yet; candidate mean Dice {mean:.3f} {'>=' if ok else '<'} {rule.min_dice_first}"
        table = candidate.rename(columns=lambda c: f"candidate_{c}")
        return Decision(ok, [reason], candidate_version, None, {"candidate_dice": mean}), table
    table = candidate.join(champion, lsuffix="_candidate", rsuffix="_champion", how="inner")
    if table.empty:
        raise ConfigError("promote: candidate and champion share no test cases; check the test split")
    gain = float((table["score_candidate"] - table["score_champion"]).mean())
    p_value = _one_sided_wilcoxon(table["score_candidate"].to_numpy(), table["score_champion"].to_numpy())
    finite = table[np.isfinite(table["hd95_mm_candidate"]) & np.isfinite(table["hd95_mm_champion"])]
    hd95_change = float((finite["hd95_mm_candidate"] - finite["hd95_mm_champion"]).mean()) if len(finite) else 0.0
    checks = [
        (gain > rule.min_dice_gain, f"mean Dice gain {gain:+.3f} (needs > {rule.min_dice_gain})"),
        (p_value < rule.alpha, f"one-sided paired Wilcoxon p = {p_value:.3g} (needs < {rule.alpha})"),
        (hd95_change <= rule.hd95_margin_mm, f"mean HD95 change {hd95_change:+.2f} mm (needs <= {rule.hd95_margin_mm})"),
    ]
    reasons = [("pass: " if ok else "fail: ") + text for ok, text in checks]
    summary = {"candidate_dice": float(table["score_candidate"].mean()),
               "champion_dice": float(table["score_champion"].mean()), "dice_gain": gain, "p_value": p_value,
               "hd95_change_mm": hd95_change, "n_cases": float(len(table))}
    return Decision(all(ok for ok, _ in checks), reasons, candidate_version, champion_version, summary), table


def _one_sided_wilcoxon(candidate: np.ndarray, champion: np.ndarray) -> float:
    """p-value that the candidate's per-case scores are greater (1.0 when every pair is tied)."""
    if np.allclose(candidate, champion):
        return 1.0
    return float(wilcoxon(candidate, champion, alternative="greater", zero_method="wilcox").pvalue)


def resolve_version(name: str, candidate: str) -> str:
    """``@alias`` or a version number -> the version number (clear error when it does not exist)."""
    client = MlflowClient()
    try:
        if candidate.startswith("@"):
            return str(client.get_model_version_by_alias(name, candidate[1:]).version)
        return str(client.get_model_version(name, candidate).version)
    except MlflowException:
        raise ConfigError(f"promote: {name} has no version {candidate}; list them in the MLflow UI "
                          "or run dvc repro") from None


def promote(name: str, candidate: str, rule: PromoteConfig, prepared_dir: str | Path, test_ids: Sequence[str],
            *, log_path: str | Path, dry_run: bool = False) -> tuple[Decision, pd.DataFrame]:
    """Compare ``candidate`` with ``name@champion`` on the same test cases and move ``@champion`` if it wins."""
    client = MlflowClient()
    candidate_version = resolve_version(name, candidate)
    try:
        champion_version = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        champion_version = None
    if champion_version == candidate_version:
        raise ConfigError(f"promote: {name} v{candidate_version} is already @champion")
    candidate_scores = score_cases(load_segmenter(f"models:/{name}/{candidate_version}"), prepared_dir, test_ids)
    champion_scores = (score_cases(load_segmenter(f"models:/{name}/{champion_version}"), prepared_dir, test_ids)
                       if champion_version else None)
    decision, table = decide(candidate_scores, champion_scores, rule, candidate_version, champion_version)
    if not dry_run:
        _record(client, name, decision, table, rule, Path(log_path))
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, candidate_version)  # the last step, on purpose
    return decision, table


def _record(client: MlflowClient, name: str, decision: Decision, table: pd.DataFrame, rule: PromoteConfig,
            log_path: Path) -> None:
    """Artifact on the candidate's run, a line in the promotion log, tags on the versions."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_id = client.get_model_version(name, decision.candidate_version).run_id
    against = f"v{decision.champion_version}" if decision.champion_version else "none"
    stem = f"promotion/v{decision.candidate_version}_vs_{against}"
    client.log_text(run_id, table.reset_index().to_csv(index=False), f"{stem}.csv")
    client.log_dict(run_id, {"decision": asdict(decision), "rule": asdict(rule), "at": now},
                                   f"{stem}.json")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(json.dumps({"at": now, "model": name, **asdict(decision)}, default=_json_default) + "\n")
    reason = "; ".join(decision.reasons)
    client.set_model_version_tag(name, decision.candidate_version, "promotion_reason", reason[:5000])
    client.set_model_version_tag(name, decision.candidate_version, "promotion_decision",
                                 "promoted" if decision.promote else "rejected")
    if decision.promote:
        client.set_model_version_tag(name, decision.candidate_version, "promoted_at", now)
        client.set_model_version_tag(name, decision.candidate_version, "replaced_version",
                                     decision.champion_version or "")


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def format_decision(decision: Decision, table: pd.DataFrame) -> str:
    """A small text table for the terminal."""
    head = (f"candidate v{decision.candidate_version} vs champion "
            f"{'v' + decision.champion_version if decision.champion_version else '(none)'}")
    lines = [head, table.round(4).to_string(), *decision.reasons,
             "decision: " + ("PROMOTE to @champion" if decision.promote else "keep the current champion")]
    return "\n".join(lines)


def require_registered(name: str) -> None:
    """A clear error when the registered model does not exist."""
    try:
        MlflowClient().get_registered_model(name)
    except MlflowException:
        raise TrackingError(f"promote: no registered model {name!r}; run dvc repro first") from None
