"""Challenger vs champion on new animals (an acceptance dataset, never the test split), then (maybe) move
``@champion``.

Order of work: refuse data that either model trained or was selected on, refuse a cohort already looked at
``promote.max_looks`` times (the looks are counted in a tag of the registered model, keyed by the cohort's hash;
each look is tested at ``alpha / max_looks``, so all looks at one cohort together promote an equal model with
probability <= alpha), refuse (before scoring) a cohort too small for the rule to ever pass (the one-sided
paired Wilcoxon's smallest p is 1/2^n with n lesion scans), score both in native space with the named metrics,
count the look, decide (a check that cannot be computed is "not assessed" and blocks promotion), write the
comparison artifact and the promotion log, tag the versions, and only then move the alias, so any failure before
the last step leaves the registry's aliases as they were.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from scipy.stats import rankdata

from lesionseg.config import PromoteConfig
from lesionseg.data.dataset import GROUPS, lesion_volume_mm3, read_cases
from lesionseg.data.io import json_ready, read_volume
from lesionseg.data.preprocess import image_digest, prepare_volume
from lesionseg.errors import ConfigError, DataError, TrackingError
from lesionseg.tracking.scores import score_scans
from lesionseg.evaluation.summary import summarize
from lesionseg.inference import Segmenter
from lesionseg.tracking.refusals import missing_permission
from lesionseg.tracking.pyfunc import load_segmenter
from lesionseg.tracking.registry import CHAMPION
from lesionseg.tracking.run import CASES_ARTIFACT


@dataclass
class Decision:
    """The outcome of one comparison."""

    promote: bool
    reasons: list[str]
    candidate_version: str
    champion_version: str | None
    summary: dict[str, float] = field(default_factory=dict)


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


def data_fingerprint(data_dir: Path) -> str:
    """Hash of every file of the dataset (names and bytes): which data a promotion looked at."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(data_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(data_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def refuse_seen_data(name: str, versions: Sequence[str], data_dir: Path, segmenter: Segmenter) -> None:
    """One-line :class:`DataError` when ``data_dir`` shares a case id or an image's content with the training or
    validation cases of any of ``versions`` (read from their runs' lineage)."""
    client = MlflowClient()
    records = read_cases(data_dir)
    digests = {r.case_id: _prepared_digest(r.image, segmenter) for r in records}
    for version in versions:
        run_id = client.get_model_version(name, version).run_id
        seen = client.download_artifacts(run_id, CASES_ARTIFACT)
        for split, cases in json.loads(Path(seen).read_text()).items():
            shared = sorted(set(cases) & set(digests)) or sorted(c for c, d in digests.items() if d in cases.values())
            if shared:
                raise DataError(f"{data_dir}: cases {shared[:5]} are in the {split} data of {name} v{version}; "
                                "promote on new animals (the acceptance cohort, data/raw/mouse-acceptance)")


def _prepared_digest(image_path: Path, segmenter: Segmenter) -> str:
    p = segmenter.preprocessing
    image, _, _ = prepare_volume(read_volume(image_path), None, target_spacing=p["target_spacing"], shape=p["shape"],
                                 clip_percentiles=tuple(p["clip_percentiles"]), crop=p.get("crop", "head"))
    return image_digest(image)


def smallest_wilcoxon_p(n_pairs: int) -> float:
    """Smallest p a one-sided exact paired Wilcoxon can give with ``n_pairs`` untied pairs: all ranks on one side,
    one of the 2^n equally likely sign patterns, so 1 / 2^n (1.0 with none)."""
    return 0.5 ** max(int(n_pairs), 0)


def lesion_scans_needed(alpha: float) -> int:
    """Fewest untied lesion pairs whose smallest one-sided Wilcoxon p is below ``alpha`` (``1 / 2^n < alpha``)."""
    if not 0 < alpha <= 1:
        raise ConfigError(f"promote.alpha={alpha} must be in (0, 1]; fix params.yaml")
    return math.floor(math.log2(1 / alpha)) + 1


