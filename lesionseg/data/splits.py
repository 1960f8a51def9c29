"""The ``split`` and ``subsets`` stages: stratified train/val/test splits and nested, lesion-balanced subsets.

Cases are mappings with ``case_id``, ``group`` (``MCAo`` | ``sham``) and ``lesion_volume_mm3``, as in a
prepared manifest's ``cases``. Everything is deterministic: ids are sorted before a seeded shuffle.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from lesionseg.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
SHAM = "sham"


def lesion_size_bins(volumes_mm3: Sequence[float], n_bins: int) -> list[str]:
    """Size bin of each volume: ``"sham"`` for 0, else ``"q1"`` (smallest) .. ``"qN"`` by rank among lesions.

    Bins are equal-count quantiles of the non-zero volumes (ties broken by position), so their sizes differ
    by at most one.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be >= 1")
    volumes = np.asarray(volumes_mm3, dtype=np.float64)
    if volumes.size and (not np.isfinite(volumes).all() or (volumes < 0).any()):
        raise ValueError("volumes_mm3 must be finite and >= 0; re-run prepare to measure lesion volumes")
    lesion_idx = np.flatnonzero(volumes > 0)
    order = lesion_idx[np.argsort(volumes[lesion_idx], kind="stable")]
    bins = [SHAM] * volumes.size
    for rank, index in enumerate(order):
        bins[index] = f"q{rank * n_bins // order.size + 1}"
    return bins


def split_cases(
    cases: Sequence[Mapping],
    *,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int,
    n_size_bins: int = 3,
) -> dict[str, list[str]]:
    """Split cases into ``{"train", "val", "test"}`` id lists, stratified by group and lesion-size bin.

    Split sizes follow ``fractions`` by largest remainder (every split with a positive fraction gets at least
    one case), each stratum is spread over the splits in proportion, and every split gets shams and lesion
    cases when there are enough of each. Ids in each list are sorted.
    """
    _check_fractions(fractions)
    strata = _strata(cases, n_size_bins)
    n = sum(len(ids) for ids in strata.values())
    if n < sum(1 for f in fractions if f > 0):
        raise ConfigError(f"split: {n} cases cannot fill {len(SPLITS)} splits with fractions {list(fractions)}; "
                          "synthesize or add more cases")
    counts = _stratum_counts(strata, _totals(n, fractions), fractions)
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    for stratum, ids in strata.items():
        shuffled = [ids[i] for i in rng.permutation(len(ids))]
        bounds = np.cumsum([0, *counts[stratum]])
        for s, name in enumerate(SPLITS):
            split[name] += shuffled[bounds[s]:bounds[s + 1]]
    return {name: sorted(ids) for name, ids in split.items()}


def lesion_balanced_subsets(
    cases: Sequence[Mapping],
    train_ids: Sequence[str],
    sizes: Sequence[int],
    *,
    seed: int,
    n_size_bins: int = 3,
) -> dict[str, list[str]]:
    """Nested training subsets of the given ``sizes``, keyed ``str(size)`` in ascending order.

    Each subset is the first ``size`` cases of one seeded ordering of the training pool, so every subset
    contains the smaller ones. In every prefix the shams are ``round(size * pool sham fraction)`` and the
    lesion cases take the size bins in turn (bin counts differ by at most one while each bin lasts).
    """
    by_id = {str(c["case_id"]): c for c in cases}
    missing = sorted(set(train_ids) - set(by_id))
    if missing:
        raise DataError(f"subsets: training ids {missing[:5]} are not among the cases; re-run the split stage")
    pool = [by_id[i] for i in sorted(set(train_ids))]
    sizes = sorted({_positive_size(s) for s in sizes})
    if sizes and sizes[-1] > len(pool):
        raise ConfigError(f"subsets: sample size {sizes[-1]} exceeds the {len(pool)} training cases; "
                          "lower subsets.sizes in params.yaml or synthesize more cases")
    order = _balanced_order(_strata(pool, n_size_bins), len(pool), np.random.default_rng(seed))
    return {str(size): sorted(order[:size]) for size in sizes}


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != len(SPLITS) or any(not 0 <= f <= 1 for f in fractions):
        raise ConfigError(f"split: fractions {list(fractions)} must be 3 numbers in [0, 1] (train, val, test); "
                          "fix params.yaml")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split: fractions {list(fractions)} sum to {sum(fractions):g}, not 1; fix params.yaml")


def _positive_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ConfigError(f"subsets: sample size {size!r} must be a positive integer; fix subsets.sizes in params.yaml")
    return int(size)


