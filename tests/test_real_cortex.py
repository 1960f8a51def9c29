"""benchmarks/real_cortex.py: cortex / striatum signal from dama-lab's structure labels."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

real_cortex = load_benchmark("real_cortex")


def test_cortex_over_striatum_is_the_ratio_of_their_medians_over_both_hemispheres():
    labels = np.zeros((4, 4, 4), int)
    labels[0], labels[1], labels[2], labels[3] = 14, 34, 3, 23  # cortex right, left; caudate putamen right, left
    image = np.where(np.isin(labels, (14, 34)), 110.0, 100.0)
    image[0, 0, 0] = 1000.0  # one bright voxel moves a mean, not the median
    assert real_cortex.cortex_over_striatum(image, labels) == pytest.approx(1.1)


def test_labels_without_striatum_are_refused():
    with pytest.raises(ValueError, match=r"no striatum \(3, 23\)"):
        real_cortex.cortex_over_striatum(np.ones((2, 2, 2)), np.full((2, 2, 2), 14))


def test_sigma_labels_pick_motor_and_somatosensory_cortex_and_the_striatum(tmp_path):
    text = "\n".join([
        "# ITK-SnAP Label Description File",
        '0\t0\t0\t0\t0\t0\t0\t"Clear Label"',
        '731\t255\t13\t0\t1\t1\t1\t"Striatum-L"',
        '732\t255\t13\t0\t1\t1\t1\t"Striatum-R"',
        '511\t9\t255\t0\t1\t1\t1\t"Primary Motor Cortex-L"',
        '581\t0\t149\t255\t1\t1\t1\t"Primary Somatosensory Cortex-L"',
        '141\t0\t255\t18\t1\t1\t1\t"Entorhinal Cortex-L"',
    ])
    (tmp_path / "labels.txt").write_text(text)
    cortex, striatum = real_cortex.sigma_labels(tmp_path / "labels.txt")
    assert sorted(cortex) == [511, 581] and sorted(striatum) == [731, 732]


def test_volume_share_is_a_percentage_of_the_labelled_structures():
    labels = np.zeros((10, 10, 1), int)
    labels[:5] = 14  # 50 voxels of neocortex
    labels[5:7] = 3  # 20 of caudate putamen; 30 unlabelled voxels count for nothing
    assert real_cortex.volume_share(labels, (3, 23)) == pytest.approx(100 * 20 / 70)
    assert real_cortex.volume_share(labels, (14, 34)) == pytest.approx(100 * 50 / 70)


def test_placement_reads_a_structure_in_half_extents_of_the_forebrain():
    """A forebrain box of 21 voxels per axis centred on the origin and a caudate putamen column 5 voxels to each side
    of it: |x| 0.5 of the half-extent in both hemispheres, y and z spread evenly about the centre."""
    labels = np.zeros((21, 21, 21), int)
    labels[:] = 14  # neocortex fills the forebrain
    labels[5, 8:13, 8:13], labels[15, 8:13, 8:13] = 3, 23
    low, median, high = real_cortex.placement(labels, np.eye(4), real_cortex.CAUDATE_PUTAMEN)
    assert median[0] == pytest.approx(0.5, abs=0.01) and low[0] == pytest.approx(0.5, abs=0.01)
    assert median[1] == pytest.approx(0.0, abs=0.01) and median[2] == pytest.approx(0.0, abs=0.01)
    assert high[1] == pytest.approx(0.2, abs=0.01) and low[2] == pytest.approx(-0.2, abs=0.01)


def test_deep_grey_figures_are_shares_of_the_forebrain_and_a_ratio_of_medians():
    labels = np.zeros((10, 10, 1), int)
    labels[:5] = 14  # 50 neocortex
    labels[5, :] = 3  # 10 caudate putamen
    labels[6, :5] = 39  # 5 septum (left)
    labels[7:, :] = 8  # 30 cerebellum: not forebrain
    image = np.where(labels == 39, 96.4, 100.0)
    figures = real_cortex.deep_grey_figures(image, labels)
    assert figures["striatum_forebrain"] == pytest.approx(100 * 10 / 65)
    assert figures["forebrain_share"] == pytest.approx(100 * 65 / 95)
    assert figures["septum_signal"] == pytest.approx(0.964)
