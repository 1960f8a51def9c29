"""Promotion rules that can pass: a cohort too small for the test is refused before scoring, a first champion needs a
Dice well above chance, and a check that cannot be computed is "not assessed", never "pass" (issue 20, item 7)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from lesionseg.config import PromoteConfig
from lesionseg.data.synthetic import synthesize_dataset
from lesionseg.errors import ConfigError, DataError
from lesionseg.evaluation.summary import case_metrics
from lesionseg.tracking import promotion as P


def _named(dices, shams=()) -> pd.DataFrame:
    """A native-space per-case table: lesion cases with the given Dice, shams (True = false alarm)."""
    rows = [{"case_id": f"c{i}", "group": "MCAo", "dice": d, "hd95_mm": 2.0, "true_volume_mm3": 10.0,
             "pred_volume_mm3": 9.0, "diagonal_mm": 20.0} for i, d in enumerate(dices)]
    rows += [{"case_id": f"s{i}", "group": "sham", "dice": 0.0 if fa else np.nan, "hd95_mm": np.inf if fa else np.nan,
              "true_volume_mm3": 0.0, "pred_volume_mm3": 2.0 if fa else 0.0, "diagonal_mm": 20.0}
             for i, fa in enumerate(shams)]
    return case_metrics(pd.DataFrame(rows))


@pytest.mark.parametrize("n", range(1, 9))
def test_smallest_p_is_scipys_exact_wilcoxon_with_every_pair_one_way(n: int) -> None:
    diffs = np.arange(1, n + 1) * 0.01  # all positive, no ties: the most extreme outcome
    exact = wilcoxon(diffs, alternative="greater", method="exact").pvalue
    assert P.smallest_wilcoxon_p(n) == pytest.approx(exact)


@pytest.mark.parametrize(("alpha", "needed"), [(0.05, 5), (0.01, 7), (0.0625, 5), (0.1, 4), (0.001, 10)])
def test_lesion_scans_needed(alpha: float, needed: int) -> None:
    assert P.lesion_scans_needed(alpha) == needed
    assert P.smallest_wilcoxon_p(needed) < alpha <= P.smallest_wilcoxon_p(needed - 1)


def test_a_four_lesion_cohort_is_refused_in_one_line_naming_the_number_needed(tmp_path: Path) -> None:
    refusal = "5 lesion scans needed at promote.alpha 0.05; the acceptance cohort has 4"
    with pytest.raises(DataError, match=refusal) as err:
        P.refuse_small_cohort(4, 0.05, tmp_path)
    assert "\n" not in str(err.value) and "0.0625" in str(err.value)
    with pytest.raises(DataError, match="7 lesion scans needed at promote.alpha 0.01; the acceptance cohort has 6"):
        P.refuse_small_cohort(6, 0.01, tmp_path)
    P.refuse_small_cohort(5, 0.05, tmp_path)  # 1/32 < 0.05: a clear win can pass


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """6 synthetic mouse scans, 2 of them shams: 4 lesion scans."""
    root = tmp_path_factory.mktemp("acc") / "mouse-acceptance"
    synthesize_dataset("mouse", 6, 3, root, sham_fraction=1 / 3, matrix=32, n_slices=6, case_prefix="acc")
    return root


def test_count_lesion_scans_from_cases_csv_or_labels(cohort: Path, tmp_path: Path) -> None:
    assert P.count_lesion_scans(cohort) == 4
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(cohort, bare)
    (bare / "cases.csv").unlink()  # groups unknown: read from the labels
    assert P.count_lesion_scans(bare) == 4


def test_promote_refuses_a_small_cohort_before_scoring(cohort: Path, monkeypatch, tmp_path: Path) -> None:
    """After the check for seen data (a leaked cohort hears about the leak first), before any scan is scored."""
    def never(*args, **kwargs):
        raise AssertionError("promote scored a model on a cohort that could never pass")

    client = SimpleNamespace(get_model_version_by_alias=lambda name, alias: SimpleNamespace(version="1"))
    monkeypatch.setattr(P, "MlflowClient", lambda: client)
    monkeypatch.setattr(P, "resolve_version", lambda name, candidate: "2")
    monkeypatch.setattr(P, "load_segmenter", lambda uri: uri)
    monkeypatch.setattr(P, "refuse_seen_data", lambda *args: None)
    monkeypatch.setattr(P, "score_scans", never)
    with pytest.raises(DataError, match="5 lesion scans needed at promote.alpha 0.05; the acceptance cohort has 4"):
        P.promote("lesionseg-mouse", "@challenger", PromoteConfig(alpha=0.05), cohort, log_path=tmp_path / "p.jsonl",
                  dry_run=True)
    assert not (tmp_path / "p.jsonl").exists()


def test_a_first_champion_needs_dice_well_above_chance() -> None:
    assert PromoteConfig().min_dice_first >= 0.5
    weak, _ = P.decide(_named([0.2] * 6), None, PromoteConfig(), "1", None)
    assert not weak.promote and weak.reasons[0].startswith("fail:") and "min_dice_first 0.5" in weak.reasons[0]
    good, _ = P.decide(_named([0.7] * 6), None, PromoteConfig(), "1", None)
    assert good.promote and good.reasons[0].startswith("pass:")
    empty, _ = P.decide(_named([], shams=(False,)), None, PromoteConfig(min_dice_first=0.0), "1", None)
    assert not empty.promote and empty.reasons[0].startswith("not assessed:")
    with pytest.raises(ConfigError, match="min_dice_first"):
        PromoteConfig(min_dice_first=1.5)


def test_a_change_that_cannot_be_computed_is_not_assessed_and_blocks() -> None:
    base = np.linspace(0.4, 0.6, 12)
    decision, _ = P.decide(_named(base + 0.1), _named(base), PromoteConfig(), "2", "1")  # no shams anywhere
    fp = [r for r in decision.reasons if "sham_fp_rate" in r]
    assert fp and fp[0].startswith("not assessed:") and not any(r.startswith("pass: sham") for r in decision.reasons)
    assert not decision.promote
    assert all(r.startswith("pass:") for r in decision.reasons if "sham_fp_rate" not in r)
    with_shams, _ = P.decide(_named(base + 0.1, (False,)), _named(base, (False,)), PromoteConfig(), "2", "1")
    assert with_shams.promote


def test_the_wilcoxon_reason_names_its_smallest_possible_p() -> None:
    base = np.linspace(0.4, 0.6, 6)
    tied = np.r_[base[:4] + 0.1, base[4:]]  # 2 ties leave 4 untied pairs: p >= 1/16
    decision, _ = P.decide(_named(tied, (False,)), _named(base, (False,)), PromoteConfig(), "2", "1")
    reason = next(r for r in decision.reasons if "Wilcoxon" in r)
    assert reason.startswith("fail:") and "smallest possible with 4 untied pairs: 0.0625" in reason