def _strata(cases: Sequence[Mapping], n_size_bins: int) -> dict[str, list[str]]:
    """Sorted case ids per stratum: ``"sham"`` and the lesion size bins ``"q1"`` ...; keys sorted."""
    ids = [str(c["case_id"]) for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"split: duplicate case ids {duplicates[:5]}; each case must appear once in the manifest")
    volumes = [0.0 if c["group"] == SHAM else float(c["lesion_volume_mm3"]) for c in cases]
    strata: dict[str, list[str]] = {}
    for case_id, stratum in zip(ids, lesion_size_bins(volumes, n_size_bins)):
        strata.setdefault(stratum, []).append(case_id)
    return {key: sorted(strata[key]) for key in sorted(strata)}


def _largest_remainder(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Integers summing to ``n``, each floor(n * f) plus one for the largest remainders (ties: earlier first)."""
    quotas = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(quotas + 1e-9).astype(int)
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: max(0, n - int(counts.sum()))]] += 1
    return counts


def _totals(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Split sizes by largest remainder, moving a case from the largest split to any empty positive one."""
    totals = _largest_remainder(n, fractions)
    for s, f in enumerate(fractions):
        if f > 0 and totals[s] == 0:
            totals[s] += 1
            totals[int(np.argmax(totals))] -= 1
    return totals


def _stratum_counts(strata: dict[str, list[str]], totals: np.ndarray,
                    fractions: Sequence[float]) -> dict[str, np.ndarray]:
    """Cases per stratum and split: proportional per stratum, then adjusted so the split sizes equal ``totals``."""
    counts = {k: _largest_remainder(len(ids), fractions) for k, ids in strata.items()}
    quotas = {k: np.asarray(fractions) * len(ids) for k, ids in strata.items()}
    while True:
        excess = sum(counts.values()) - totals
        if not excess.any():
            break
        src, dst = int(np.argmax(excess)), int(np.argmin(excess))
        # Move one case of the stratum most over its quota in ``src`` (and under it in ``dst``).
        movable = [k for k in counts if counts[k][src] > 0]
        k = max(movable, key=lambda k: (counts[k][src] - quotas[k][src]) - (counts[k][dst] - quotas[k][dst]))
        counts[k][src] -= 1
        counts[k][dst] += 1
    _ensure_both_groups(counts)
    return counts


def _ensure_both_groups(counts: dict[str, np.ndarray]) -> None:
    """Give every non-empty split at least one sham and one lesion case when each group can cover all splits.

    A case of the missing group is swapped with a case of the other group from the split that has the
    most of it, so the split sizes stay the same.
    """
    lesion_keys = [k for k in counts if k != SHAM]
    if SHAM not in counts or not lesion_keys:
        return
    for group, other in (([SHAM], lesion_keys), (lesion_keys, [SHAM])):
        group_total = sum(counts[k] for k in group)
        for s in np.flatnonzero(group_total == 0):
            other_total = sum(counts[k] for k in other)
            donor = int(np.argmax(group_total))
            if other_total[s] < 2 or group_total[donor] < 2 or group_total.sum() < len(group_total):
                continue
            give = max(group, key=lambda k: counts[k][donor])
            take = max(other, key=lambda k: counts[k][s])
            counts[give][donor] -= 1
            counts[give][s] += 1
            counts[take][s] -= 1
            counts[take][donor] += 1
            group_total = sum(counts[k] for k in group)


def _balanced_order(strata: dict[str, list[str]], n: int, rng: np.random.Generator) -> list[str]:
    """One ordering of the pool whose every prefix is sham-proportional and lesion-size balanced."""
    sham_ids = strata.get(SHAM, [])
    shams = [sham_ids[i] for i in rng.permutation(len(sham_ids))]
    bins = {k: [ids[i] for i in rng.permutation(len(ids))] for k, ids in strata.items() if k != SHAM}
    lesions = _round_robin(bins, rng)
    sham_fraction = len(shams) / n if n else 0.0
    order: list[str] = []
    n_shams = 0
    for position in range(1, n + 1):
        lesions_left = len(order) - n_shams < len(lesions)
        if n_shams < len(shams) and (n_shams < math.floor(position * sham_fraction + 0.5) or not lesions_left):
            order.append(shams[n_shams])
            n_shams += 1
        else:
            order.append(lesions[len(order) - n_shams])
    return order


def _round_robin(bins: dict[str, list[str]], rng: np.random.Generator) -> list[str]:
    """Lesion ids taking one from each size bin per round, the bins in a fresh seeded order each round."""
    queues = {k: list(v) for k, v in bins.items()}
    order: list[str] = []
    while any(queues.values()):
        keys = [k for k in sorted(queues) if queues[k]]
        for i in rng.permutation(len(keys)):
            order.append(queues[keys[i]].pop(0))
    return order
