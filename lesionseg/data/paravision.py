"""Write Bruker ParaVision study folders, the way a scanner stores a 2D multi-slice scan.

A study is ``STUDY/subject`` plus one folder per scan: ``STUDY/<E>/{acqp, method}`` and
``STUDY/<E>/pdata/<P>/{2dseq, visu_pars, reco}``, parameter files in JCAMP-DX. Geometry follows the
ParaVision visu spec: ``VisuCoreOrientation`` rows are the row, column and slice-normal directions
(a right-handed frame) and ``VisuCorePosition`` is the position of each frame's first voxel, in the order
the frames are stored in ``2dseq``. The subject is a head-first prone quadruped, whose frame ParaVision
writes as x = left, y = superior, z = anterior.

brkraw reads these folders but writes none, and nibabel knows nothing of ParaVision, so the JCAMP-DX
writer below is our own: it writes only the parameters a reader needs and a lab would look for.
"""
from __future__ import annotations

import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from lesionseg.data.dataset import read_cases
from lesionseg.data.io import atomic_dir, read_json, read_volume, write_text

PV_VERSION = "6.0.1"
STUDY_DATE = 1767225600  # 2026-01-01T00:00Z, fixed so that the same image gives the same files
SUBJECT_TYPE = "Quadruped"
SUBJECT_POSITION = "Head_Prone"
# RAS from ParaVision's subject frame of a head-first prone quadruped (x = left, y = superior, z = anterior).
RAS_FROM_PV = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
_INT16_MAX = np.iinfo(np.int16).max
_BYTE_ORDERS = {"little": "<", "big": ">"}
_ORIENT_NAMES = ("sagittal", "coronal", "axial")  # by the RAS axis the slice normal follows
_READ_NAMES = ("L_R", "A_P", "H_F")


@dataclass(frozen=True)
class Acquisition:
    """What the scanner records about a scan besides its voxels (defaults: the seed study's T2w RARE)."""

    protocol: str = "T2_TurboRARE"
    method: str = "Bruker:RARE"
    echo_time_ms: float = 33.0  # the effective TE (k-space centre): EffectiveTE, ACQ_echo_time, VisuAcqEchoTime
    echo_spacing_ms: float = 11.0  # RARE's PVM_EchoTime is the echo spacing, not the TE that contrast depends on
    repetition_time_ms: float = 2500.0
    rare_factor: int = 8
    field_strength_t: float = 7.0
    slice_gap_mm: float = 0.0  # PVM_SPackArrSliceGap: slice distance minus slice thickness


class _Text(str):
    """A JCAMP-DX string value, written as ``( size )`` then ``<text>``."""


def synthesize_studies(domain: str, n_cases: int, seed: int, out_dir: str | Path, *, byte_order: str = "little",
                       **dataset_args) -> Path:
    """Synthetic scans as a lab receives them from a Bruker scanner: one ParaVision study per animal in ``out_dir``,
    with the masks and groups a lab keeps beside them (``labels/CASE.nii.gz``, ``labels/cases.csv``).

    The scans are :func:`lesionseg.data.synthetic.synthesize_dataset`'s (same arguments, same voxels and affines),
    so importing the studies gives back the NIfTI dataset ``synthesize_dataset`` writes.
    """
    from lesionseg.data.synthetic import synthesize_dataset

    with tempfile.TemporaryDirectory(prefix="lesionseg-synth-") as scratch:
        raw = synthesize_dataset(domain, n_cases, seed, Path(scratch) / "raw", **dataset_args)
        return dataset_to_studies(raw, out_dir, byte_order=byte_order, acquisitions=synthetic_acquisitions(raw, domain))


def synthetic_acquisitions(raw_dir: str | Path, domain: str) -> dict[str, Acquisition]:
    """What the scanner would record for each case of a synthetic dataset: its cohort's field, TR and effective TE
    (``dataset.json``: ``generator.cohorts`` and ``generator.case_cohort``), or the domain's one protocol. The echo
    spacing is a third of the effective TE (k-space centre on the third echo, as the default 33 / 11 ms)."""
    from lesionseg.data.synthetic import domain_spec

    meta = read_json(Path(raw_dir) / "dataset.json").get("generator", {})
    spec = domain_spec(domain)
    protocols = {None: {"field_t": spec.field_t, "tr_s": spec.tr_s, "te_ms": spec.te_ms},
                 **dict(enumerate(meta.get("cohorts", [])))}
    out = {}
    for case in read_cases(raw_dir):
        protocol = protocols[meta.get("case_cohort", {}).get(case.case_id)]
        out[case.case_id] = Acquisition(echo_time_ms=protocol["te_ms"], echo_spacing_ms=round(protocol["te_ms"] / 3, 3),
                                        repetition_time_ms=protocol["tr_s"] * 1000.0,
                                        field_strength_t=protocol["field_t"])
    return out


