"""Slice figures: PNGs are written, sized by the slice count, with or without a prediction."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from lesionseg.data.synthetic import domain_spec, synthesize_case, synthesize_dataset
from lesionseg.evaluation.overlays import _choose_slices, render_dataset_case, render_slices


@pytest.fixture(scope="module")
def case():
    return synthesize_case(domain_spec("mouse", matrix=48), "mouse_t", np.random.default_rng(5), lesion=True)


def _png(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 5_000
    return mpimg.imread(path)


def test_render_with_label_and_prediction(tmp_path, case):
    prediction = np.roll(case.label, 2, axis=0)
    out = render_slices(case.image, case.affine, tmp_path / "fig" / "overlay.png", label=case.label,
                        prediction=prediction, n_slices=3, title="mouse_t")
    pixels = _png(out)
    height, width = pixels.shape[:2]
    assert 900 <= width <= 1200 and 300 <= height <= 600  # three ~3-inch panels at 110 dpi
    red, lime = _outline_pixels(pixels)
    assert red > 50 and lime > 50  # both outlines (and legend lines) are drawn
    assert not list(tmp_path.glob("fig/.*tmp*"))  # the atomic write left no temporary file


def _outline_pixels(pixels: np.ndarray) -> tuple[int, int]:
    """Counts of pure-red (prediction) and lime (ground truth) pixels."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((r > 0.8) & (g < 0.3) & (b < 0.3)).sum()), int(((g > 0.8) & (r < 0.3) & (b < 0.3)).sum())


def test_render_without_masks_has_no_outlines(tmp_path, case):
    pixels = _png(render_slices(case.image, case.affine, tmp_path / "plain.png", n_slices=2))
    assert 600 <= pixels.shape[1] <= 800  # two panels
    assert _outline_pixels(pixels) == (0, 0)


def test_slices_follow_the_lesion_and_otherwise_span_the_head(case):
    area = case.label.sum(axis=(0, 1))
    picked = _choose_slices(case.image, [case.label.astype(bool), None], axis=2, n_slices=3)
    assert sorted(area[picked]) == sorted(area)[-3:]
    spread = _choose_slices(case.image, [None, None], axis=2, n_slices=4)
    assert len(spread) == 4 and spread == sorted(spread) and spread[-1] - spread[0] >= 8


def test_mask_of_wrong_shape_is_refused(tmp_path, case):
    with pytest.raises(ValueError, match="prediction"):
        render_slices(case.image, case.affine, tmp_path / "x.png", prediction=np.zeros((3, 3, 3)))


def test_render_dataset_case(tmp_path):
    dataset = synthesize_dataset("rat", 2, seed=0, out_dir=tmp_path / "rat", matrix=40, sham_fraction=0.0)
    pixels = _png(render_dataset_case(dataset, "rat_001", tmp_path / "rat_001.png", n_slices=2))
    assert pixels.shape[0] > 200
