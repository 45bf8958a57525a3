"""Benchmark: ``voxelflow plan`` beside nnU-Net v2's fingerprint + experiment planner (issue #14).

Synthetic datasets are written once in nnU-Net's raw format (``imagesTr/<case>_0000<ending>``,
``labelsTr/<case><ending>``, ``dataset.json`` with ``channel_names``, ``labels``,
``numTraining``, ``file_ending``) and both planners read the very same files:

* ``mr``: isotropic 1 mm MR-like heads (``{"0": "T1"}``), int16 with a noisy (Rayleigh)
  background, labels brain (1) and a small lesion (2); slight size variation; RAS storage.
* ``mr0``: the same heads with an exactly-zero background (skull-stripped style), where
  nnU-Net's crop to the non-zero region and voxelflow's crop to the body box coincide.
* ``ct``: 0.7×0.7 mm in-plane CT-like bodies in HU (``{"0": "CT"}``): air -1024, soft tissue
  0-60 HU, fat, a spine, small lesions (1); slice thickness cycling 2.5/5/5/5/6 mm over a fixed
  field of view (so nnU-Net's 10th-percentile rule for the thick axis applies); LPS storage, so
  voxelflow's reorientation to RAS (flips) is exercised.
* ``2d``: 2D PNGs (``file_ending ".png"``: nnU-Net's ``NaturalImage2DIO``, voxelflow's
  ``raster2d`` reader), cell-like blobs. PNG has no int16: the images are uint16, labels uint8.

Each planner is run as a fresh command line on warm files: ``voxelflow plan --dataset D --out O
--gpu-memory G --device cuda --workers W`` versus ``nnUNetv2_extract_fingerprint -d ID -np W
--clean`` then ``nnUNetv2_plan_experiment -d ID -gpu_memory_target G`` (``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` set to folders under the work folder). nnU-Net runs
from its own environment (``--nnunet-bin``), e.g. one made with::

    python3 -m venv /tmp/nnvenv
    /tmp/nnvenv/bin/pip install -c constraints.txt nnunetv2

Axes: voxelflow's lists are per voxel axis after reorientation to RAS; nnU-Net's are in
SimpleITK order (the reverse of the NIfTI array's) then permuted by ``transpose_forward`` (lowest
resolution first). Every nnU-Net value is mapped back to voxelflow's axes before comparing (for
2D PNGs: nnU-Net's image is ``(1, rows, columns)``, voxelflow's ``(columns, rows)``).

Targets (issue #14): the same target spacing and normalisation scheme, the window's voxel count
within ±30 % of nnU-Net's patch, the number of stride-2 levels per axis within ±1, and planning
no slower than nnU-Net's fingerprint + plan.

Run::

    .venv/bin/python benchmarks/plan_vs_nnunet.py --nnunet-bin /tmp/nnvenv/bin
    .venv/bin/python benchmarks/plan_vs_nnunet.py --nnunet-bin /tmp/nnvenv/bin --timing-only
    .venv/bin/python benchmarks/plan_vs_nnunet.py --datasets ct --subjects 20 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: nnU-Net dataset ids used for the synthetic datasets
DATASET_IDS = {"mr": 901, "ct": 902, "2d": 903, "timing": 904, "mr0": 905}
DATASET_NAMES = {"mr": "SynthMR", "ct": "SynthCT", "2d": "Synth2D", "timing": "SynthTiming", "mr0": "SynthMRZero"}  # fmt: skip
DEFAULT_SUBJECTS = {"mr": 12, "ct": 10, "2d": 20, "timing": 100, "mr0": 12}
#: nominal shape; ct: in-plane size and the number of 5 mm slices (the field of view is fixed)
DEFAULT_SIZE = {"mr": (160, 192, 160), "ct": (256, 256, 40), "2d": (384, 320), "timing": (256, 256, 160), "mr0": (160, 192, 160)}  # fmt: skip
CT_THICKNESS = (2.5, 5.0, 5.0, 5.0, 6.0)
CT_IN_PLANE = 0.7
NNUNET_SCHEMES = {"ZScoreNormalization": "zscore", "CTNormalization": "ct"}
WINDOW_TOLERANCE = 0.30
POOLING_TOLERANCE = 1


# --------------------------------------------------------------------------- synthetic data


def _ellipsoid(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    total = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    return total <= 1.0


def _mr_case(
    shape: Sequence[int], seed: int, zero_background: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A head: Rayleigh background noise (or exact zeros, skull-stripped style), scalp, brain with a smooth bias, ventricles, a lesion."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    centre = [n / 2 + rng.uniform(-3, 3) for n in shape]
    head_r = [n * rng.uniform(0.38, 0.44) for n in shape]
    brain_r = [r * 0.86 for r in head_r]
    head = _ellipsoid(shape, centre, head_r)
    brain = _ellipsoid(shape, centre, brain_r)
    ventricles = _ellipsoid(shape, centre, [r * 0.18 for r in brain_r])
    image = rng.rayleigh(8.0, size=shape).astype(np.float32)
    image[head] = 320.0
    bias = np.ogrid[tuple(slice(0, n) for n in shape)]
    smooth = 1.0 + 0.1 * sum(np.sin(g / n * math.pi) for g, n in zip(bias, shape)) / 3
    image[brain] = (620.0 * np.broadcast_to(smooth, shape))[brain]
    image[ventricles] = 180.0
    offset = [rng.uniform(-0.4, 0.4) * r for r in brain_r]
    lesion = _ellipsoid(shape, [c + o for c, o in zip(centre, offset)], [rng.uniform(4, 8)] * 3)
    lesion &= brain
    image[lesion] = 900.0
    image[head] += rng.normal(0.0, 25.0, size=int(head.sum())).astype(np.float32)
    if zero_background:
        image[~head] = 0.0
    label = np.zeros(shape, dtype=np.uint8)
    label[brain] = 1
    label[lesion] = 2
    return np.clip(image, -32768, 32767).astype(np.int16), label


def _ct_case(shape: Sequence[int], thickness: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A body in HU: air, soft tissue with a fat ring, a spine, 1-3 small lesions."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = (int(n) for n in shape)
    centre = [nx / 2 + rng.uniform(-4, 4), ny / 2 + rng.uniform(-4, 4), nz / 2]
    radii = [nx * rng.uniform(0.36, 0.42), ny * rng.uniform(0.27, 0.32), nz * 0.55]
    body = _ellipsoid((nx, ny, nz), centre, radii)
    inner = _ellipsoid((nx, ny, nz), centre, [radii[0] - 12, radii[1] - 12, radii[2]])
    image = np.full((nx, ny, nz), -1024.0, dtype=np.float32)
    image[body] = -100.0  # fat
    image[inner] = 40.0  # soft tissue
    spine_c = [centre[0], centre[1] - radii[1] * 0.6, centre[2]]
    spine = _ellipsoid((nx, ny, nz), spine_c, [14.0, 14.0, nz * 0.6]) & inner
    image[spine] = 700.0
    label = np.zeros((nx, ny, nz), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        radius_mm = rng.uniform(5.0, 12.0)
        r = [radius_mm / CT_IN_PLANE, radius_mm / CT_IN_PLANE, radius_mm / thickness]
        c = [
            centre[0] + rng.uniform(-0.5, 0.5) * radii[0],
            centre[1] + rng.uniform(-0.2, 0.5) * radii[1],
            centre[2] + rng.uniform(-0.3, 0.3) * nz,
        ]
        lesion = _ellipsoid((nx, ny, nz), c, r) & inner & ~spine
        image[lesion] = 75.0
        label[lesion] = 1
    image += rng.normal(0.0, 12.0, size=image.shape).astype(np.float32)
    return np.clip(image, -1024, 3071).astype(np.int16), label


def _png_case(shape: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (rows, columns) uint16 picture of cells on a noisy background and their mask."""
    rng = np.random.default_rng(seed)
    rows, cols = (int(n) for n in shape)
    image = rng.normal(400.0, 60.0, size=(rows, cols)).astype(np.float32)
    label = np.zeros((rows, cols), dtype=np.uint8)
    for _ in range(int(rng.integers(8, 20))):
        r = rng.uniform(6, 20)
        cell = _ellipsoid(
            (rows, cols), [rng.uniform(r, rows - r), rng.uniform(r, cols - r)], [r, r * 1.2]
        )
        image[cell] = rng.uniform(1500, 3000) + rng.normal(0, 80, size=int(cell.sum()))
        label[cell] = 1
    return np.clip(image, 0, 65535).astype(np.uint16), label