def dataset_to_studies(raw_dir: str | Path, out_dir: str | Path, *, byte_order: str = "little",
                       acquisitions: Mapping[str, Acquisition] | None = None) -> Path:
    """Write each case of an nnU-Net raw dataset as a ParaVision study ``out_dir/CASE_1_1`` (with its
    ``acquisitions`` entry, else the default :class:`Acquisition`), its label as ``out_dir/labels/CASE.nii.gz``
    and the groups as ``out_dir/labels/cases.csv``; the folder appears complete."""
    cases = read_cases(raw_dir)
    acquisitions = acquisitions or {}
    with atomic_dir(out_dir) as tmp:
        (tmp / "labels").mkdir()
        for case in cases:
            volume = read_volume(case.image)
            write_study(tmp / f"{case.case_id}_1_1", volume.data, volume.affine, subject_id=case.case_id,
                        acquisition=acquisitions.get(case.case_id, Acquisition()), byte_order=byte_order)
            shutil.copyfile(case.label, tmp / "labels" / f"{case.case_id}.nii.gz")
        rows = "".join(f"{case.case_id},{case.group}\n" for case in cases)
        write_text(tmp / "labels" / "cases.csv", "case_id,group\n" + rows)
    return Path(out_dir)


def write_study(
    study_dir: str | Path,
    image: np.ndarray,
    affine: np.ndarray,
    *,
    subject_id: str,
    scan_id: int = 1,
    acquisition: Acquisition = Acquisition(),
    byte_order: str = "little",
    data_slope: float | None = None,
) -> Path:
    """Write one ParaVision study (one animal, one scan) holding ``image`` with RAS+ ``affine``.

    ``image`` is ``(columns, rows, slices)`` (or with a 4th axis of repetitions), stored as int16 2D frames
    with ``VisuCoreDataSlope`` = ``data_slope``; None picks a power of two that uses the int16 range. The
    slope must represent ``image`` exactly. The folder is built aside and renamed into place when complete.
    """
    study_dir = Path(study_dir)
    with atomic_dir(study_dir) as tmp:
        (tmp / "subject").write_text(_jcamp(_subject_params(subject_id, study_dir.name)))
        _write_scan(tmp / str(int(scan_id)), image, affine, subject_id=subject_id, acquisition=acquisition,
                    byte_order=byte_order, data_slope=data_slope)
    return study_dir


def add_scan(
    study_dir: str | Path,
    scan_id: int,
    image: np.ndarray,
    affine: np.ndarray,
    *,
    subject_id: str,
    acquisition: Acquisition = Acquisition(),
    byte_order: str = "little",
    data_slope: float | None = None,
) -> Path:
    """Add scan ``scan_id`` to an existing study (e.g. a localizer beside the T2w scan); see :func:`write_study`."""
    scan_dir = Path(study_dir) / str(int(scan_id))
    with atomic_dir(scan_dir) as tmp:
        _write_scan(tmp, image, affine, subject_id=subject_id, acquisition=acquisition, byte_order=byte_order,
                    data_slope=data_slope)
    return scan_dir


def _write_scan(scan_dir: Path, image: np.ndarray, affine: np.ndarray, *, subject_id: str,
                acquisition: Acquisition, byte_order: str, data_slope: float | None) -> None:
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image: expected (columns, rows, slices[, repetitions]), got shape {image.shape}")
    if byte_order not in _BYTE_ORDERS:
        raise ValueError(f"byte_order: {byte_order!r} is not one of {sorted(_BYTE_ORDERS)}")
    stored, slope = quantise(image, data_slope)
    geometry = _Geometry.of(np.asarray(affine, dtype=np.float64), image.shape[:3])
    n_frames = int(np.prod(image.shape[2:]))
    reco_dir = scan_dir / "pdata" / "1"
    reco_dir.mkdir(parents=True)
    (scan_dir / "acqp").write_text(_jcamp(_acqp_params(acquisition, geometry, byte_order)))
    (scan_dir / "method").write_text(_jcamp(_method_params(acquisition, geometry)))
    (reco_dir / "visu_pars").write_text(_jcamp(_visu_params(
        geometry, acquisition, subject_id, image.shape, byte_order, np.full(n_frames, slope), stored)))
    (reco_dir / "reco").write_text(_jcamp(_reco_params(geometry, byte_order, np.full(n_frames, slope))))
    dtype = np.dtype(np.int16).newbyteorder(_BYTE_ORDERS[byte_order])
    (reco_dir / "2dseq").write_bytes(stored.astype(dtype).tobytes(order="F"))  # column fastest, frame slowest


