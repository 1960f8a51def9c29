"""benchmarks/realism.py: the published RatLesNetV2 judging synthetic rats (skipped without its weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from lesionseg.data.synthetic.lesion import TERRITORIES, TIME_POINTS


realism = load_benchmark("realism")


def test_the_eight_orientations_are_distinct_and_undo_themselves():
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    seen = set()
    for orientation in realism.ORIENTATIONS:
        shown = orientation.apply(x)
        seen.add(shown.tobytes() + bytes(shown.shape))
        assert np.array_equal(orientation.undo(shown), x)
    assert len(realism.ORIENTATIONS) == len(seen) == 8


def test_authors_input_is_z_scored_with_slices_first():
    stored = np.random.default_rng(0).integers(0, 3000, (16, 12, 5)).astype(np.int16)
    x = realism.authors_input(stored)
    assert x.shape == (5, 16, 12) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(x[2], (stored[:, :, 2] - stored.mean()) / stored.std(), atol=1e-4)


def test_small_islands_and_holes_go_as_in_the_authors_eval():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:6, 1:6, 1:6] = True  # 125 voxels: kept
    mask[3, 3, 3] = False  # a 1-voxel hole: filled
    mask[8, 8, 8] = True  # a 1-voxel island: removed
    out = realism.remove_small_islands(mask)
    assert out[3, 3, 3] and not out[8, 8, 8] and out.sum() == 125


def test_majority_vote_keeps_what_more_than_half_of_the_judges_mark_as_the_authors_eval():
    a = np.zeros((6, 6, 6), bool)
    a[1:5, 1:5, 1:5] = True  # 64 voxels
    b = a.copy()
    b[1, 1, 1] = False  # one judge leaves a corner out: two of three keep it
    c = np.zeros_like(a)
    c[0:3, 0:3, 0:3] = True  # a third judge marks elsewhere too
    vote = realism.majority_vote([a, b, c])
    assert vote.sum() == 64 and vote[1, 1, 1] and not vote[0, 0, 0]
    assert not realism.majority_vote([a, np.zeros_like(a)]).any()  # 1 of 2 is not more than half


def test_judges_are_named_by_training_set_and_model():
    assert realism.judge_name(realism.WEIGHTS) == "heterogeneous/model-1"
    assert realism.judge_name(Path("x/Table2-3/RatLesNetv2/homogeneous/model-3")) == "homogeneous/model-3"


needs_weights = pytest.mark.skipif(not realism.WEIGHTS.is_file(), reason=f"published weights not at {realism.WEIGHTS}")


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> tuple[dict, Path]:
    """One lesion rat and one sham at 256x256x18, one orientation (about a minute on 2 CPU threads)."""
    out = tmp_path_factory.mktemp("realism") / "results_realism.md"
    stored = next(o for o in realism.ORIENTATIONS if o.name == "stored")
    return realism.run(out, n_lesion=1, n_sham=1, seed=0, label="test", orientations=[stored]), out


@needs_weights
def test_published_model_finds_a_synthetic_lesion_and_the_report_is_written(judged):
    result, out = judged
    rows = result["rows"]
    assert {r["group"] for r in rows} == {"MCAo", "sham"} and len(rows) == 2
    assert set(realism.COLUMNS) <= set(rows[0])
    lesion, sham = (next(r for r in rows if r["group"] == g) for g in ("MCAo", "sham"))
    # found, not missed: a missed lesion (the judge's 2 h ones) or a broken input path scores near 0; this draw is a
    # 7 d lesion (pseudo-normalising; the judge's 7 d lesions score 0.49-0.80), 0.587 since the rat drew the real
    # source's stages (before: another stage, >= 0.6)
    assert lesion["dice"] >= 0.5, f"published model's Dice on a synthetic lesion: {lesion['dice']:.3f}"
    assert lesion["stage"] in TIME_POINTS and lesion["territory"] in TERRITORIES  # from dataset.json's case_lesion
    assert sham["stage"] == sham["territory"] == "-"
    for row in rows:  # the brain's share of a prediction is part of it
        assert 0.0 <= row["in_brain_mm3"] <= row["predicted_mm3"]
    assert lesion["in_brain_mm3"] > 0.5 * lesion["predicted_mm3"]  # a found lesion lies in the brain
    text = out.read_text()
    assert "| orientation | model sees | mean lesion Dice |" in text and "max sham mm3 in brain |" in text
    assert "| " + " | ".join(realism.COLUMNS) + " |" in text
    assert "Best orientation: **stored**" in text
    pngs = sorted((out.parent / "realism").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)


@needs_weights
def test_published_model_leaves_a_synthetic_sham_under_10_mm3(judged):
    """Issue 26's sham target on one case: 3.6 mm3 when the earlier rat met issue 21's targets, 10 mm3 or more (a
    strict xfail) until the skin was drawn to the real measure on 2026-12-07, 9.5 mm3 since: close to the target, and
    one case; benchmarks/results_realism.md judges the cohorts."""
    sham = next(r for r in judged[0]["rows"] if r["group"] == "sham")
    assert 0.0 <= sham["predicted_mm3"] < 10.0, f"published model marks {sham['predicted_mm3']:.1f} mm3 in a sham"


def test_the_report_sets_every_judge_beside_the_primary(tmp_path):
    """Fabricated rows, two judges and their vote: each judge's best orientation and the per-case table by judge."""
    rows = []
    for judge, dice_stored, sham_fc in (("heterogeneous/model-1", 0.8, 12.0), ("heterogeneous/model-2", 0.6, 3.0),
                                        (realism.MAJORITY, 0.7, 2.0)):
        for name, dice_value, sham in (("stored", dice_stored, 20.0), ("fc", 0.75, sham_fc)):
            rows.append({"judge": judge, "case_id": "r_000", "group": "MCAo", "stage": "24h", "territory": "striatum",
                         "orientation": name, "dice": dice_value, "predicted_mm3": 50.0, "in_brain_mm3": 50.0,
                         "true_mm3": 60.0})
            rows.append({"judge": judge, "case_id": "r_001", "group": "sham", "stage": "-", "territory": "-",
                         "orientation": name, "dice": float("nan"), "predicted_mm3": sham, "in_brain_mm3": 1.0,
                         "true_mm3": 0.0})
    chosen = [o for o in realism.ORIENTATIONS if o.name in ("stored", "fc")]
    summaries = {j: realism.summarise(rows, chosen, j) for j in dict.fromkeys(r["judge"] for r in rows)}
    primary, *others = summaries
    out = realism.write_results(tmp_path / "r.md", "test", rows, summaries[primary], chosen, np.eye(4), [], 1.0, 0,
                                {j: summaries[j] for j in others})
    text = out.read_text()
    assert "Best orientation: **stored**: mean lesion Dice 0.800, largest sham prediction 20.0 mm3" in text
    assert "| heterogeneous/model-2 | fc | 0.750 | 3.0 | 1.0 | met | 0.600 | 20.0 | 1.0 |" in text
    assert "| majority vote | fc | 0.750 | 2.0 | 1.0 | met |" in text
    assert "| r_001 | sham | - | 20.0 (1.0) | 20.0 (1.0) | 20.0 (1.0) |" in text