LOOKS_TAG = "acceptance_looks_"  # + the cohort's data hash: decisions made on that cohort (dry runs included)


def look_alpha(rule: PromoteConfig) -> float:
    """The level of one look: ``alpha / max_looks`` (Bonferroni over the looks a cohort allows)."""
    return rule.alpha / int(rule.max_looks)


def looks_taken(client: MlflowClient, name: str, data_hash: str) -> int:
    """How many decisions the registered model ``name`` has made on the cohort with ``data_hash``."""
    return int(client.get_registered_model(name).tags.get(LOOKS_TAG + data_hash, 0))


def refuse_spent_cohort(looks: int, rule: PromoteConfig, data_dir: Path) -> None:
    """One-line :class:`DataError` when the cohort has had its ``max_looks`` decisions."""
    if looks >= int(rule.max_looks):
        raise DataError(f"{data_dir}: this acceptance cohort has been used for {looks} promotion decisions "
                        f"(promote.max_looks {rule.max_looks}); bring a fresh cohort of new animals")


def count_look(client: MlflowClient, name: str, data_hash: str, looks: int) -> None:
    """Record one more decision on the cohort (a registered-model tag, seen by every client of the registry)."""
    try:
        client.set_registered_model_tag(name, LOOKS_TAG + data_hash, str(looks + 1))
    except MlflowException as err:
        raise TrackingError(f"promote: cannot count this look at the acceptance cohort on '{name}' ({err.error_code});"
                            " a look needs EDIT on the registered model: ask its maintainer") from None


def refuse_small_cohort(n_lesion: int, alpha: float, data_dir: Path) -> None:
    """One-line :class:`DataError` when no candidate could pass ``p < alpha`` on ``n_lesion`` lesion scans."""
    needed = lesion_scans_needed(alpha) if alpha <= 1 else 0
    if n_lesion < needed:
        raise DataError(f"{data_dir}: {needed} lesion scans needed at a level of {alpha:.4g} (promote.alpha / "
                        f"promote.max_looks); the acceptance cohort "
                        f"has {n_lesion} (smallest one-sided Wilcoxon p = {smallest_wilcoxon_p(n_lesion):.4g}); "
                        "add lesion scans from new animals")


def count_lesion_scans(data_dir: Path) -> int:
    """Lesion (non-sham) scans of a raw dataset, from cases.csv, or from the label where its group is unknown."""
    return sum(record.group == "MCAo" if record.group in GROUPS else lesion_volume_mm3(read_volume(record.label)) > 0
               for record in read_cases(data_dir))


def _check(value: float, ok: bool, text: str) -> tuple[bool | None, str]:
    """``(None, "not assessed: ...")`` when ``value`` is NaN, so a change nobody could compute never passes."""
    if isinstance(value, float) and math.isnan(value):
        return None, f"not assessed: {text} (cannot be computed on this cohort)"
    return bool(ok), ("pass: " if ok else "fail: ") + text