def quantise(image: np.ndarray, data_slope: float | None = None) -> tuple[np.ndarray, float]:
    """``(stored int16, slope)`` with ``stored * slope == image`` exactly; raises ValueError when impossible."""
    values = np.asarray(image, dtype=np.float64)
    if data_slope is None:
        peak = float(np.abs(values).max()) if values.size else 0.0
        data_slope = 2.0 ** -np.floor(np.log2(_INT16_MAX / peak)) if peak > 0 else 1.0
    stored = np.rint(values / data_slope)
    if np.abs(stored).max(initial=0) > _INT16_MAX or not np.array_equal(stored * data_slope, values):
        raise ValueError(f"data_slope: {data_slope:g} cannot store the image exactly as int16 "
                         f"(values {values.min():g}..{values.max():g}); pass a slope that divides every value")
    return stored.astype(np.int16), float(data_slope)


@dataclass(frozen=True)
class _Geometry:
    """A 2D multi-slice pack in ParaVision's subject frame."""

    shape: tuple[int, int, int]
    resolution: tuple[float, float]  # in-plane mm
    slice_distance: float  # centre to centre, mm
    orientation: np.ndarray  # (9,): row, column, slice-normal unit vectors
    positions: np.ndarray  # (slices, 3): first voxel of each stored frame
    slice_orient: str
    read_orient: str

    @classmethod
    def of(cls, affine: np.ndarray, shape: tuple[int, ...]) -> "_Geometry":
        if affine.shape != (4, 4):
            raise ValueError(f"affine: expected 4x4, got {affine.shape}")
        columns = RAS_FROM_PV.T @ affine[:3, :3]  # RAS_FROM_PV is orthogonal: its inverse is its transpose
        zooms = np.linalg.norm(columns, axis=0)
        units = columns / zooms
        if not np.allclose(units.T @ units, np.eye(3), atol=1e-6):
            raise ValueError("affine: voxel axes are not orthogonal; a 2D multi-slice pack cannot store it")
        origin = RAS_FROM_PV.T @ affine[:3, 3]
        ras_axes = np.abs(affine[:3, :3] / zooms)
        return cls(
            shape=tuple(int(s) for s in shape[:3]), resolution=(float(zooms[0]), float(zooms[1])),
            slice_distance=float(zooms[2]),
            orientation=np.concatenate([units[:, 0], units[:, 1], np.cross(units[:, 0], units[:, 1])]),
            positions=origin + np.outer(np.arange(shape[2]), columns[:, 2]),
            slice_orient=_ORIENT_NAMES[int(np.argmax(ras_axes[:, 2]))],
            read_orient=_READ_NAMES[int(np.argmax(ras_axes[:, 0]))],
        )


# --- parameter files ------------------------------------------------------------------------------------


def _subject_params(subject_id: str, study_name: str) -> dict:
    return {
        "SUBJECT_id": _Text(subject_id), "SUBJECT_name_string": _Text(subject_id),
        "SUBJECT_study_name": _Text(study_name), "SUBJECT_study_nr": 1, "SUBJECT_type": SUBJECT_TYPE,
        "SUBJECT_entry": "SUBJ_ENTRY_HeadFirst", "SUBJECT_position": "SUBJ_POS_Prone",
        "SUBJECT_abs_date": (STUDY_DATE, 0, 0),  # seconds since 1970, ms, minutes east of UTC: same bytes each run
    }


def _acqp_params(acq: Acquisition, geo: _Geometry, byte_order: str) -> dict:
    return {
        "ACQ_protocol_name": _Text(acq.protocol), "ACQ_scan_name": _Text(acq.protocol),
        "ACQ_method": _Text(acq.method), "ACQ_dim": 2, "NSLICES": geo.shape[2],
        "ACQ_echo_time": np.array([acq.echo_time_ms]), "ACQ_repetition_time": np.array([acq.repetition_time_ms]),
        "BF1": round(acq.field_strength_t * 42.577478, 6), "BYTORDA": byte_order, "ACQ_word_size": "_32_BIT",
        "ACQ_sw_version": _Text(f"PV {PV_VERSION}"),
    }


def _method_params(acq: Acquisition, geo: _Geometry) -> dict:
    fov = np.array(geo.resolution) * geo.shape[:2]
    return {
        "Method": _Text(acq.method), "PVM_EchoTime": acq.echo_spacing_ms, "EffectiveTE": np.array([acq.echo_time_ms]),
        "PVM_RepetitionTime": acq.repetition_time_ms,
        "PVM_RareFactor": acq.rare_factor, "PVM_Matrix": np.array(geo.shape[:2]), "PVM_Fov": fov,
        "PVM_SpatResol": np.array(geo.resolution), "PVM_SliceThick": geo.slice_distance - acq.slice_gap_mm,
        "PVM_NSPacks": 1, "PVM_SPackArrNSlices": np.array([geo.shape[2]]),
        "PVM_SPackArrSliceOrient": [geo.slice_orient], "PVM_SPackArrReadOrient": [geo.read_orient],
        "PVM_SPackArrSliceDistance": np.array([geo.slice_distance]),
        "PVM_SPackArrSliceGap": np.array([acq.slice_gap_mm]),
    }


