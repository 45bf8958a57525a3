"""A layered, domain-randomised head around the skull-stripped MNI152 brain (issue #15).

Built only from the distance to the brain surface, template (MNI) coordinates and random smooth
fields; no real-subject image is used. Every extra-cerebral voxel is labelled 0 (other).
Intensities are relative to white matter ≈ 1 on an MPRAGE-like T1; each subject draws its own
values from the ranges below (SynthSeg-style domain randomisation), then a smooth ±10 % texture.

Layers outward from the brain (thickness mm, T1 intensity; typical values from anatomy
textbooks and MR-physics reviews of T1 relaxation: fat and marrow have short T1 and are bright,
cortical bone has almost no MR signal, CSF has long T1 and is dark, muscle is near grey matter):

==========================  ===========  ===========================================
layer                       mm           intensity
==========================  ===========  ===========================================
CSF / dura / venous sinus   1.5-4        0.08-0.30 (CSF dark; dura and slow flow vary)
inner table (cortical bone) 1-2.5        0.02-0.10
diploë (fatty marrow)       1-4          0.60-1.00
outer table                 1-2.5        0.02-0.10
galea / temporalis muscle   0.5-2, +4-10 at the temples   0.45-0.65 (muscle ≈ GM)
subcutaneous fat            2-6          1.00-1.40 (fat brighter than WM)
skin                        1-2          0.55-0.85
==========================  ===========  ===========================================

Below the brain (MNI z < 0), from the face to the back of the neck: a region of randomly placed soft-tissue,
fat and air/bone blobs (GM-like 0.40-0.70, WM-like 0.85-1.30, dark 0.02-0.12), and two orbits
centred near MNI (±32, 48, -30) (radius 11-14 mm, the eyeball ~24 mm across): dark vitreous
(long T1, 0.05-0.18) inside bright orbital fat (1.0-1.3).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: (name, thickness range mm, intensity range) of the layers outward from the brain surface
LAYERS: tuple[tuple[str, tuple[float, float], tuple[float, float]], ...] = (
    ("csf_dura", (1.5, 4.0), (0.08, 0.30)),
    ("inner_table", (1.0, 2.5), (0.02, 0.10)),
    ("diploe", (1.0, 4.0), (0.60, 1.00)),
    ("outer_table", (1.0, 2.5), (0.02, 0.10)),
    ("muscle", (0.5, 2.0), (0.45, 0.65)),
    ("fat", (2.0, 6.0), (1.00, 1.40)),
    ("skin", (1.0, 2.0), (0.55, 0.85)),
)
#: extra temporalis thickness (mm) at the temples
TEMPORALIS_MM = (4.0, 10.0)
#: intensity ranges of the face/neck blob classes: soft tissue, fat, air or bone
FACE_CLASSES = ((0.40, 0.70), (0.85, 1.30), (0.02, 0.12))


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, cells: int = 12) -> np.ndarray:
    """A random smooth field in [-1, 1] of ``shape`` (upsampled coarse noise, ~``cells`` voxels)."""
    coarse = tuple(max(s // cells, 2) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), 0.8)
    field = ndimage.zoom(field, np.array(shape) / np.array(coarse), order=1)
    field = field[: shape[0], : shape[1], : shape[2]]
    return (field / max(float(np.abs(field).max()), 1e-6)).astype(np.float32)


def world_coordinates(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World (mm) coordinates ``(3, X, Y, Z)`` of every voxel of a grid."""
    grid = np.indices(shape, dtype=np.float32)
    return np.einsum("ij,j...->i...", affine[:3, :3], grid) + affine[:3, 3, None, None, None]


def _temple_weight(world: np.ndarray) -> np.ndarray:
    """1 over the temporal fossae (lateral, mid-height, mid-front), fading to 0 elsewhere."""
    x, y, z = world
    lateral = np.clip((np.abs(x) - 35.0) / 20.0, 0.0, 1.0)
    return lateral * np.exp(-(((z + 5.0) / 25.0) ** 2) - ((y + 5.0) / 35.0) ** 2)


