"""One scan: draw the animal, render thick slices with partial volume, then coil, bias and noise."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lesionseg.data.synthetic.anatomy import (BRAIN_BOX, basal_shell_mm, brain_parts, paint_brain, paint_head,
                                              paint_skull)
from lesionseg.data.synthetic.artefacts import (
    PETECHIA_SIGNAL, PSF_SIGMA_PIXELS, coil_and_bias, draw_petechiae, petechiae_sd, rician,
)
from lesionseg.data.synthetic.domains import DomainSpec
from lesionseg.data.synthetic.haemorrhage import (
    SUBARACHNOID_BLOOD_SIGNAL, SubarachnoidBlood, draw_subarachnoid_blood, subarachnoid_blood_sd,
)
from lesionseg.data.synthetic.lesion import (
    LESION_SCALE, RIM_FRACTION, Lesion, draw_lesion, lesion_sd, lesion_signal, midline_shift,
)
from lesionseg.data.synthetic.rater import draw_rater, rater_label
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
    ventricle_mask: np.ndarray | None = None  # bool, lateral and third ventricles and the aqueduct
    # bool, for measuring only (benchmarks/world.py): neocortex and striatum as atlas labels would hold them
    neocortex_mask: np.ndarray | None = None
    striatum_mask: np.ndarray | None = None
    forebrain_mask: np.ndarray | None = None  # cerebrum and diencephalon, without the bulbs and the hindbrain
    info: dict = field(default_factory=dict)  # the draws behind the scan: time point, territory, protocol ...


@dataclass(frozen=True)
class _Animal:
    """Everything drawn for one animal before rendering."""

    pose: Pose
    lesion: Lesion
    petechiae: np.ndarray
    rater_mm: float
    subarachnoid_blood: SubarachnoidBlood | None = None


# Partial volume across thick slices: a 2D slice integrates its slice profile, so structures that curve through a
# 0.5-1 mm slice (the cortical surface at the poles, ventricles, the lesion border) blur along the slice axis. The
# slab is sampled at SUB_SLICES positions per slice (a box profile; the real profile is about rectangular for a
# well-designed RARE refocusing pulse) and averaged; the label is the majority of those samples.
SUB_SLICES = (-0.25, 0.25)


def render(spec: DomainSpec, animal: _Animal, lesion: bool, affine: np.ndarray):
    """Noise-free signal and lesion, brain, ventricle, neocortex, striatum and forebrain indicators (float32, full
    grid) at one slice position."""
    pose, drawn = animal.pose, animal.lesion
    scene = Scene(spec, pose, affine)
    parts = brain_parts(*scene.coords, scene.semi, spec.anatomy.sagittal_groove_mm)
    canvas = Canvas(scene.coords[0].shape, spec.spacing[0])
    paint_head(canvas, scene, parts["union"], spec, side=drawn.side)
    paint_skull(canvas, scene, parts["union"], spec.anatomy, spec.contrast)
    box = scene.box(*(scaled(v, scene.semi) for v in BRAIN_BOX))
    x, y, z = scene.at(box)
    rel = scene.rel_at(box)
    if lesion:
        # full shift at the largest lesions, scaled by the time point's swelling (negative: atrophy)
        shift_mm = spec.anatomy.midline_shift_mm * (drawn.scale / LESION_SCALE[1]) ** 2 * drawn.swelling
        x = midline_shift(x, y, scene.semi, drawn, shift_mm)
    speckle = pose.speckle(rel)
    regions = paint_brain(canvas, box, (x, y, z), parts, spec, pose.texture(rel), speckle, pose.ventricles)
    if lesion and animal.subarachnoid_blood is not None:  # in the cisterns: the unshifted frame
        blood = subarachnoid_blood_sd(*scene.at(box), animal.subarachnoid_blood, drawn.side, parts["union"][box],
                                      scene.semi, basal_shell_mm(spec.anatomy))
        canvas.paint(blood, SUBARACHNOID_BLOOD_SIGNAL, box)
    signal, label, brain, ventricle, neocortex, striatum, forebrain = (np.zeros(scene.shape, np.float32)
                                                                       for _ in range(7))
    if lesion:
        sd = lesion_sd((x, y, z), rel, drawn, parts["cerebrum"][box], regions.csf, scene.semi)
        canvas.paint(sd, lesion_signal(sd, drawn, spec, rel, speckle), box)
        spots = petechiae_sd(x, y, z, animal.petechiae, scaled(drawn.center, scene.semi),
                             scaled(drawn.semi, scene.semi), drawn.side)
        if spots is not None:
            canvas.paint(np.maximum(spots, sd), PETECHIA_SIGNAL, box)
        label[scene.window][box] = rater_label(sd, animal.rater_mm)
    signal[scene.window] = canvas.image
    brain[scene.window] = parts["union"] < 0
    for indicator, region in ((ventricle, regions.ventricles), (neocortex, regions.neocortex),
                              (striatum, regions.striatum), (forebrain, regions.forebrain)):
        indicator[scene.window][box] = region < 0
    return signal, label, brain, ventricle, neocortex, striatum, forebrain


def draw_animal(rng: np.random.Generator, spec: DomainSpec) -> _Animal:
    """Pose and anatomy, lesion (drawn for shams too: their operated side), petechiae and the rater, in that order;
    subarachnoid blood from a child stream (``rng.spawn``), so adding it left every other draw as it was."""
    later = rng.spawn(1)[0]
    pose, drawn = draw_pose(rng, spec), draw_lesion(rng, spec)
    petechiae = draw_petechiae(rng, spec.petechiae_fraction)
    rater_mm = draw_rater(rng, spec.rater, RIM_FRACTION * spec.anatomy.brain_semi_axes_mm[0])
    blood = draw_subarachnoid_blood(later, spec.subarachnoid_blood_fraction)
    return _Animal(pose, drawn, petechiae, rater_mm, blood)


def synthesize_case(spec: DomainSpec, case_id: str, rng: np.random.Generator, lesion: bool) -> SyntheticCase:
    """One scan of ``spec``'s domain; ``lesion=False`` gives a sham (same anatomy for the same draws, empty mask).

    ``image`` is int16 as stored (grey matter near ``spec.signal_scale``), ``label`` uint8, ``affine`` RAS mm.
    """
    animal = draw_animal(rng, spec)
    affine = acquisition_affine(spec, animal.pose.origin)
    totals = [np.zeros((spec.matrix, spec.matrix, spec.n_slices), np.float32) for _ in range(7)]
    for offset in SUB_SLICES:
        shifted = affine.copy()
        shifted[:3, 3] += offset * affine[:3, 2]
        for total, part in zip(totals, render(spec, animal, lesion, shifted)):
            total += part / len(SUB_SLICES)
    signal, label, brain, ventricle, neocortex, striatum, forebrain = totals
    signal = ndimage.gaussian_filter(signal, PSF_SIGMA_PIXELS, truncate=3.0)
    image = rician(signal * coil_and_bias(affine, signal.shape, spec, animal.pose), spec.noise_sigma, rng)
    brain_mask = brain >= 0.5
    label = ((label >= 0.5) & brain_mask).astype(np.uint8)
    return SyntheticCase(
        case_id=case_id, group="MCAo" if lesion else "sham",
        image=np.clip(np.rint(image * spec.signal_scale), 0, np.iinfo(np.int16).max).astype(np.int16),
        label=label, affine=affine, lesion_volume_mm3=float(label.sum()) * float(np.prod(spec.spacing)),
        brain_mask=brain_mask, ventricle_mask=ventricle >= 0.5, neocortex_mask=neocortex >= 0.5,
        striatum_mask=striatum >= 0.5, forebrain_mask=forebrain >= 0.5, info=_info(spec, animal, lesion),
    )


def _info(spec: DomainSpec, animal: _Animal, lesion: bool) -> dict:
    drawn, pose = animal.lesion, animal.pose
    return {
        "field_t": spec.field_t, "te_ms": spec.te_ms, "tr_s": spec.tr_s, "snr": round(1 / spec.noise_sigma, 2),
        "coil_radius_mm": spec.coil_radius_mm, "side": drawn.side, "muscle_oedema": pose.oedema > 0,
        "ventricle_volume": pose.ventricles, "time_point": drawn.time_point if lesion else None,
        "territory": drawn.territory if lesion else None, "occlusion_min": drawn.occlusion_min if lesion else None,
        "lesion_contrast": drawn.contrast if lesion else None, "petechiae": int(len(animal.petechiae)) if lesion else 0,
        "rater_mm": animal.rater_mm if lesion else None,
        "subarachnoid_blood": lesion and animal.subarachnoid_blood is not None, "substrain": spec.substrain,
    }
