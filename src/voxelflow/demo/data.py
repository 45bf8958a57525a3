"""Demo dataset: subjects made from the real MNI152 2009 T1 template that nilearn ships.

Every subject is the *same anatomy* (one template) under a random smooth deformation, a
multiplicative bias field, an intensity scaling and Rician-like noise, resampled onto a coarse
grid (3 mm by default, so the demo trains on a laptop CPU in minutes). The segmentation demo's
subjects (:func:`make_demo_dataset`) also vary what real scans vary (:mod:`voxelflow.demo.variation`):
a synthetic skull and scalp or none, a zero or noisy background, the field of view, contrast,
head rotation and position, and the acquisition resolution. Labels are tissue classes
from the template's grey- and white-matter probability maps made consistent with its own T1
intensities (:func:`tissue_posteriors`): 0 = other (CSF, skull, air), 1 = grey matter,
2 = white matter. Because all subjects derive from one anatomy, the demo shows
the pipeline works; it is not evidence of generalisation to other brains.

When nilearn is absent, seeded synthetic phantoms are used instead (and the demo says so).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from voxelflow.demo.head import synthesise_head
from voxelflow.demo.sulci import open_sulci, sulcus_map
from voxelflow.demo.variation import (
    ScanVariant,
    blur_to_acquired,
    distance_from_brain,
    remap_tissue_contrast,
    rotation_matrix,
    tissue_means,
)
from voxelflow.synthetic import make_phantom

log = logging.getLogger(__name__)

TISSUE_NAMES = {0: "other", 1: "grey_matter", 2: "white_matter"}


@dataclass(frozen=True)
class DemoData:
    """Where the generated demo dataset lives and what it is."""

    train_csv: Path
    test_csv: Path
    source: str  # "mni152" or "phantom"
    label_names: dict[int, str]


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The MNI152 2009 T1 (normalised to [0, 1]), GM and WM maps and their affine, or None."""
    try:
        from nilearn import datasets
    except ImportError:
        return None
    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    data = np.asarray(t1.get_fdata(), dtype=np.float32)
    data /= max(float(data.max()), 1e-6)
    return (
        data,
        np.asarray(gm.get_fdata(), dtype=np.float32),
        np.asarray(wm.get_fdata(), dtype=np.float32),
        t1.affine,
    )


