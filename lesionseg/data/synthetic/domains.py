"""The two imaging domains (rat source, mouse target): geometry, anatomy, contrast, coil and noise."""
from __future__ import annotations

from dataclasses import dataclass, replace

from lesionseg.data.synthetic.anatomy import Anatomy
from lesionseg.data.synthetic.protocol import PROTOCOL, RELAXATION, Contrast, t2w_contrast


@dataclass(frozen=True)
class DomainSpec:
    """One imaging domain: species, acquisition geometry, contrast, coil and noise."""

    name: str
    matrix: int  # in-plane matrix (square)
    n_slices: int  # coronal slices, front to back
    fov_mm: float  # in-plane field of view
    slice_thickness_mm: float
    anatomy: Anatomy
    contrast: Contrast
    brain_center_mm: tuple[float, float, float]  # brain centre relative to the FOV centre (x, y, z), RAS
    noise_sigma: float  # Rician noise sigma relative to grey matter at the brain centre
    # Receive coil (see coil_and_bias). Mouse: a surface loop over the head (the seed study's images are brighter
    # on top). Rat: a loop so wide that the brain sees a volume coil's flat profile (+-5 %); the published
    # RatLesNetV2 marked the dorsal cortex of synthetic rats as lesion under any surface-loop gradient tried
    # (radius 15-25 mm: top of the brain 1.15-1.8x the centre), so its training scans were evidently near-uniform.
    coil_radius_mm: float
    coil_gap_mm: float  # from the top of the brain up to the loop's plane (scalp, skull, coil housing)
    bias_strength: float  # amplitude of the smooth random log-bias field
    signal_scale: float  # stored int16 value of grey matter at the brain centre

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (column, row, slice)."""
        pixel = self.fov_mm / self.matrix
        return (pixel, pixel, self.slice_thickness_mm)


DOMAINS: dict[str, DomainSpec] = {
    "mouse": DomainSpec(
        name="mouse", matrix=256, n_slices=32, fov_mm=25.5345, slice_thickness_mm=0.5,  # 0.0997441 mm pixels
        anatomy=Anatomy(
            brain_semi_axes_mm=(4.8, 4.6, 3.0), cortex_mm=0.9, white_matter_mm=0.2, ventricle_mm=0.07,
            csf_mm=0.04, skull_mm=0.25, scalp_mm=0.45, head_scale=1.12, deform_mm=0.1, midline_shift_mm=0.3,
        ),
        contrast=t2w_contrast(RELAXATION["mouse"], *PROTOCOL["mouse"]),
        brain_center_mm=(0.0, 0.0, 5.0), noise_sigma=0.05, coil_radius_mm=12.0, coil_gap_mm=2.0, bias_strength=0.06,
        signal_scale=3000.0,
    ),
    "rat": DomainSpec(
        name="rat", matrix=256, n_slices=18, fov_mm=32.0, slice_thickness_mm=1.0,
        anatomy=Anatomy(
            brain_semi_axes_mm=(7.5, 7.6, 5.0), cortex_mm=1.8, white_matter_mm=0.35, ventricle_mm=0.1,
            csf_mm=0.06, skull_mm=0.45, scalp_mm=0.7, head_scale=1.2, deform_mm=0.18, midline_shift_mm=0.6,
        ),
        contrast=t2w_contrast(RELAXATION["rat"], *PROTOCOL["rat"]),
        brain_center_mm=(0.0, 0.0, 5.5), noise_sigma=0.03, coil_radius_mm=60.0, coil_gap_mm=3.0, bias_strength=0.04,
        signal_scale=6000.0,
    ),
}


def domain_spec(name: str, matrix: int | None = None, n_slices: int | None = None) -> DomainSpec:
    """The named domain, optionally at another matrix (same FOV) or slice count (same slab coverage)."""
    if name not in DOMAINS:
        raise ValueError(f"name: unknown domain {name!r}; use one of {', '.join(sorted(DOMAINS))}")
    spec = DOMAINS[name]
    if matrix is not None:
        if int(matrix) != matrix or matrix < 16:
            raise ValueError(f"matrix: {matrix!r} is not an integer >= 16; pass e.g. 64, 128 or 256")
        spec = replace(spec, matrix=int(matrix))
    if n_slices is not None:
        if int(n_slices) != n_slices or n_slices < 4:
            raise ValueError(f"n_slices: {n_slices!r} is not an integer >= 4; pass e.g. {spec.n_slices}")
        coverage = spec.n_slices * spec.slice_thickness_mm
        spec = replace(spec, n_slices=int(n_slices), slice_thickness_mm=coverage / int(n_slices))
    return spec
