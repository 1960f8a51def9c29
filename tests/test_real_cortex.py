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
