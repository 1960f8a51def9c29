"""One scan: draw the animal, render thick slices with partial volume, then coil, bias and noise."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionseg.data.synthetic.anatomy import BRAIN_BOX, brain_parts, paint_brain, paint_head, paint_skull
from lesionseg.data.synthetic.artefacts import PSF_SIGMA_PIXELS, coil_and_bias, rician
from lesionseg.data.synthetic.domains import DomainSpec
from lesionseg.data.synthetic.lesion import LESION_SCALE, Lesion, draw_lesion, lesion_sd, lesion_signal, midline_shift
from lesionseg.data.synthetic.scene import Pose, Scene, acquisition_affine, draw_pose
from lesionseg.data.synthetic.shapes import Canvas, scaled


@dataclass(frozen=True)
class SyntheticCase:
    """One generated scan as stored: ``image`` int16 magnitudes, ``label`` uint8 lesion mask, RAS+ ``affine``."""

    case_id: str
    group: str  # "MCAo" | "sham"
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    lesion_volume_mm3: float
    brain_mask: np.ndarray  # bool, the whole brain (cerebrum, olfactory bulbs, cerebellum, brainstem)


# Partial volume across thick slices: a 2D slice integrates its slice profile, so structures that curve through a
# 0.5-1 mm slice (the cortical surface at the poles, ventricles, the lesion border) blur along the slice axis. The
# slab is sampled at SUB_SLICES positions per slice (a box profile; the real profile is about rectangular for a
# well-designed RARE refocusing pulse) and averaged; the label is the majority of those samples.
SUB_SLICES = (-0.25, 0.25)


def render(spec: DomainSpec, pose: Pose, drawn: Lesion, lesion: bool, affine: np.ndarray):
    """Noise-free signal, lesion indicator and brain indicator (float32, full grid) at one slice position."""
    scene = Scene(spec, pose, affine)
    parts = brain_parts(*scene.coords, scene.semi)
    canvas = Canvas(scene.coords[0].shape, spec.spacing[0])
    paint_head(canvas, scene, parts["union"], spec)
    paint_skull(canvas, scene, parts["union"], spec.anatomy, spec.contrast)
    box = scene.box(*(scaled(v, scene.semi) for v in BRAIN_BOX))
    x, y, z = scene.at(box)
    rel = scene.rel_at(box)
    if lesion:
        shift_mm = spec.anatomy.midline_shift_mm * (drawn.scale / LESION_SCALE[1]) ** 2  # full shift at the largest
        x = midline_shift(x, y, scene.semi, drawn, shift_mm)
    speckle = pose.speckle(rel)
    csf = paint_brain(canvas, box, (x, y, z), parts, spec, pose.texture(rel), speckle)
    signal, label, brain = (np.zeros(scene.shape, np.float32) for _ in range(3))
    if lesion:
        sd = lesion_sd((x, y, z), rel, drawn, parts["cerebrum"][box], csf, scene.semi)
        canvas.paint(sd, lesion_signal(sd, drawn, spec, rel, speckle), box)
        label[scene.window][box] = sd < 0
    signal[scene.window] = canvas.image
    brain[scene.window] = parts["union"] < 0
    return signal, label, brain


def synthesize_case(spec: DomainSpec, case_id: str, rng: np.random.Generator, lesion: bool) -> SyntheticCase:
    """One scan of ``spec``'s domain; ``lesion=False`` gives a sham (same anatomy for the same draws, empty mask).

    ``image`` is int16 as stored (grey matter near ``spec.signal_scale``), ``label`` uint8, ``affine`` RAS mm.
    """
    pose, drawn = draw_pose(rng, spec), draw_lesion(rng, spec)
    affine = acquisition_affine(spec, pose.origin)
    signal, label, brain = (np.zeros((spec.matrix, spec.matrix, spec.n_slices), np.float32) for _ in range(3))
    for offset in SUB_SLICES:
        shifted = affine.copy()
        shifted[:3, 3] += offset * affine[:3, 2]
        parts = render(spec, pose, drawn, lesion, shifted)
        for total, part in zip((signal, label, brain), parts):
            total += part / len(SUB_SLICES)
    signal = ndimage.gaussian_filter(signal, PSF_SIGMA_PIXELS, truncate=3.0)
    image = rician(signal * coil_and_bias(affine, signal.shape, spec, pose), spec.noise_sigma, rng)
    label = (label >= 0.5).astype(np.uint8)
    return SyntheticCase(
        case_id=case_id, group="MCAo" if lesion else "sham",
        image=np.clip(np.rint(image * spec.signal_scale), 0, np.iinfo(np.int16).max).astype(np.int16),
        label=label, affine=affine, lesion_volume_mm3=float(label.sum()) * float(np.prod(spec.spacing)),
        brain_mask=brain >= 0.5,
    )