def _varied(size: Sequence[int], rng: np.random.Generator, spread: int) -> list[int]:
    return [max(16, int(n) + int(rng.integers(-spread, spread + 1))) for n in size]


@dataclass
class Case:
    """One subject to write: its generator arguments and files."""

    kind: str
    name: str
    shape: list[int]
    spacing: list[float]
    seed: int
    image: Path
    label: Path


def _write_case(case: Case) -> None:
    if case.kind == "2d":
        import SimpleITK as sitk

        image, label = _png_case(case.shape, case.seed)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(case.image))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(case.label))
        return
    import nibabel as nib

    if case.kind == "ct":
        image, label = _ct_case(case.shape, case.spacing[2], case.seed)
        affine = np.diag([-case.spacing[0], -case.spacing[1], case.spacing[2], 1.0])  # LPS
    else:
        image, label = _mr_case(case.shape, case.seed, zero_background=case.kind == "mr0")
        affine = np.diag([*case.spacing, 1.0])  # RAS
    for array, path in ((image, case.image), (label, case.label)):
        nifti = nib.Nifti1Image(array, affine)
        nifti.header.set_qform(affine, code=1)
        nifti.header.set_sform(affine, code=1)
        nib.save(nifti, str(path))


def write_dataset(
    kind: str, raw: Path, subjects: int, size: Sequence[int], seed: int, workers: int
) -> tuple[Path, dict[str, Any]]:
    """Write dataset ``kind`` under ``raw`` (skipped when the same one is already there)."""
    folder = raw / f"Dataset{DATASET_IDS[kind]:03d}_{DATASET_NAMES[kind]}"
    ending = ".png" if kind == "2d" else ".nii.gz"
    params = {"kind": kind, "subjects": subjects, "size": list(size), "seed": seed, "version": 1}
    marker = folder / "generated.json"
    if marker.is_file() and json.loads(marker.read_text())["params"] == params:
        return folder, json.loads(marker.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(subjects):
        name = f"{DATASET_NAMES[kind].lower()}_{index:03d}"
        if kind == "ct":
            thickness = CT_THICKNESS[index % len(CT_THICKNESS)]
            fov = size[2] * 5.0
            shape = [*_varied(size[:2], rng, 8), max(4, round(fov / thickness))]
            spacing = [CT_IN_PLANE, CT_IN_PLANE, thickness]
        elif kind == "2d":
            shape, spacing = _varied(size[:2], rng, 16), [1.0, 1.0]
        elif kind == "timing":
            shape, spacing = [int(n) for n in size], [1.0, 1.0, 1.0]
        else:
            shape, spacing = _varied(size, rng, 8), [1.0, 1.0, 1.0]
        cases.append(
            Case(
                "mr" if kind == "timing" else kind,
                name,
                shape,
                spacing,
                seed * 1000 + index,
                folder / "imagesTr" / f"{name}_0000{ending}",
                folder / "labelsTr" / f"{name}{ending}",
            )
        )
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(_write_case, cases))
    labels = {
        "mr": {"background": 0, "brain": 1, "lesion": 2},
        "mr0": {"background": 0, "brain": 1, "lesion": 2},
        "timing": {"background": 0, "brain": 1, "lesion": 2},
        "ct": {"background": 0, "lesion": 1},
        "2d": {"background": 0, "cell": 1},
    }[kind]
    channel = {"mr": "T1", "mr0": "T1", "timing": "T1", "ct": "CT", "2d": "microscopy"}[kind]
    dataset_json = {
        "channel_names": {"0": channel},
        "labels": labels,
        "numTraining": subjects,
        "file_ending": ending,
        "name": DATASET_NAMES[kind],
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    info = {
        "params": params,
        "shapes": [c.shape for c in cases],
        "spacings": [c.spacing for c in cases],
        "channel": channel,
    }
    marker.write_text(json.dumps(info))
    return folder, info


# --------------------------------------------------------------------------- axis mapping


def nifti_axis_map(kind: str, folder: Path) -> list[int]:
    """voxelflow axis of each NIfTI array axis (voxelflow reorients to RAS)."""
    if kind == "2d":
        return [0, 1]  # voxelflow reads a PNG as (columns, rows); no reorientation
    import nibabel as nib

    first = sorted((folder / "imagesTr").iterdir())[0]
    ornt = nib.io_orientation(nib.load(str(first)).affine)
    return [int(a) for a in ornt[:, 0]]


def nnunet_to_voxelflow(
    values: Sequence[Any], transposed_axes: Sequence[int], axis_map: Sequence[int], dims: int
) -> list[Any]:
    """nnU-Net values on ``transposed_axes`` (original SimpleITK axes) in voxelflow's axes.

    SimpleITK's axis ``o`` of a 3-D image is the NIfTI array's axis ``2 - o``; nnU-Net's 2D
    images are ``(1, rows, columns)``: axis ``o`` is voxelflow's ``2 - o`` as well.
    """
    out: list[Any] = [None] * dims
    for value, original in zip(values, transposed_axes):
        array_axis = 2 - int(original)
        if array_axis < len(axis_map):
            out[axis_map[array_axis]] = value
    return out


# --------------------------------------------------------------------------- running planners


@dataclass
class ConfigSummary:
    """One configuration, in voxelflow's axes."""

    spacing: list[float | None]
    window: list[int]
    batch_size: int
    pooling: list[int]
    normalization: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def _pooling(strides: Sequence[Sequence[int]], dims: int) -> list[int]:
    """Number of downsampling levels (stride > 1, counted as log2 of the stride) per axis."""
    counts = [0] * dims
    for level in strides:
        for axis, stride in enumerate(level[:dims]):
            if stride > 1:
                counts[axis] += round(math.log2(stride))
    return counts


def _run(command: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as stream:
        result = subprocess.run(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {log}:\n{tail}")
    return elapsed


def run_voxelflow(
    folder: Path, out: Path, gpu_memory: float, workers: int, logs: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    if out.exists():
        shutil.rmtree(out)  # no fingerprint cache: every run reads every file
    command = [sys.executable, "-m", "voxelflow", "plan", "--dataset", str(folder)]
    command += ["--out", str(out), "--gpu-memory", str(gpu_memory), "--device", "cuda"]
    command += ["--workers", str(workers)]
    env = dict(os.environ)
    elapsed = _run(command, env, logs / f"voxelflow_{folder.name}.log")
    return {"total": elapsed}, json.loads((out / "plan.json").read_text())


def run_nnunet(
    bin_dir: Path, work: Path, dataset_id: int, gpu_memory: float, workers: int, logs: Path
) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(work / "nnUNet_raw"),
        nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
        nnUNet_results=str(work / "nnUNet_results"),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("VIRTUAL_ENV", None)
    fingerprint_cmd = [str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", str(dataset_id)]
    fingerprint_cmd += ["-np", str(workers), "--clean", "--no_pbar"]
    plan_cmd = [str(bin_dir / "nnUNetv2_plan_experiment"), "-d", str(dataset_id)]
    plan_cmd += ["-gpu_memory_target", f"{gpu_memory:g}"]
    t_fp = _run(fingerprint_cmd, env, logs / f"nnunet_fingerprint_{dataset_id}.log")
    t_plan = _run(plan_cmd, env, logs / f"nnunet_plan_{dataset_id}.log")
    pre = next((work / "nnUNet_preprocessed").glob(f"Dataset{dataset_id:03d}_*"))
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    times = {"fingerprint": t_fp, "plan": t_plan, "total": t_fp + t_plan}
    return times, plans, fingerprint


def _median_shape(fingerprint: dict[str, Any], spacing: Sequence[float | None]) -> list[float]:
    """voxelflow's median body-box shape at ``spacing`` (None: native, as its 2d configs)."""
    shapes = []
    for subject in fingerprint["subjects"]:
        start, stop = subject["body_box"]
        crop = [b - a for a, b in zip(start, stop)]
        shapes.append(
            [
                n if t is None else max(1, round(n * s / t))
                for n, s, t in zip(crop, subject["spacing"], spacing)
            ]
        )
    return [float(v) for v in np.median(np.asarray(shapes, dtype=np.float64), axis=0)]


def voxelflow_configs(
    plan: dict[str, Any], fingerprint: dict[str, Any]
) -> dict[str, ConfigSummary]:
    result = {}
    for c in plan["configurations"]:
        dims = len(c["spacing"])
        median = _median_shape(fingerprint, c["spacing"])
        result[c["name"]] = ConfigSummary(
            spacing=list(c["spacing"]),
            window=[int(w) for w in c["window"][:dims]],
            batch_size=int(c["batch_size"]),
            pooling=_pooling(c["strides"], dims),
            normalization=[n["scheme"] for n in c["normalization"]],
            extra={
                "estimated_memory_gb": c.get("estimated_memory_gb"),
                "median_image": [None if t is None else m for m, t in zip(median, c["spacing"])],
            },
        )
    return result


def nnunet_configs(
    plans: dict[str, Any], axis_map: Sequence[int], dims: int
) -> dict[str, ConfigSummary]:
    forward = [int(a) for a in plans["transpose_forward"]]
    result = {}
    for name in ("2d", "3d_fullres", "3d_lowres"):
        c = plans["configurations"].get(name)
        if c is None or "patch_size" not in c:
            continue
        n = len(c["patch_size"])
        axes = forward[len(forward) - n :]  # 2d: the last two transposed axes
        spacing = nnunet_to_voxelflow(c["spacing"], axes, axis_map, dims)
        window = nnunet_to_voxelflow(c["patch_size"], axes, axis_map, dims)
        window = [1 if w is None else int(w) for w in window]
        strides = c["architecture"]["arch_kwargs"]["strides"]
        per_axis = _pooling(strides, n)
        pooling = nnunet_to_voxelflow(per_axis, axes, axis_map, dims)
        median = nnunet_to_voxelflow(c["median_image_size_in_voxels"], axes, axis_map, dims)
        result[name] = ConfigSummary(
            spacing=spacing,
            window=window,
            batch_size=int(c["batch_size"]),
            pooling=[0 if p is None else int(p) for p in pooling],
            normalization=[NNUNET_SCHEMES.get(s, s) for s in c["normalization_schemes"]],
            extra={"use_mask_for_norm": c.get("use_mask_for_norm"), "median_image": median},
        )
    return result


# --------------------------------------------------------------------------- comparison


def _same_spacing(a: Sequence[float | None], b: Sequence[float | None]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x is None) != (y is None):
            return False
        if x is not None and y is not None and abs(x - y) > 1e-3 * max(1.0, abs(y)):
            return False
    return True


def compare(vf: ConfigSummary | None, nn: ConfigSummary | None) -> dict[str, Any]:
    if vf is None or nn is None:
        return {"present_in_both": False}
    ratio = math.prod(vf.window) / math.prod(nn.window)

    def coverage(c: ConfigSummary) -> float:
        median = c.extra["median_image"]
        covered = [min(w, m) for w, m in zip(c.window, median) if m is not None]
        return math.prod(covered) / math.prod(m for m in median if m is not None)

    pool_diff = [a - b for a, b in zip(vf.pooling, nn.pooling)]
    return {
        "present_in_both": True,
        "spacing_same": _same_spacing(vf.spacing, nn.spacing),
        "normalization_same": vf.normalization == nn.normalization,
        "window_voxel_ratio": ratio,
        "window_ok": abs(ratio - 1.0) <= WINDOW_TOLERANCE,
        "pooling_difference": pool_diff,
        "pooling_ok": all(abs(d) <= POOLING_TOLERANCE for d in pool_diff),
        "batch_size_same": vf.batch_size == nn.batch_size,
        "coverage": {"voxelflow": coverage(vf), "nnunet": coverage(nn)},
    }


def _fmt_list(values: Sequence[Any] | None) -> str:
    if values is None:
        return "—"
    parts = []
    for v in values:
        if v is None:
            parts.append("native")
        elif isinstance(v, float):
            parts.append(f"{v:.4g}")
        else:
            parts.append(str(v))
    return "×".join(parts)


def _mark(ok: bool | None) -> str:
    return "ok" if ok else "MISS"


def format_dataset(result: dict[str, Any]) -> str:
    t_vf, t_nn = result["times"]["voxelflow"], result["times"]["nnunet"]
    lines = [
        f"== {result['dataset']}: {result['subjects']} subjects, {result['description']}",
        f"   planning time: voxelflow {t_vf['total']:.1f} s | nnU-Net {t_nn['total']:.1f} s "
        f"(fingerprint {t_nn['fingerprint']:.1f} + plan {t_nn['plan']:.1f}) -> "
        f"{t_nn['total'] / t_vf['total']:.2f}x  {_mark(result['time_ok'])}",
        f"   median shape after crop (voxelflow axes): voxelflow "
        f"{_fmt_list([round(v) for v in result['median_shape_after_crop']['voxelflow']])} | "
        f"nnU-Net {_fmt_list([None if v is None else round(v) for v in result['median_shape_after_crop']['nnunet']])}",
    ]
    header = f"   {'config':<11}{'quantity':<15}{'voxelflow':<22}{'nnU-Net':<22}check"
    lines += [header, "   " + "-" * (len(header) - 3)]
    for item in result["configurations"]:
        vf, nn, cmp_ = item["voxelflow"], item["nnunet"], item["comparison"]
        rows: list[tuple[str, str, str, str]] = []
        if not cmp_["present_in_both"]:
            only = "voxelflow only" if nn is None else "nnU-Net only"
            for quantity, key in (("spacing", "spacing"), ("window", "window")):
                a = _fmt_list(vf[key]) if vf else "—"
                b = _fmt_list(nn[key]) if nn else "—"
                rows.append((quantity, a, b, only))
            a = str(vf["batch_size"]) if vf else "—"
            b = str(nn["batch_size"]) if nn else "—"
            rows.append(("batch size", a, b, only))
        else:
            rows.append(
                (
                    "spacing",
                    _fmt_list(vf["spacing"]),
                    _fmt_list(nn["spacing"]),
                    _mark(cmp_["spacing_same"]),
                )
            )
            rows.append(
                (
                    "window",
                    _fmt_list(vf["window"]),
                    _fmt_list(nn["window"]),
                    f"voxels x{cmp_['window_voxel_ratio']:.2f} {_mark(cmp_['window_ok'])}",
                )
            )
            cov = cmp_["coverage"]
            rows.append(
                (
                    "median image",
                    _fmt_list(
                        [None if m is None else round(m) for m in vf["extra"]["median_image"]]
                    ),
                    _fmt_list(
                        [None if m is None else round(m) for m in nn["extra"]["median_image"]]
                    ),
                    f"window covers {cov['voxelflow'] * 100:.0f} % | {cov['nnunet'] * 100:.0f} %",
                )
            )
            rows.append(
                (
                    "batch size",
                    str(vf["batch_size"]),
                    str(nn["batch_size"]),
                    "same" if cmp_["batch_size_same"] else "differs",
                )
            )
            rows.append(
                (
                    "pooling/axis",
                    _fmt_list(vf["pooling"]),
                    _fmt_list(nn["pooling"]),
                    f"diff {_fmt_list(cmp_['pooling_difference'])} {_mark(cmp_['pooling_ok'])}",
                )
            )
            mask = nn["extra"].get("use_mask_for_norm")
            masks = "" if mask is None else " mask=" + ",".join("y" if m else "n" for m in mask)
            rows.append(
                (
                    "normalisation",
                    ",".join(vf["normalization"]),
                    ",".join(nn["normalization"]) + masks,
                    _mark(cmp_["normalization_same"]),
                )
            )
        for index, (quantity, a, b, check) in enumerate(rows):
            label = item["name"] if index == 0 else ""
            lines.append(f"   {label:<11}{quantity:<15}{a:<22}{b:<22}{check}")
    return "\n".join(lines)


def describe(kind: str, info: dict[str, Any]) -> str:
    shapes = np.asarray(info["shapes"])
    low, high = shapes.min(axis=0).tolist(), shapes.max(axis=0).tolist()
    spacings = sorted({tuple(s) for s in info["spacings"]})
    span = "×".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(low, high))
    mm = ", ".join("×".join(f"{v:g}" for v in s) for s in spacings)
    return f"{span} voxels at {mm} mm, channel {info['channel']!r}"


def benchmark_dataset(kind: str, folder: Path, info: dict[str, Any], args: Any) -> dict[str, Any]:
    work = Path(args.workdir)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"voxelflow": [], "nnunet": []}
    for _ in range(max(1, args.repeats)):  # alternate the planners: shared load hits both
        nn_times, plans, nn_fp = run_nnunet(
            Path(args.nnunet_bin), work, DATASET_IDS[kind], args.gpu_memory, args.workers, logs
        )
        vf_times, vf_plan = run_voxelflow(
            folder, work / "voxelflow_plans" / folder.name, args.gpu_memory, args.workers, logs
        )
        runs["nnunet"].append(nn_times)
        runs["voxelflow"].append(vf_times)
    vf_times = min(runs["voxelflow"], key=lambda t: t["total"])
    nn_times = min(runs["nnunet"], key=lambda t: t["total"])
    dims = len(vf_plan["dataset"]["target_spacing"])
    axis_map = nifti_axis_map(kind, folder)
    vf_fp = json.loads((work / "voxelflow_plans" / folder.name / "fingerprint.json").read_text())
    vf = voxelflow_configs(vf_plan, vf_fp)
    nn = nnunet_configs(plans, axis_map, dims)
    median_nn = np.median(np.asarray(nn_fp["shapes_after_crop"], dtype=np.float64), axis=0)
    sitk_axes = list(range(len(median_nn)))
    configurations = []
    for name in ("2d", "3d_fullres", "3d_lowres"):
        if name not in vf and name not in nn:
            continue
        a, b = vf.get(name), nn.get(name)
        configurations.append(
            {
                "name": name,
                "voxelflow": None if a is None else a.__dict__,
                "nnunet": None if b is None else b.__dict__,
                "comparison": compare(a, b),
            }
        )
    time_ok = vf_times["total"] <= nn_times["total"]
    return {
        "dataset": kind,
        "subjects": info["params"]["subjects"],
        "description": describe(kind, info),
        "folder": str(folder),
        "times": {"voxelflow": vf_times, "nnunet": nn_times},
        "all_times": runs,
        "time_ok": time_ok,
        "median_shape_after_crop": {
            "voxelflow": vf_plan["dataset"]["median_shape_after_crop"],
            "nnunet": nnunet_to_voxelflow(median_nn.tolist(), sitk_axes, axis_map, dims),
        },
        "voxelflow_notes": vf_plan.get("notes", []),
        "configurations": configurations,
        "targets_met": time_ok
        and all(
            c["comparison"].get("present_in_both")
            and c["comparison"]["spacing_same"]
            and c["comparison"]["normalization_same"]
            and c["comparison"]["window_ok"]
            and c["comparison"]["pooling_ok"]
            for c in configurations
        ),
    }


def _size(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").replace("×", ",").split(",") if v)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nnunet-bin",
        default=os.environ.get("NNUNET_BIN"),
        required="NNUNET_BIN" not in os.environ,
        help="bin folder of a venv with nnunetv2 (or $NNUNET_BIN), e.g. "
        "`python3 -m venv nnvenv && nnvenv/bin/pip install -c constraints.txt nnunetv2`",
    )
    parser.add_argument(
        "--datasets",
        default="mr,mr0,ct,2d",
        help="comma-separated subset of mr, mr0 (MR with an exactly-zero background), ct, 2d",
    )
    parser.add_argument(
        "--subjects", type=int, default=None, help="subjects per dataset (default 12/12/10/20)"
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=None,
        help="nominal shape, e.g. 160,192,160 (mr), 256,256,40 (ct: in-plane and 5 mm slices "
        "over the fixed field of view), 384,320 (2d)",
    )
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="issue target: 100 MR-like subjects of 256×256×160 (--subjects/--size change it); "
        "prints the planning times",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run both planners N times, alternating; the fastest run of each is reported",
    )
    parser.add_argument("--gpu-memory", type=float, default=8.0, help="GB (both planners)")
    parser.add_argument(
        "--workers", type=int, default=2, help="fingerprint processes (both planners)"
    )
    parser.add_argument("--workdir", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    bin_dir = Path(args.nnunet_bin)
    if not (bin_dir / "nnUNetv2_plan_experiment").is_file():
        parser.error(f"--nnunet-bin {bin_dir}: no nnUNetv2_plan_experiment there")
    temporary = args.workdir is None
    if temporary:
        args.workdir = tempfile.mkdtemp(prefix="plan_vs_nnunet_")
    work = Path(args.workdir)
    kinds = ["timing"] if args.timing_only else [k.strip() for k in args.datasets.split(",")]
    unknown = [k for k in kinds if k not in DATASET_IDS or (k == "timing") != args.timing_only]
    if unknown:
        parser.error(f"--datasets: expected mr, mr0, ct, 2d; got {unknown}")
    results = []
    try:
        for kind in kinds:
            subjects = args.subjects or DEFAULT_SUBJECTS[kind]
            size = args.size or DEFAULT_SIZE[kind]
            start = time.perf_counter()
            folder, info = write_dataset(
                kind, work / "nnUNet_raw", subjects, size, args.seed, args.workers
            )
            if not args.json:
                print(f"[{kind}] data ready in {time.perf_counter() - start:.1f} s: {folder}")
            result = benchmark_dataset(kind, folder, info, args)
            results.append(result)
            if not args.json:
                if args.timing_only:
                    t_vf, t_nn = result["times"]["voxelflow"], result["times"]["nnunet"]
                    print(
                        f"{subjects} subjects, {result['description']}\n"
                        f"  voxelflow plan:            {t_vf['total']:7.1f} s "
                        f"(target < 90 s: {_mark(t_vf['total'] < 90)})\n"
                        f"  nnU-Net fingerprint:       {t_nn['fingerprint']:7.1f} s\n"
                        f"  nnU-Net plan_experiment:   {t_nn['plan']:7.1f} s\n"
                        f"  nnU-Net total:             {t_nn['total']:7.1f} s "
                        f"(voxelflow {t_nn['total'] / t_vf['total']:.2f}x faster)"
                    )
                else:
                    print(format_dataset(result))
                print(flush=True)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "gpu_memory_gb": args.gpu_memory,
        "workers": args.workers,
        "workdir": None if temporary and not args.keep else str(work),
        "datasets": results,
        "targets_met": all(r["targets_met"] for r in results),
    }
    if args.timing_only:
        summary["voxelflow_under_90s"] = all(r["times"]["voxelflow"]["total"] < 90 for r in results)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print("all targets met" if summary["targets_met"] else "some targets missed (MISS above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
