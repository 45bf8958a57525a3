"""What real T1 scans vary, applied to the MNI152 template so one anatomy looks like many scans.

The template nilearn ships is skull-stripped; real scans are not. :mod:`voxelflow.demo.head`
synthesises a layered, randomised head around the brain (CSF rim, bone, marrow, muscle, fat,
skin, face and neck, orbits), so a model learns that bright tissue outside the brain is not grey
matter. :class:`ScanVariant` draws the
rest per subject: skull on or stripped, an exactly-zero or a noisy background, a tight or wide
field of view, a contrast change (gamma), the head's rotation and position, and the acquisition
resolution (isotropic 1.5-3 mm or thick slices), which is simulated by blurring to the acquired
resolution before sampling the stored grid.

Every variant is label-preserving: the labels (0 other, 1 grey matter, 2 white matter) come from
the template's probability maps under the same deformation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def distance_from_brain(brain: np.ndarray, spacing_mm: float = 1.0) -> np.ndarray:
    """Distance (mm) of every voxel outside ``brain`` from it (0 inside); computed once."""
    return (ndimage.distance_transform_edt(~brain) * spacing_mm).astype(np.float32)


@dataclass(frozen=True)
class ScanVariant:
    """One subject's acquisition: what to apply to a deformed template.

    Attributes:
        skull: keep the synthetic head (else skull-stripped).
        zero_background: background exactly zero (masked or stripped scans) instead of noise.
        field_of_view_mm: margin kept around the head (tight: 5, wide: 30).
        gamma: contrast change ``I ** gamma``.
        rotation_deg: rotation about each axis.
        shift_mm: translation of the head.
        acquired_mm: the resolution the scan was acquired at (blur before sampling).
    """

    skull: bool
    zero_background: bool
    field_of_view_mm: float
    gamma: float
    rotation_deg: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    acquired_mm: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> ScanVariant:
        """A random variant: half with skull, a third zero background, a third thick slices."""
        if rng.uniform() < 0.35:
            in_plane = float(rng.uniform(1.0, 1.5))
            acquired = [in_plane, in_plane, float(rng.uniform(3.5, 5.0))]
            rng.shuffle(acquired)  # the thick axis may be any of the three
        else:
            size = float(rng.uniform(1.0, 3.0))
            acquired = [size, size, size]
        return cls(
            skull=bool(rng.uniform() < 0.5),
            zero_background=bool(rng.uniform() < 0.35),
            field_of_view_mm=float(rng.choice([5.0, 15.0, 30.0])),
            gamma=float(np.exp(rng.uniform(-0.3, 0.3))),
            rotation_deg=tuple(float(a) for a in rng.uniform(-12, 12, 3)),  # type: ignore[arg-type]
            shift_mm=tuple(float(s) for s in rng.uniform(-8, 8, 3)),  # type: ignore[arg-type]
            acquired_mm=(acquired[0], acquired[1], acquired[2]),
        )

    def describe(self) -> str:
        """One line for the data table."""
        return (
            f"{'skull' if self.skull else 'stripped'}, "
            f"{'zero' if self.zero_background else 'noisy'} background, "
            f"fov +{self.field_of_view_mm:.0f} mm, gamma {self.gamma:.2f}, acquired "
            + "×".join(f"{a:.1f}" for a in self.acquired_mm)
            + " mm"
        )


def rotation_matrix(degrees: tuple[float, float, float]) -> np.ndarray:
    """3×3 rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def blur_to_acquired(
    image: np.ndarray, acquired_mm: tuple[float, ...], spacing_mm: float
) -> np.ndarray:
    """Gaussian blur matching a slice profile of ``acquired_mm`` on a ``spacing_mm`` grid.

    The FWHM of the acquisition's point spread is its voxel size; sigma = FWHM / 2.355.
    """
    sigma = [
        max(a * a - spacing_mm * spacing_mm, 0.0) ** 0.5 / 2.355 / spacing_mm for a in acquired_mm
    ]
    return ndimage.gaussian_filter(image, sigma) if any(s > 0.05 for s in sigma) else image


#: grey/white and CSF/white T1 intensity ratios drawn per subject by :func:`remap_tissue_contrast`.
#: T1-weighted sequences and field strengths give grey/white ratios of about 0.7-0.85
#: (MPRAGE, SPGR, 1.5-3 T); CSF's ratio spans partial-volumed sulci to pure ventricular CSF.
GREY_WHITE_RATIO = (0.68, 0.88)
CSF_WHITE_RATIO = (0.20, 0.60)


def tissue_means(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[float, float, float]:
    """Mean T1 of CSF, grey and white matter in ``(t1, gm, wm, affine)``, weighted by probability."""
    t1, gm, wm, _ = template
    brain = t1 > 0.05
    weights = (np.clip(1.0 - gm - wm, 0.0, 1.0)[brain], gm[brain], wm[brain])
    values = t1[brain]
    csf, grey, white = (float((w * values).sum() / max(float(w.sum()), 1e-6)) for w in weights)
    return csf, grey, white


def remap_tissue_contrast(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    means: tuple[float, float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The brain's T1 under a random monotone remap of the tissue contrasts; maps unchanged.

    A piecewise-linear map through ``0 → 0``, CSF mean → ``c``, grey mean → ``g``, white mean
    kept, identity slope above it, with ``g / white`` and ``c / white`` drawn from
    :data:`GREY_WHITE_RATIO` and :data:`CSF_WHITE_RATIO`. One template's contrast would teach
    a model one fixed intensity threshold between grey and white matter; scans differ, and a
    classical segmenter (k-means, Atropos) finds each scan's own. Partial-volume voxels move
    with their neighbours on the map, so borders stay where the maps put them.
    """
    t1, gm, wm, affine = template
    csf, grey, white = means
    g = white * rng.uniform(*GREY_WHITE_RATIO)
    c = min(white * rng.uniform(*CSF_WHITE_RATIO), 0.9 * g)
    source = np.array([0.0, csf, grey, white, white + 1.0])
    target = np.array([0.0, c, g, white, white + 1.0])
    remapped = np.interp(t1, source, target).astype(np.float32)
    return np.where(t1 > 0, remapped, t1).astype(np.float32), gm, wm, affine
