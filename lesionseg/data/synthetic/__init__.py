"""Synthetic rat and mouse T2-weighted MCAo MRI, written the way a scanner writes it.

Every case is a head, not a skull-stripped brain: scalp, fat, textured jaw muscles, glands, eyes and a dark skull
around a brain with layered cortex, a white-matter band, striatum crossed by fibre bundles, thalamus,
hippocampus, ventricles, flow voids of the large vessels, olfactory bulbs and cerebellum. The anatomy is made
of smooth analytic shapes in millimetres (ellipsoids deformed by low-frequency random fields), so a case looks
the same whatever the matrix size. Tissue signals come from the T2w RARE signal equation with published
relaxation times at 9.4 T (rat) and 7 T (mouse) (:data:`RELAXATION`, :func:`t2w_contrast`). An MCAo lesion is
one hyperintense region (core and oedematous rim) in one hemisphere's lateral cortex and striatum; its swelling
pushes the midline. Each thick slice averages sub-slice samples (partial volume), then a receive-coil profile
(Biot-Savart loop), a smooth bias field and Rician noise finish the image. Arrays are stored as acquired
(coronal slices, thick-slice axis last) with an affine that maps them to RAS+ millimetres. Sources and what
the published RatLesNetV2 makes of the result: ``docs/synthetic.md`` and ``benchmarks/results_realism.md``.

The generator is a package with one module per layer: :mod:`.protocol` (field, relaxation, TE/TR, the T2w signal),
:mod:`.domains` (the rat and mouse cohorts), :mod:`.anatomy` (head and brain shapes), :mod:`.scene` (pose and
grid), :mod:`.lesion` (territory, size, signal), :mod:`.artefacts` (coil, bias, blur, noise), :mod:`.render`
(one scan) and :mod:`.dataset` (a cohort on disk).
"""
from lesionseg.data.synthetic.anatomy import Anatomy
from lesionseg.data.synthetic.dataset import generate_cases, synthesize_dataset
from lesionseg.data.synthetic.domains import DOMAINS, DomainSpec, domain_spec
from lesionseg.data.synthetic.protocol import PROTOCOL, RELAXATION, Contrast, Relaxation, rare_signal, t2w_contrast
from lesionseg.data.synthetic.render import SyntheticCase, synthesize_case

__all__ = [
    "DOMAINS", "PROTOCOL", "RELAXATION", "Anatomy", "Contrast", "DomainSpec", "Relaxation", "SyntheticCase",
    "domain_spec", "generate_cases", "rare_signal", "synthesize_case", "synthesize_dataset", "t2w_contrast",
]