def tissue_posteriors(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], iterations: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The template with GM/WM maps replaced by tissue posteriors given its own T1 intensities.

    A three-class Gaussian mixture (CSF, GM, WM) on the template's brain voxels, fitted by EM
    with the template's probability maps as spatial priors (the prior-based classification of
    SPM and ANTs Atropos). The population maps alone disagree with the template's own intensities
    at many GM/WM borders, so a model trained on their argmax learns borders an image does not
    show; the posteriors keep the maps' anatomy and follow the intensities.

    Returns:
        ``(t1, gm_posterior, wm_posterior, affine)``; outside the brain both posteriors are 0.
    """
    t1, gm, wm, affine = template
    brain = t1 > 0.05
    priors = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm])[:, brain].astype(np.float64)
    values = t1[brain].astype(np.float64)
    posterior = priors
    for _ in range(iterations):
        weights = posterior / np.clip(posterior.sum(axis=0, keepdims=True), 1e-12, None)
        mean = (weights * values).sum(axis=1) / weights.sum(axis=1)
        std = np.sqrt((weights * (values - mean[:, None]) ** 2).sum(axis=1) / weights.sum(axis=1))
        likelihood = np.exp(-0.5 * ((values - mean[:, None]) / std[:, None]) ** 2) / std[:, None]
        posterior = priors * likelihood
    posterior /= np.clip(posterior.sum(axis=0, keepdims=True), 1e-12, None)
    maps = []
    for tissue in (1, 2):
        volume = np.zeros(t1.shape, np.float32)
        volume[brain] = posterior[tissue]
        maps.append(volume)
    return t1, maps[0], maps[1], affine


def _output_grid(
    template_affine: np.ndarray, shape: tuple[int, ...], spacing: float
) -> tuple[np.ndarray, tuple[int, ...]]:
    """An axis-aligned RAS grid at ``spacing`` mm covering the head of the template."""
    extent = np.array(shape) * np.abs(np.diag(template_affine)[:3])
    out_shape = tuple(int(e // spacing) for e in extent)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = template_affine[:3, 3]
    return affine, out_shape


def _smooth_field(
    shape: tuple[int, ...], rng: np.random.Generator, *, amplitude: float, sigma: float
) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field * (amplitude / max(float(np.abs(field).max()), 1e-6))


def warp_template(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    spacing: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The template's T1, GM and WM maps under one random smooth deformation, on a ``spacing`` grid.

    Returns:
        ``{"t1", "gm", "wm"}`` arrays ``(X, Y, Z)`` (T1 in [0, 1], probabilities unclipped) and the
        4×4 affine of the grid.
    """
    t1, gm, wm, t_affine = template
    affine, out_shape = _output_grid(t_affine, t1.shape, spacing)
    grid = np.stack(
        np.meshgrid(*[np.arange(s, dtype=np.float32) for s in out_shape], indexing="ij")
    )
    # World coordinates of the output grid, displaced by a smooth random field (mm).
    world = np.einsum("ij,j...->i...", affine[:3, :3], grid) + affine[:3, 3, None, None, None]
    coarse = tuple(max(s // 4, 2) for s in out_shape)
    for axis in range(3):
        disp = _smooth_field(coarse, rng, amplitude=4.0, sigma=1.5)
        world[axis] += ndimage.zoom(disp, np.array(out_shape) / np.array(coarse), order=1)[
            : out_shape[0], : out_shape[1], : out_shape[2]
        ]
    inv = np.linalg.inv(t_affine)
    vox = np.einsum("ij,j...->i...", inv[:3, :3], world) + inv[:3, 3, None, None, None]
    maps = {
        name: ndimage.map_coordinates(volume, vox, order=1, mode="constant")
        for name, volume in (("t1", t1), ("gm", gm), ("wm", wm))
    }
    return maps, affine


def scanner_effects(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative bias field, a global intensity scale (×1000 ± 25 %), Rician noise."""
    shape = image.shape
    bias = np.exp(
        _smooth_field(tuple(max(s // 8, 2) for s in shape), rng, amplitude=0.25, sigma=1.0)
    )
    bias = ndimage.zoom(bias, np.array(shape) / np.array(bias.shape), order=1)[
        : shape[0], : shape[1], : shape[2]
    ]
    image = image * bias * rng.uniform(0.8, 1.25) * 1000.0
    noise = rng.normal(0, 25.0, (2, *shape))
    return np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)  # Rician


def _make_subject(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    spacing: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deformed, biased, noisy T1, its tissue label (0 other, 1 GM, 2 WM) and affine."""
    maps, affine = warp_template(template, rng, spacing)
    label = np.argmax(np.stack([1.0 - maps["gm"] - maps["wm"], maps["gm"], maps["wm"]]), axis=0)
    return scanner_effects(maps["t1"], rng), label.astype(np.uint8), affine


def coarse_template(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], factor: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The template on a ``factor``-times coarser grid (block means): demo subjects stored at
    3 mm or coarser do not need the 1 mm template, and it is 8× faster to vary."""
    t1, gm, wm, affine = template

    def block_mean(volume: np.ndarray) -> np.ndarray:
        shape = [n // factor * factor for n in volume.shape]
        cut = volume[: shape[0], : shape[1], : shape[2]]
        return cut.reshape(shape[0] // factor, factor, shape[1] // factor, factor, -1, factor).mean(
            axis=(1, 3, 5)
        )

    coarse = affine.copy()
    coarse[:3, :3] = affine[:3, :3] * factor
    coarse[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    return block_mean(t1), block_mean(gm), block_mean(wm), coarse


#: peak displacement (mm) of the tissue demo's smooth deformation: larger than the other demos'
#: 4 mm so that a model of one template's folding cannot simply memorise it
ANATOMY_WARP_MM = 6.0
#: peak displacement (mm) and control-point spacing (mm) of the fine deformation on top of it
FINE_WARP_MM = 1.5
FINE_WARP_CELL_MM = 6.0

#: room (mm) added around the template grid for the synthetic head: (low, high) per RAS axis. The
#: template's grid ends 20 mm below the cerebellum; real scans with skull carry the face and neck.
HEAD_ROOM_MM = ((12.0, 12.0), (12.0, 24.0), (60.0, 12.0))


def pad_template(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    room_mm: tuple[tuple[float, float], ...] = HEAD_ROOM_MM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The template's maps with zeros added around them (``room_mm``), and the grid's affine.

    The template is RAS with a diagonal affine, so voxel axis ``i`` is RAS axis ``i``.
    """
    t1, gm, wm, affine = template
    spacing = np.abs(np.diag(affine)[:3])
    widths = [(round(float(lo / s)), round(float(hi / s))) for (lo, hi), s in zip(room_mm, spacing)]
    padded = affine.copy()
    padded[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.array([lo for lo, _ in widths], float)
    maps = tuple(np.pad(volume, widths) for volume in (t1, gm, wm))
    return maps[0], maps[1], maps[2], padded


def make_varied_subject(
    template: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    distance_mm: np.ndarray,
    rng: np.random.Generator,
    spacing: float,
    variant: ScanVariant,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A T1 as one scanner and one head position would give it: see :mod:`voxelflow.demo.variation`.

    The deformation, bias field and noise of :func:`warp_template` / :func:`scanner_effects`,
    plus the variant's skull, background, field of view, contrast, rotation, position and
    acquisition resolution. Labels: 0 other (CSF, skull, scalp, air), 1 grey, 2 white matter.

    Returns:
        ``(image, label, affine)`` on a ``spacing`` mm grid cut to the head plus the field of view.
    """
    t1, gm, wm, t_affine = template
    brain = t1 > 0
    if variant.skull:
        t1, head = synthesise_head(t1, brain, distance_mm, t_affine, rng)
    else:
        head = brain
    t1 = np.clip(t1, 0.0, None) ** variant.gamma
    t1 = blur_to_acquired(t1, variant.acquired_mm, float(abs(t_affine[0, 0])))
    # the stored grid: the head's bounding box plus the field of view, rotated and shifted
    box = np.argwhere(head)
    low = t_affine[:3, :3] @ box.min(axis=0) + t_affine[:3, 3] - variant.field_of_view_mm
    high = t_affine[:3, :3] @ box.max(axis=0) + t_affine[:3, 3] + variant.field_of_view_mm
    low, high = np.minimum(low, high), np.maximum(low, high)
    shape = tuple(int(np.ceil((h - lo) / spacing)) for lo, h in zip(low, high))
    centre = (low + high) / 2
    rotation = rotation_matrix(variant.rotation_deg)
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing
    affine[:3, 3] = (
        centre + np.asarray(variant.shift_mm) - affine[:3, :3] @ (np.array(shape) - 1) / 2
    )
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    world = np.einsum("ij,j...->i...", affine[:3, :3], grid) + affine[:3, 3, None, None, None]
    # Two scales of deformation: a smooth one that moves lobes and a fine one (FINE_WARP_*) that
    # reshapes gyri, so the template's folding pattern is not a cue the model can memorise.
    scales = ((tuple(max(n // 4, 2) for n in shape), ANATOMY_WARP_MM, 1.5),
              (tuple(max(round(n * spacing / FINE_WARP_CELL_MM), 2) for n in shape),
               FINE_WARP_MM, 1.0))  # fmt: skip
    for coarse, amplitude, sigma in scales:
        for axis in range(3):
            disp = _smooth_field(coarse, rng, amplitude=amplitude, sigma=sigma)
            world[axis] += ndimage.zoom(disp, np.array(shape) / np.array(coarse), order=1)[
                : shape[0], : shape[1], : shape[2]
            ]
    inverse = np.linalg.inv(t_affine)
    vox = np.einsum("ij,j...->i...", inverse[:3, :3], world) + inverse[:3, 3, None, None, None]
    sample = {
        name: ndimage.map_coordinates(volume.astype(np.float32), vox, order=1, mode="constant")
        for name, volume in (("t1", t1), ("gm", gm), ("wm", wm), ("head", head))
    }
    label = np.argmax(
        np.stack([1.0 - sample["gm"] - sample["wm"], sample["gm"], sample["wm"]]), axis=0
    )
    image = scanner_effects(sample["t1"], rng)
    if variant.zero_background:
        image = np.where(sample["head"] > 0.5, image, 0.0).astype(np.float32)
    return image, label.astype(np.uint8), affine


def write_tables(
    out_dir: Path, tables: dict[str, list[dict[str, str]]], columns: list[str]
) -> None:
    """Write each split's rows as ``<out_dir>/<split>.csv`` (an empty split: the header only)."""
    for split, rows in tables.items():
        with open(out_dir / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def config_yaml(config: dict[str, Any]) -> str:
    """The demo's experiment as plain YAML for people to read and edit.

    A list used twice (the window of sampling and inference) is written out twice: PyYAML would
    otherwise write an anchor and alias (``&id001`` / ``*id001``) that few users recognise.
    """
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(config, Dumper=_NoAliases, sort_keys=False)


def write_config_and_train(config: dict, config_path: Path, run_dir: Path) -> Any:
    """Write the demo's experiment as YAML (the user can rerun or edit it), load it, train it.

    Returns:
        the loaded :class:`~voxelflow.config.schema.ExperimentConfig`.
    """
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.run import train_experiment

    config_path.write_text(config_yaml(config))
    experiment = load_experiment(config_path)
    train_experiment(experiment, run_dir=run_dir, force=True)
    return experiment


def _make_phantom_subject(
    rng: np.random.Generator, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image, label = make_phantom(
        shape, num_classes=3, num_blobs=6, noise=0.15, seed=int(rng.integers(1 << 31))
    )
    return image.astype(np.float32), label.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])


def make_demo_dataset(
    out_dir: Path,
    *,
    num_train: int = 8,
    num_test: int = 4,
    spacing: float = 3.0,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "test"),
) -> DemoData:
    """Write the demo subjects as NIfTI files plus ``train.csv`` and ``test.csv`` in ``out_dir``.

    Args:
        out_dir: folder created for the data (``images/``, ``labels/``, two CSV files).
        num_train: training + validation subjects.
        num_test: held-out test subjects (made the same way, never seen in training).
        spacing: voxel size (mm) of the generated subjects.
        seed: random seed; subject ``i`` draws from its own generator seeded ``(seed, i)``, so
            one split can be remade alone, identical to a full run's.
        splits: the splits to write images for (the other tables are written header-only).

    Returns:
        The paths of the two tables and the data source used.
    """
    template = load_template()
    source = "mni152" if template is not None else "phantom"
    if template is None:
        log.warning(
            "nilearn is not installed: the demo uses synthetic phantoms instead of real MRI"
        )
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    if template is not None:
        template = tissue_posteriors(template)
    if template is not None and spacing >= 2.0:
        template = coarse_template(template)  # 2 mm blocks for a 2 mm or coarser grid, 8× faster
    if template is not None:
        template = pad_template(template)
    distance = (
        distance_from_brain(template[0] > 0.05, float(abs(template[3][0, 0])))
        if template is not None
        else None
    )
    sulci = sulcus_map(template) if template is not None else None
    means = tissue_means(template) if template is not None else None
    for index in range(num_train + num_test):
        split = "train" if index < num_train else "test"
        if split not in splits:
            continue
        name = f"{split}{index:03d}"
        rng = np.random.default_rng([seed, index])
        variant = ScanVariant.draw(rng)
        if template is not None and distance is not None and sulci is not None and means:
            anatomy = remap_tissue_contrast(open_sulci(template, sulci, rng), means, rng)
            image, label, affine = make_varied_subject(anatomy, distance, rng, spacing, variant)
        else:
            image, label, affine = _make_phantom_subject(rng, (48, 56, 48))
        image_path = out_dir / "images" / f"{name}_t1.nii.gz"
        label_path = out_dir / "labels" / f"{name}_tissue.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), image_path)
        nib.save(nib.Nifti1Image(label, affine), label_path)
        tables[split].append(
            {
                "subject": name,
                "image": str(image_path.relative_to(out_dir)),
                "label": str(label_path.relative_to(out_dir)),
                "acquisition": variant.describe() if template is not None else "phantom",
            }
        )
    write_tables(out_dir, tables, ["subject", "image", "label", "acquisition"])
    return DemoData(out_dir / "train.csv", out_dir / "test.csv", source, dict(TISSUE_NAMES))
