"""Stratified splits and nested lesion-balanced subsets."""
from collections import Counter

import numpy as np
import pytest

from lesionseg.data.splits import lesion_balanced_subsets, lesion_size_bins, split_cases
from lesionseg.errors import ConfigError, DataError

FRACTIONS = (0.7, 0.1, 0.2)


def make_cases(n: int, sham_every: int = 5, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "case_id": f"case_{i:03d}",
            "group": "sham" if i % sham_every == 0 else "MCAo",
            "lesion_volume_mm3": 0.0 if i % sham_every == 0 else float(rng.uniform(2.0, 80.0)),
        }
        for i in range(n)
    ]


def bins_of(cases: list[dict], ids, n_bins: int = 3) -> dict[str, str]:
    pool = [c for c in cases if c["case_id"] in set(ids)]
    return dict(zip([c["case_id"] for c in pool], lesion_size_bins([c["lesion_volume_mm3"] for c in pool], n_bins)))


def test_lesion_size_bins_are_equal_count_quantiles():
    volumes = [0.0, 5.0, 1.0, 0.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    bins = lesion_size_bins(volumes, 3)
    assert bins == ["sham", "q2", "q1", "sham", "q3", "q1", "q2", "q1", "q3"]
    by_bin = {b: [v for v, bb in zip(volumes, bins) if bb == b] for b in ("q1", "q2", "q3")}
    assert max(by_bin["q1"]) <= min(by_bin["q2"]) and max(by_bin["q2"]) <= min(by_bin["q3"])


def test_lesion_size_bins_rejects_bad_input():
    with pytest.raises(ValueError, match="n_bins"):
        lesion_size_bins([1.0], 0)
    with pytest.raises(ValueError, match="finite"):
        lesion_size_bins([1.0, float("nan")], 2)


@pytest.mark.parametrize("n", [10, 23, 37, 60, 100])
@pytest.mark.parametrize("seed", [0, 7])
def test_split_sizes_follow_fractions_and_partition_the_cases(n, seed):
    cases = make_cases(n)
    split = split_cases(cases, fractions=FRACTIONS, seed=seed)
    assert list(split) == ["train", "val", "test"]
    for name, fraction in zip(split, FRACTIONS):
        assert abs(len(split[name]) - n * fraction) <= 1, (name, len(split[name]))
        assert split[name] == sorted(split[name])
    all_ids = [i for ids in split.values() for i in ids]
    assert sorted(all_ids) == sorted(c["case_id"] for c in cases)  # disjoint and covering


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_stratified_by_group_and_size_bin(seed):
    cases = make_cases(90, sham_every=4, seed=seed)
    split = split_cases(cases, seed=seed)
    bins = bins_of(cases, [c["case_id"] for c in cases])
    pool = Counter(bins.values())
    for name, fraction in zip(split, FRACTIONS):
        got = Counter(bins[i] for i in split[name])
        for stratum, size in pool.items():
            assert abs(got[stratum] - size * fraction) <= 1.5, (name, stratum, got[stratum], size * fraction)


def test_every_split_gets_shams_and_lesions():
    cases = make_cases(20, sham_every=6)  # 4 shams, 16 lesions; val holds only 2 cases
    group = {c["case_id"]: c["group"] for c in cases}
    for seed in range(5):
        for name, ids in split_cases(cases, seed=seed).items():
            assert {group[i] for i in ids} == {"sham", "MCAo"}, (seed, name)


def test_split_is_deterministic_and_seeded():
    cases = make_cases(40)
    assert split_cases(cases, seed=3) == split_cases(list(reversed(cases)), seed=3)
    assert split_cases(cases, seed=3) != split_cases(cases, seed=4)


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.2, -0.1, -0.1)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ConfigError, match="fractions"):
        split_cases(make_cases(20), fractions=fractions, seed=0)


def test_split_rejects_too_few_cases_and_duplicates():
    with pytest.raises(ConfigError, match="2 cases cannot fill"):
        split_cases(make_cases(2), seed=0)
    cases = make_cases(10)
    with pytest.raises(DataError, match="duplicate"):
        split_cases(cases + cases[:1], seed=0)


@pytest.fixture
def pool():
    cases = make_cases(60)
    train = split_cases(cases, seed=0)["train"]  # 42 cases, about 1 in 5 sham
    return cases, train


def test_subsets_are_nested_and_keyed_ascending(pool):
    cases, train = pool
    subsets = lesion_balanced_subsets(cases, train, [24, 8, 40, 16], seed=1)
    assert list(subsets) == ["8", "16", "24", "40"]
    sizes = [8, 16, 24, 40]
    for small, large in zip(sizes, sizes[1:]):
        assert set(subsets[str(small)]) < set(subsets[str(large)])
    for size in sizes:
        assert len(subsets[str(size)]) == size and set(subsets[str(size)]) <= set(train)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_subsets_balance_lesion_bins_and_keep_sham_proportion(pool, seed):
    cases, train = pool
    bins = bins_of(cases, train)
    sham_fraction = sum(b == "sham" for b in bins.values()) / len(train)
    for size, ids in lesion_balanced_subsets(cases, train, range(4, 41, 4), seed=seed).items():
        counts = Counter(bins[i] for i in ids)
        lesion_counts = [counts[q] for q in ("q1", "q2", "q3")]
        assert max(lesion_counts) - min(lesion_counts) <= 1, (size, counts)
        assert abs(counts["sham"] - int(size) * sham_fraction) <= 0.5 + 1e-9, (size, counts)


def test_subsets_are_deterministic_and_seeded(pool):
    cases, train = pool
    first = lesion_balanced_subsets(cases, train, [8, 16], seed=5)
    assert first == lesion_balanced_subsets(cases, list(reversed(train)), [16, 8], seed=5)
    assert first != lesion_balanced_subsets(cases, train, [8, 16], seed=6)


def test_subset_larger_than_pool_is_a_clear_error(pool):
    cases, train = pool
    with pytest.raises(ConfigError) as err:
        lesion_balanced_subsets(cases, train, [8, 48], seed=0)
    assert str(err.value) == (
        "subsets: sample size 48 exceeds the 42 training cases; "
        "lower subsets.sizes in params.yaml or synthesize more cases"
    )


def test_subsets_reject_unknown_ids_and_bad_sizes(pool):
    cases, train = pool
    with pytest.raises(DataError, match="not among the cases"):
        lesion_balanced_subsets(cases, [*train, "nope"], [8], seed=0)
    with pytest.raises(ConfigError, match="positive integer"):
        lesion_balanced_subsets(cases, train, [0], seed=0)


def test_repeats_draw_different_nested_subsets():
    from lesionseg.data.splits import lesion_balanced_subsets

    cases = [{"case_id": f"m{i:02d}", "group": "sham" if i % 4 == 0 else "MCAo",
              "lesion_volume_mm3": 0.0 if i % 4 == 0 else float(5 + 3 * i)} for i in range(40)]
    ids = [c["case_id"] for c in cases]
    draws = [lesion_balanced_subsets(cases, ids, [8, 16], seed=11 + repeat, n_size_bins=3) for repeat in (0, 1)]
    for draw in draws:
        assert set(draw["8"]) < set(draw["16"]), "nested within a repeat"
    assert draws[0]["16"] != draws[1]["16"] and draws[0]["8"] != draws[1]["8"], "independent between repeats"