def _visu_params(geo: _Geometry, acq: Acquisition, subject_id: str, shape: tuple[int, ...], byte_order: str,
                 slopes: np.ndarray, stored: np.ndarray) -> dict:
    n_slices = geo.shape[2]
    groups = [(n_slices, "FG_SLICE", _Text(""), 0, 2)]
    if len(shape) == 4:
        groups.append((int(shape[3]), "FG_CYCLE", _Text(""), 0, 0))
    frames = stored.reshape(*geo.shape[:2], -1, order="F")
    return {
        "VisuVersion": 3, "VisuCreator": _Text("ParaVision"), "VisuCreatorVersion": _Text(PV_VERSION),
        "VisuCoreFrameCount": int(np.prod(shape[2:])), "VisuCoreDim": 2, "VisuCoreSize": np.array(geo.shape[:2]),
        "VisuCoreDimDesc": ["spatial", "spatial"], "VisuCoreExtent": np.array(geo.resolution) * geo.shape[:2],
        "VisuCoreFrameThickness": np.array([geo.slice_distance - acq.slice_gap_mm]),
        "VisuCoreUnits": [_Text("mm"), _Text("mm")],
        "VisuCoreOrientation": np.tile(geo.orientation, (n_slices, 1)), "VisuCorePosition": geo.positions,
        "VisuCoreDataMin": frames.min(axis=(0, 1)).astype(np.float64),
        "VisuCoreDataMax": frames.max(axis=(0, 1)).astype(np.float64),
        "VisuCoreDataOffs": np.zeros_like(slopes), "VisuCoreDataSlope": slopes,
        "VisuCoreFrameType": "MAGNITUDE_IMAGE", "VisuCoreWordType": "_16BIT_SGN_INT",
        "VisuCoreByteOrder": f"{byte_order}Endian",
        "VisuFGOrderDescDim": len(groups), "VisuFGOrderDesc": groups,
        "VisuGroupDepVals": [(_Text("VisuCoreOrientation"), 0), (_Text("VisuCorePosition"), 0)],
        "VisuSubjectId": _Text(subject_id), "VisuSubjectType": SUBJECT_TYPE,
        "VisuSubjectPosition": SUBJECT_POSITION, "VisuAcquisitionProtocol": _Text(acq.protocol),
        "VisuAcqSequenceName": _Text(acq.method), "VisuAcqEchoTime": np.array([acq.echo_time_ms]),
        "VisuAcqRepetitionTime": np.array([acq.repetition_time_ms]), "VisuAcqEchoTrainLength": acq.rare_factor,
        "VisuMagneticFieldStrength": acq.field_strength_t,
    }


def _reco_params(geo: _Geometry, byte_order: str, slopes: np.ndarray) -> dict:
    return {
        "RECO_wordtype": "_16BIT_SGN_INT", "RECO_byte_order": f"{byte_order}Endian",
        "RECO_size": np.array(geo.shape[:2]), "RECO_map_slope": 1.0 / slopes, "RECO_image_type": "MAGNITUDE_IMAGE",
    }


# --- JCAMP-DX ---------------------------------------------------------------------------------------------


def _jcamp(params: Mapping[str, object]) -> str:
    """A ParaVision parameter file: the JCAMP-DX header, one ``##$KEY=`` block per parameter, ``##END=``."""
    lines = [f"##TITLE=Parameter List, ParaVision {PV_VERSION}", "##JCAMPDX=4.24", "##DATATYPE=Parameter Values",
             "##ORIGIN=Bruker BioSpin MRI GmbH", "##OWNER=lesionseg"]
    lines += [f"##${key}={_value(value)}" for key, value in params.items()]
    return "\n".join(lines + ["##END=", ""])


def _value(value: object) -> str:
    if isinstance(value, _Text):
        return f"( {max(64, len(value) + 1)} )\n<{value}>"
    if isinstance(value, np.ndarray):
        shape = ", ".join(str(n) for n in value.shape)
        return f"( {shape} )\n" + "\n".join(textwrap.wrap(" ".join(_scalar(v) for v in value.ravel()), 78))
    if isinstance(value, tuple):
        return _struct(value)
    if isinstance(value, list):
        return f"( {len(value)} )\n" + " ".join(_struct(v) if isinstance(v, tuple) else _scalar(v) for v in value)
    return _scalar(value)


def _struct(items: tuple) -> str:
    return "(" + ", ".join(f"<{v}>" if isinstance(v, _Text) else _scalar(v) for v in items) + ")"


def _scalar(value: object) -> str:
    if isinstance(value, _Text):
        return f"<{value}>"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # shortest text that reads back as the same double
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)
