"""A synthetic cohort written as an nnU-Net v2 raw dataset (images, labels, dataset.json, cases.csv)."""
from __future__ import annotations

import csv
import io
import zlib
from dataclasses import asdict, replace
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from lesionseg.data.io import atomic_dir, write_json, write_text, write_volume
from lesionseg.data.synthetic.domains import DomainSpec, case_cohort, cohort_protocols, cohort_spec, domain_spec
from lesionseg.data.synthetic.render import SyntheticCase, synthesize_case


# What dataset.json's ``generator.case_lesion`` records per case (None for shams), so that results can be read by
# the lesion's stage and territory without drawing the cohort again.
LESION_DRAWS = ("time_point", "territory", "occlusion_min")


def _nifti_header(spec: DomainSpec, what: str) -> nib.Nifti1Header:
    """A scanner-like header: mm units, coronal slices on axis 2, a description of what the file holds."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header.set_dim_info(freq=0, phase=1, slice=2)
    header["descrip"] = f"lesionseg synthetic {spec.name} T2w RARE {what}".encode()[:79]
    return header


def _sham_positions(n_cases: int, sham_fraction: float, seed: int, domain_key: int) -> set[int]:
    n_shams = round(n_cases * sham_fraction)
    rng = np.random.default_rng([seed, domain_key])
    return {int(i) for i in rng.choice(n_cases, size=n_shams, replace=False)}


def _check_dataset_args(n_cases: int, seed: int, sham_fraction: float) -> None:
    if isinstance(n_cases, bool) or int(n_cases) != n_cases or n_cases < 1:
        raise ValueError(f"n_cases: {n_cases!r} is not a positive integer; pass how many scans to generate")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed: {seed!r} is not a non-negative integer; pass e.g. 0")
    if not 0.0 <= sham_fraction <= 1.0:
        raise ValueError(f"sham_fraction: {sham_fraction!r} is outside [0, 1]; pass e.g. 0.25")


def _cases_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    columns = ["case_id", "group", "lesion_volume_mm3", "spacing"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def generate_cases(domain: str, n_cases: int, seed: int, *, sham_fraction: float = 0.25, matrix: int | None = None,
                   n_slices: int | None = None, case_prefix: str | None = None,
                   slab_slices: int | None = None) -> Iterator[tuple[SyntheticCase, int | None]]:
    """The cases :func:`synthesize_dataset` writes, in order, each with its cohort index (None: one protocol).

    ``slab_slices``: the same animals imaged with this many slices of the same thickness around the same centre
    (a longer slab, e.g. to measure the whole brain where the protocol's slab is shorter than the brain).
    """
    spec = domain_spec(domain, matrix=matrix, n_slices=n_slices)
    if slab_slices is not None:
        if int(slab_slices) != slab_slices or slab_slices < 4:
            raise ValueError(f"slab_slices: {slab_slices!r} is not an integer >= 4; pass e.g. {2 * spec.n_slices}")
        spec = replace(spec, n_slices=int(slab_slices))
    _check_dataset_args(n_cases, seed, sham_fraction)
    domain_key = zlib.crc32(domain.encode())
    shams = _sham_positions(int(n_cases), sham_fraction, int(seed), domain_key)
    protocols = cohort_protocols(spec)
    for i in range(int(n_cases)):
        rng = np.random.default_rng([int(seed), domain_key, i])
        cohort = case_cohort(spec, int(seed), i)
        scanned = spec if cohort is None else cohort_spec(spec, protocols[cohort])
        case = synthesize_case(scanned, f"{case_prefix or domain}_{i:03d}", rng, lesion=i not in shams)
        _check_lesion_visible(case, scanned)
        yield case, cohort


def _check_lesion_visible(case: SyntheticCase, spec: DomainSpec) -> None:
    """A lesion case whose mask came out empty (the lesion covers under half of every voxel) would be an MCAo
    scan without a lesion: refuse the grid rather than write it."""
    if case.group == "MCAo" and not case.label.any():
        voxel = float(np.prod(spec.spacing))
        raise ValueError(f"{case.case_id}: its lesion fills under half of any voxel at matrix {spec.matrix} x "
                         f"{spec.n_slices} slices ({voxel:.1f} mm3 voxels); pass a larger matrix or more slices")


def synthesize_dataset(
    domain: str,
    n_cases: int,
    seed: int,
    out_dir: str | Path,
    *,
    sham_fraction: float = 0.25,
    matrix: int | None = None,
    n_slices: int | None = None,
    case_prefix: str | None = None,
) -> Path:
    """Write ``n_cases`` synthetic scans of ``domain`` as an nnU-Net v2 raw dataset (plus ``cases.csv``), with
    case ids ``{case_prefix or domain}_000`` ... (a new cohort of the same domain gets its own prefix).

    The directory is built aside and moved into place only when complete. Case ``i`` depends only on
    (seed, domain, i) and whether it is a sham; which cases are shams (``round(n_cases * sham_fraction)`` of
    them) is drawn from the seed. The same arguments give byte-identical files. ``dataset.json`` lists the
    domain's cohorts (scanner protocols), which cohort each case comes from and each lesion's time point,
    territory class and occlusion time (``generator.case_lesion``).
    """
    spec = domain_spec(domain, matrix=matrix, n_slices=n_slices)
    _check_dataset_args(n_cases, seed, sham_fraction)
    rows, cohort_of, lesion_of = [], {}, {}
    protocols = cohort_protocols(spec)
    out_dir = Path(out_dir)
    cases = generate_cases(domain, n_cases, seed, sham_fraction=sham_fraction, matrix=matrix, n_slices=n_slices,
                           case_prefix=case_prefix)
    with atomic_dir(out_dir) as tmp:
        for case, cohort in cases:
            cohort_of[case.case_id] = cohort
            lesion_of[case.case_id] = {key: case.info.get(key) for key in LESION_DRAWS}
            write_volume(tmp / "imagesTr" / f"{case.case_id}_0000.nii.gz", case.image, case.affine,
                         _nifti_header(spec, "image"))
            write_volume(tmp / "labelsTr" / f"{case.case_id}.nii.gz", case.label, case.affine,
                         _nifti_header(spec, "lesion label"))
            rows.append({"case_id": case.case_id, "group": case.group,
                         "lesion_volume_mm3": round(case.lesion_volume_mm3, 6),
                         "spacing": "x".join(f"{s:.6g}" for s in nib.affines.voxel_sizes(case.affine))})
        write_json(tmp / "dataset.json", {
            "name": f"synthetic_{domain}",
            "description": f"Synthetic {domain} T2w MCAo MRI (coronal 2D RARE, head not skull-stripped) "
                           f"from lesionseg's generator",
            "channel_names": {"0": "T2w"},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": int(n_cases),
            "file_ending": ".nii.gz",
            "domain": domain,
            "generator": {"module": "lesionseg.data.synthetic", "seed": int(seed), "matrix": spec.matrix,
                          "n_slices": spec.n_slices, "sham_fraction": sham_fraction,
                          "cohorts": [asdict(p) for p in protocols], "case_cohort": cohort_of,
                          "case_lesion": lesion_of},
        })
        write_text(tmp / "cases.csv", _cases_csv(rows))
    return out_dir