def _shell_image(
    distance: np.ndarray, world: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Intensity of the layered shell at each voxel ``(X, Y, Z)`` and its outer edge (mm)."""
    image = np.zeros(distance.shape, np.float32)
    inner: np.ndarray = np.zeros(distance.shape, np.float32)
    temples = _temple_weight(world)
    for name, (t_low, t_high), (i_low, i_high) in LAYERS:
        thickness = rng.uniform(t_low, t_high) * (1.0 + 0.3 * smooth_field(distance.shape, rng))
        if name == "muscle":
            thickness = thickness + rng.uniform(*TEMPORALIS_MM) * temples
        outer = inner + thickness
        image[(distance > inner) & (distance <= outer)] = rng.uniform(i_low, i_high)
        inner = outer
    return image, inner


def _face_region(world: np.ndarray, distance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean face/neck region: an ellipsoid below the brain, from the face to the back of the
    neck (the neck muscles under the cerebellum look like grey matter on T1), off the brain."""
    x, y, z = world
    centre_y, centre_z = rng.uniform(-15.0, 10.0), rng.uniform(-85.0, -70.0)
    inside = (x / rng.uniform(60, 72)) ** 2 + ((y - centre_y) / rng.uniform(90, 105)) ** 2
    inside = inside + ((z - centre_z) / rng.uniform(55, 70)) ** 2
    return (inside <= 1.0) & (z < 0.0) & (distance > 0)


def _face_image(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Blobs of soft tissue, fat and air/bone: a smooth random field cut into three classes."""
    choice = np.stack([smooth_field(shape, rng, cells=6) for _ in FACE_CLASSES]).argmax(axis=0)
    image = np.zeros(shape, np.float32)
    for index, (low, high) in enumerate(FACE_CLASSES):
        image[choice == index] = rng.uniform(low, high)
    return image


def _orbits(
    world: np.ndarray, image: np.ndarray, brain: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Paint two orbits into ``image`` in place: dark vitreous inside bright fat; their mask."""
    mask = np.zeros(brain.shape, bool)
    for side in (-1.0, 1.0):
        centre = np.array([side * rng.uniform(28, 36), rng.uniform(42, 54), rng.uniform(-34, -24)])
        radius = rng.uniform(11.0, 14.0)
        r = np.sqrt(((world - centre[:, None, None, None]) ** 2).sum(axis=0))
        fat, eye = (r <= radius) & ~brain, (r <= 0.7 * radius) & ~brain
        image[fat] = rng.uniform(1.0, 1.3)
        image[eye] = rng.uniform(0.05, 0.18)
        mask |= fat
    return mask


def synthesise_head(
    t1: np.ndarray,
    brain: np.ndarray,
    distance_mm: np.ndarray,
    affine: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The skull-stripped template T1 inside a randomised head (see the module docstring).

    Args:
        t1: skull-stripped T1 ``(X, Y, Z)``, white matter about 1.
        brain: boolean brain mask, same shape.
        distance_mm: distance (mm) of every voxel from the brain, same shape.
        affine: 4×4 voxel-to-MNI (mm) affine of the grid.
        rng: random generator (all thicknesses, intensities and shapes are drawn from it).

    Returns:
        ``(t1_with_head, head_mask)``, both ``(X, Y, Z)``; the brain's voxels are unchanged
        apart from the partial-volume blur (sigma 0.6 voxel) shared by every edge.
    """
    world = world_coordinates(t1.shape, affine)
    shell, outer_edge = _shell_image(distance_mm, world, rng)
    shell_mask = (distance_mm > 0) & (distance_mm <= outer_edge)
    face = _face_region(world, distance_mm, rng) & ~shell_mask
    image: np.ndarray = np.where(shell_mask, shell, 0.0).astype(np.float32)
    image[face] = _face_image(t1.shape, rng)[face]
    orbits = _orbits(world, image, brain, rng)
    texture = 1.0 + 0.1 * smooth_field(t1.shape, rng, cells=4)
    image = image * texture
    image[brain] = t1[brain]
    head = brain | shell_mask | face | orbits
    image = np.where(head, image, 0.0)
    return ndimage.gaussian_filter(image, 0.6).astype(np.float32), head