def decide(candidate: pd.DataFrame, champion: pd.DataFrame | None, rule: PromoteConfig,
           candidate_version: str, champion_version: str | None) -> tuple[Decision, pd.DataFrame]:
    """Apply ``rule`` to the per-case native-space tables (named metrics); returns the decision and the table.

    The candidate is promoted only when every check passes; a check that cannot be computed (NaN, e.g. a
    sham false-alarm change on a cohort without shams) is "not assessed" and blocks promotion.
    """
    ours = summarize(candidate)
    if champion is None:
        ok, reason = _check(ours["dice_lesion"], ours["dice_lesion"] >= rule.min_dice_first,
                            f"no champion yet; candidate dice_lesion {ours['dice_lesion']:.3f} (needs >= "
                            f"promote.min_dice_first {rule.min_dice_first})")
        return Decision(bool(ok), [reason], candidate_version, None, {"candidate_dice_lesion": ours["dice_lesion"]}), \
            candidate.set_index("case_id")
    theirs = summarize(champion)
    table = candidate.merge(champion, on=["case_id", "group"], suffixes=("_candidate", "_champion"))
    if table.empty:
        raise ConfigError("promote: candidate and champion were scored on no common case; check --data")
    lesion = table[table["group"] == "MCAo"]
    gain = ours["dice_lesion"] - theirs["dice_lesion"]
    cand, champ = lesion["dice_candidate"].to_numpy(dtype=float), lesion["dice_champion"].to_numpy(dtype=float)
    p_value = exact_wilcoxon_greater(cand - champ)
    untied = int(np.sum(~np.isclose(cand, champ)))
    level = look_alpha(rule)
    worst = float(np.min(cand - champ)) if len(cand) else math.nan
    worst_case = str(lesion["case_id"].iloc[int(np.argmin(cand - champ))]) if len(cand) else ""
    hd95_change = ours["hd95_mm"] - theirs["hd95_mm"]
    fp_change = ours["sham_fp_rate"] - theirs["sham_fp_rate"]
    checks = [
        _check(gain, gain > rule.min_dice_gain, f"dice_lesion gain {gain:+.3f} (needs > {rule.min_dice_gain})"),
        _check(p_value, p_value < level, f"one-sided exact paired Wilcoxon over lesion scans p = {p_value:.3g} "
               f"(needs < {level:.4g} = promote.alpha / promote.max_looks; smallest possible with {untied} untied "
               f"pairs: {smallest_wilcoxon_p(untied):.3g})"),
        _check(worst, worst >= -rule.max_case_drop, f"largest Dice drop on one lesion scan {worst:+.3f} "
               f"({worst_case}; needs >= -promote.max_case_drop {rule.max_case_drop})"),
        _check(hd95_change, hd95_change <= rule.hd95_margin_mm,
               f"hd95_mm change {hd95_change:+.2f} mm (needs <= {rule.hd95_margin_mm})"),
        _check(fp_change, not fp_change > 0, f"sham_fp_rate change {fp_change:+.2f} (needs <= 0)"),
    ]
    summary = {"candidate_dice_lesion": ours["dice_lesion"], "champion_dice_lesion": theirs["dice_lesion"],
               "dice_lesion_gain": gain, "p_value": p_value, "hd95_mm_change": hd95_change,
               "sham_fp_rate_change": fp_change, "n_cases": float(len(table))}
    return Decision(all(ok is True for ok, _ in checks), [text for _, text in checks], candidate_version,
                    champion_version, summary), table.set_index("case_id")


def exact_wilcoxon_greater(diff: np.ndarray) -> float:
    """Exact one-sided p of the paired Wilcoxon signed-rank test that ``diff`` (candidate - champion) is > 0.

    Zero differences are dropped (Wilcoxon's convention), tied |differences| get mid-ranks, and the null
    distribution of the positive-rank sum is the exact one given those ranks: every sign pattern equally likely,
    counted by dynamic programming over the (doubled, integer) ranks. Written out so that the test is exact whatever
    scipy is installed (before scipy 1.15 a tie switched ``wilcoxon`` to the normal approximation: p = 0.034 for 4
    positive pairs, below the exact smallest p of 1/16). 1.0 when no pair differs.
    """
    d = np.asarray(diff, dtype=float)
    d = d[~np.isclose(d, 0.0)]
    if d.size == 0:
        return 1.0
    ranks = np.rint(2 * rankdata(np.abs(d))).astype(int)  # mid-ranks are multiples of 1/2
    observed = int(ranks[d > 0].sum())
    dist = np.zeros(int(ranks.sum()) + 1)
    dist[0] = 1.0
    for r in ranks:  # each rank joins the positive sum with probability 1/2
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:-r]
        dist = 0.5 * (dist + shifted)
    return float(min(1.0, dist[observed:].sum()))


