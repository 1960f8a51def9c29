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
    refusal = r"5 lesion scans needed at a level of 0.05 \(promote.alpha / promote.max_looks\); the acceptance cohort has 4"
    with pytest.raises(DataError, match=refusal) as err:
        P.refuse_small_cohort(4, 0.05, tmp_path)
    assert "\n" not in str(err.value) and "0.0625" in str(err.value)
    with pytest.raises(DataError, match="7 lesion scans needed at a level of 0.01 .* the acceptance cohort has 6"):
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

    client = SimpleNamespace(get_model_version_by_alias=lambda name, alias: SimpleNamespace(version="1"),
                             get_registered_model=lambda name: SimpleNamespace(tags={}))
    monkeypatch.setattr(P, "MlflowClient", lambda: client)
    monkeypatch.setattr(P, "resolve_version", lambda name, candidate: "2")
    monkeypatch.setattr(P, "load_segmenter", lambda uri: uri)
    monkeypatch.setattr(P, "refuse_seen_data", lambda *args: None)
    monkeypatch.setattr(P, "score_scans", never)
    with pytest.raises(DataError, match="5 lesion scans needed at a level of 0.05 .* the acceptance cohort has 4"):
        P.promote("lesionseg-mouse", "@challenger", PromoteConfig(alpha=0.05, max_looks=1), cohort,
                  log_path=tmp_path / "p.jsonl",
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


# --- issue 27: exact Wilcoxon whatever scipy, a downside guard, counted looks --------------------------------------

def _enumerated_p(diff: np.ndarray) -> float:
    """The exact one-sided p by listing all 2^n sign patterns (mid-ranks for ties, zeros dropped)."""
    from itertools import product

    from scipy.stats import rankdata

    d = diff[~np.isclose(diff, 0.0)]
    ranks = rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    sums = [np.dot(signs, ranks) for signs in product((0, 1), repeat=d.size)]
    return float(np.mean(np.asarray(sums) >= observed - 1e-9))


def test_exact_wilcoxon_with_ties_and_zeros_equals_enumeration() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        diff = np.round(rng.normal(0.02, 0.05, rng.integers(2, 10)), 2)  # rounding makes ties and zeros
        if np.isclose(diff, 0).all():
            continue
        assert P.exact_wilcoxon_greater(diff) == pytest.approx(_enumerated_p(diff), abs=1e-12)
    untied = np.array([0.03, -0.011, 0.05, 0.021, 0.04, -0.025, 0.06])
    assert P.exact_wilcoxon_greater(untied) == pytest.approx(
        wilcoxon(untied, alternative="greater", method="exact").pvalue)
    # 4 positive pairs with a tie: scipy < 1.15 gave the normal approximation's 0.034; exact is 1/16
    assert P.exact_wilcoxon_greater(np.array([0.1, 0.1, 0.3, 0.4])) == pytest.approx(0.0625)
    assert P.exact_wilcoxon_greater(np.zeros(5)) == 1.0


def test_a_challenger_that_collapses_on_a_few_animals_is_refused() -> None:
    """+0.02 on 23 of 25 lesion scans, -0.5 on 2 (worse on average): refused; +0.05 on 11 and -0.25 on one (better
    on average, Wilcoxon passes): refused by promote.max_case_drop 0.2, promoted when the guard allows 0.3."""
    base = np.linspace(0.5, 0.7, 25)
    collapse = base + np.r_[np.full(23, 0.02), -0.5, -0.5]
    decision, _ = P.decide(_named(collapse, (False,)), _named(base, (False,)), PromoteConfig(), "2", "1")
    assert not decision.promote and any(r.startswith("fail: largest Dice drop") for r in decision.reasons)
    base = np.linspace(0.5, 0.7, 12)
    one_bad = base + np.r_[np.full(11, 0.05), -0.25]
    refused, _ = P.decide(_named(one_bad, (False,)), _named(base, (False,)), PromoteConfig(), "2", "1")
    drop = next(r for r in refused.reasons if "largest Dice drop" in r)
    assert not refused.promote and drop.startswith("fail:") and "-0.250 (c11" in drop
    assert all(r.startswith("pass:") for r in refused.reasons if r is not drop)
    allowed, _ = P.decide(_named(one_bad, (False,)), _named(base, (False,)), PromoteConfig(max_case_drop=0.3), "2", "1")
    assert allowed.promote
    assert PromoteConfig().max_case_drop == 0.2
    with pytest.raises(ConfigError, match="max_case_drop"):
        PromoteConfig(max_case_drop=-0.1)


def test_looks_at_one_cohort_share_alpha_so_equal_models_are_rarely_promoted() -> None:
    """Five looks at one cohort with equal models promoted one 16% of the time at alpha each; at alpha / max_looks
    the chance that any look promotes stays <= alpha (Bonferroni), measured here on 12 lesion scans."""
    rng = np.random.default_rng(5)
    rule = PromoteConfig(max_looks=5)
    base = rng.uniform(0.5, 0.8, 12)
    champion = _named(base, (False,))
    any_promoted, naive = [], []
    for _ in range(300):
        ps = [P.exact_wilcoxon_greater(rng.normal(0, 0.03, 12)) for _ in range(5)]  # 5 equal challengers
        any_promoted.append(min(ps) < P.look_alpha(rule))
        naive.append(min(ps) < rule.alpha)
    assert np.mean(any_promoted) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300) and np.mean(naive) > 0.12
    reason = next(r for r in P.decide(_named(base + 0.01, (False,)), champion, rule, "2", "1")[0].reasons
                  if "Wilcoxon" in r)
    assert "needs < 0.01 = promote.alpha / promote.max_looks" in reason


def test_the_looks_are_counted_in_the_registry_and_a_spent_cohort_is_refused(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    client.create_registered_model("lesionseg-mouse")
    rule = PromoteConfig(max_looks=2)
    assert P.looks_taken(client, "lesionseg-mouse", "abc") == 0
    P.refuse_spent_cohort(0, rule, tmp_path)
    P.count_look(client, "lesionseg-mouse", "abc", 0)
    P.count_look(client, "lesionseg-mouse", "abc", P.looks_taken(client, "lesionseg-mouse", "abc"))
    assert P.looks_taken(client, "lesionseg-mouse", "abc") == 2 and P.looks_taken(client, "lesionseg-mouse", "new") == 0
    assert client.get_registered_model("lesionseg-mouse").tags[P.LOOKS_TAG + "abc"] == "2"
    with pytest.raises(DataError, match="used for 2 promotion decisions .* bring a fresh cohort") as err:
        P.refuse_spent_cohort(2, rule, tmp_path)
    assert "\n" not in str(err.value)
