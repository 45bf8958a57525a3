"""Open sulci in the MNI152 template: the CSF an average of 152 brains has blurred away (issue #15).

The MNI152 2009 template is the mean of 152 registered brains. Averaging fills the sulci with
partial-volume grey matter, so its cortex looks 4-6 mm thick and almost no CSF lies between the
banks of a sulcus; one person's scan shows a 2-3 mm ribbon with dark CSF in the sulci and around
the cortex. A model trained on the template alone learns "next to the cortex there is grey
matter" and labels real sulcal CSF as grey matter.

:func:`open_sulci` draws a cortical thickness per subject (:data:`THICKNESS_MM`, varying smoothly over the
brain) and turns cortical grey matter farther than that from white matter into CSF — in a
sulcus the voxels farthest from the white matter of both banks lie on its midline, so this opens
the sulcus along its fundus, and thins the ribbon at the outer surface. Deep grey matter
(basal ganglia, thalamus), the medial temporal lobe and the cerebellum are left alone: they are
far from white matter without being sulci. The intensity becomes CSF's (dark on T1) and the
label follows (0, other). Only the template and anatomical facts are used: no real-subject image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from voxelflow.demo.head import smooth_field, world_coordinates

#: range of the distance (mm, voxel centre to white-matter voxel centre) beyond which cortex
#: becomes CSF. Adult cortex is 2-3 mm thick (Fischl & Dale, PNAS 2000); on the 2 mm template
#: grid the first grey-matter voxel is already 2 mm from white matter, so 3-5 mm keeps one to two
#: voxels of ribbon and gives grey/white volume ratios from about 1.1 to the template's 1.5
#: (adults: 1.1-1.5, falling with age)
THICKNESS_MM = (3.0, 5.0)
#: T1 intensity of CSF in the template's units (white matter ≈ 0.85, grey matter ≈ 0.67)
CSF_INTENSITY = (0.12, 0.28)
#: fraction of subjects whose sulci are opened (the rest keep the template's thick cortex)
OPEN_FRACTION = 0.75


@dataclass(frozen=True)
class SulcusMap:
    """What :func:`open_sulci` needs of a template, computed once.

    Attributes:
        distance_to_wm_mm: distance (mm) of every voxel from white matter ``(X, Y, Z)``.
        cortex: boolean mask of cortical grey matter that may become CSF.
        spacing_mm: the template's voxel size.
    """

    distance_to_wm_mm: np.ndarray
    cortex: np.ndarray
    spacing_mm: float


def _outside_ellipsoid(
    world: np.ndarray, centre: tuple[float, float, float], radii: tuple[float, float, float]
) -> np.ndarray:
    inside = sum(((world[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return np.asarray(inside > 1.0)


def sulcus_map(template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> SulcusMap:
    """The distance to white matter and the cortical mask of ``(t1, gm, wm, affine)`` (MNI mm)."""
    t1, gm, wm, affine = template
    spacing = float(abs(affine[0, 0]))
    white = (wm > 0.5) & (wm > gm)
    distance = ndimage.distance_transform_edt(~white) * spacing
    world = world_coordinates(t1.shape, affine)
    cortex = (gm > 0.5) & (t1 > 0.05)
    cortex &= _outside_ellipsoid(
        world, (0.0, -8.0, 4.0), (34.0, 36.0, 22.0)
    )  # basal ganglia, thalamus
    for side in (-1.0, 1.0):  # hippocampus and amygdala
        cortex &= _outside_ellipsoid(world, (side * 26.0, -18.0, -16.0), (13.0, 26.0, 12.0))
    _, y, z = world
    cortex &= ~((z < -18.0) & (y < -34.0))  # cerebellum and brainstem
    return SulcusMap(distance.astype(np.float32), cortex, spacing)


def open_sulci(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    sulci: SulcusMap,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One subject's template with sulcal CSF: ``(t1, gm, wm, affine)``, arrays copied.

    Cortical voxels farther than the drawn thickness from white matter fade to CSF over one
    voxel (partial volume); their grey-matter probability falls by the same fraction.
    """
    t1, gm, wm, affine = template
    if rng.uniform() >= OPEN_FRACTION:
        return template
    thickness = rng.uniform(*THICKNESS_MM) * (1.0 + 0.15 * smooth_field(t1.shape, rng, cells=10))
    fraction = np.clip((sulci.distance_to_wm_mm - thickness) / sulci.spacing_mm + 0.5, 0.0, 1.0)
    fraction = np.where(sulci.cortex, fraction, 0.0).astype(np.float32)
    csf = rng.uniform(*CSF_INTENSITY)
    keep = 1.0 - fraction
    return (t1 * keep + csf * fraction).astype(np.float32), gm * keep, wm * keep, affine