def promote(name: str, candidate: str, rule: PromoteConfig, data_dir: str | Path, *, log_path: str | Path,
            dry_run: bool = False) -> tuple[Decision, pd.DataFrame]:
    """Compare ``candidate`` with ``name@champion`` on the acceptance dataset ``data_dir`` (raw, nnU-Net layout)
    in native space and move ``@champion`` if it wins."""
    client = MlflowClient()
    data_dir = Path(data_dir)
    candidate_version = resolve_version(name, candidate)
    try:
        champion_version = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        champion_version = None
    if champion_version == candidate_version:
        raise ConfigError(f"promote: {name} v{candidate_version} is already @champion")
    if not dry_run:  # an authenticated server: check the right to move @champion before any record is written
        refused = missing_permission(f"moving @{CHAMPION} on registered model '{name}'", "registered_model", name,
                                     "MANAGE")
        if refused:
            raise TrackingError(refused)
    versions = [v for v in (candidate_version, champion_version) if v]
    segmenters = {v: load_segmenter(f"models:/{name}/{v}") for v in versions}
    refuse_seen_data(name, versions, data_dir, segmenters[candidate_version])
    data_hash = data_fingerprint(data_dir)
    looks = looks_taken(client, name, data_hash)
    if champion_version is not None:  # before scoring: may this cohort still be used, and can it ever pass?
        refuse_spent_cohort(looks, rule, data_dir)
        refuse_small_cohort(count_lesion_scans(data_dir), look_alpha(rule), data_dir)
        count_look(client, name, data_hash, looks)  # before scoring; a dry run is a look too: its result is seen
    case_ids = [r.case_id for r in read_cases(data_dir)]
    tables = {v: score_scans(seg, data_dir, case_ids)[0] for v, seg in segmenters.items()}
    decision, table = decide(tables[candidate_version], tables.get(champion_version), rule, candidate_version,
                             champion_version)
    if not dry_run:
        _record(client, name, decision, table, rule, Path(log_path), data_dir, data_hash, looks)
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, candidate_version)  # the last step, on purpose
    return decision, table


def _record(client: MlflowClient, name: str, decision: Decision, table: pd.DataFrame, rule: PromoteConfig,
            log_path: Path, data_dir: Path, data_hash: str, looks: int) -> None:
    """Artifact on the candidate's run, a line in the promotion log (with the data's hash and how many earlier
    decisions used the same data, from the registry's count), tags on the versions."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_id = client.get_model_version(name, decision.candidate_version).run_id
    against = f"v{decision.champion_version}" if decision.champion_version else "none"
    stem = f"promotion/v{decision.candidate_version}_vs_{against}"
    client.log_text(run_id, table.reset_index().to_csv(index=False), f"{stem}.csv")
    entry = {"at": now, "model": name, "data": str(data_dir), "data_hash": data_hash,
             "earlier_promotions_on_this_data": looks, **asdict(decision)}
    client.log_dict(run_id, json_ready({**entry, "rule": asdict(rule)}), f"{stem}.json")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(json.dumps(json_ready(entry)) + "\n")
    tags = {"promotion_reason": "; ".join(decision.reasons)[:5000], "promotion_data_hash": data_hash,
            "promotion_decision": "promoted" if decision.promote else "rejected"}
    if decision.promote:
        tags.update({"promoted_at": now, "replaced_version": decision.champion_version or ""})
    for key, value in tags.items():
        client.set_model_version_tag(name, decision.candidate_version, key, value)


def format_decision(decision: Decision, table: pd.DataFrame) -> str:
    """A small text table for the terminal."""
    head = (f"candidate v{decision.candidate_version} vs champion "
            f"{'v' + decision.champion_version if decision.champion_version else '(none)'}")
    shown = [c for c in table.columns if c.startswith(("dice", "hd95_mm_penalised", "group"))]
    lines = [head, table[shown].round(4).to_string(), *decision.reasons,
             "decision: " + ("PROMOTE to @champion" if decision.promote else "keep the current champion")]
    return "\n".join(lines)


def require_registered(name: str) -> None:
    """A clear error when the registered model does not exist."""
    try:
        MlflowClient().get_registered_model(name)
    except MlflowException:
        raise TrackingError(f"promote: no registered model {name!r}; run dvc repro first") from None
