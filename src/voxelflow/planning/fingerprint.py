"""The dataset fingerprint: what ``voxelflow plan`` knows about every subject, read once.

For each subject and image channel: shape, spacing and orientation (before and after
reorientation to the planned axis codes), the body bounding box, intensity statistics inside
the label foreground and inside the body (percentiles 0.5/50/99.5, mean, std), whether the
channel looks like CT, and the kind of background (exactly zero or noise); for the label: its
values with voxel counts and the connected components of every class.

Subjects are read in parallel worker processes (one file read each), and the result is cached
as ``fingerprint.json``: a subject whose files have the same identity (path, size, mtime) as in
the cache is not read again.

Example:
    >>> fp = fingerprint_dataset(rows, roles={"image": ["image"], "label": ["label"]})  # doctest: +SKIP
    >>> fp.subjects[0].channels[0].looks_ct  # doctest: +SKIP
    False
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from scipy import ndimage

from voxelflow.engine.checkpoint import atomic_write
from voxelflow.errors import DataError, VoxelflowError
from voxelflow.io.cache import file_identity
from voxelflow.io.image import Image, check_same_grid
from voxelflow.io.readers import read_image
from voxelflow.io.table import SubjectRow
from voxelflow.transforms import functional as F
from voxelflow.transforms.normalize import body_mask, looks_like_ct

logger = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
#: quantiles (percent) kept per subject and channel so dataset percentiles can be pooled
POOL_QUANTILES = tuple(float(q) for q in np.linspace(0.0, 100.0, 201))
#: volumes larger than this many voxels compute the body mask on a 2× subsampled grid
BODY_SUBSAMPLE_VOXELS = 4_000_000
#: at most this many components per class keep their individual sizes in the fingerprint
MAX_COMPONENT_SIZES = 50


@dataclass
class IntensityStats:
    """Statistics of one channel inside one mask (``count`` voxels)."""

    count: int
    mean: float
    std: float
    p00_5: float
    p50: float
    p99_5: float
    quantiles: list[float]

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityStats | None:
        """Statistics of ``values`` (any shape), or None when empty."""
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            return None
        # one partition pass for the pooled quantiles and the three reported percentiles
        values = np.percentile(flat, [*POOL_QUANTILES, 0.5, 50.0, 99.5])
        q, (low, mid, high) = values[:-3], values[-3:]
        return cls(
            count=int(flat.size),
            mean=float(flat.mean()),
            std=float(flat.std()),
            p00_5=float(low),
            p50=float(mid),
            p99_5=float(high),
            quantiles=[round(float(v), 6) for v in q],
        )


@dataclass
class ChannelFingerprint:
    """One image channel of one subject."""

    minimum: float
    maximum: float
    integer_valued: bool
    looks_ct: bool
    background: str  # "zero" | "noise" | "none"
    body_fraction: float
    body: IntensityStats | None
    foreground: IntensityStats | None


@dataclass
class ClassFingerprint:
    """One label value of one subject."""

    value: int
    voxels: int
    components: int
    component_voxels: list[int]


@dataclass
class SubjectFingerprint:
    """One subject: its grid (after reorientation) and every channel and label class."""

    subject: str
    files: dict[str, dict[str, Any]]
    spatial_dims: int
    original_orientation: str
    shape: list[int]
    spacing: list[float]
    body_box: list[list[int]]
    channels: list[ChannelFingerprint]
    labels: list[ClassFingerprint] = field(default_factory=list)

    @property
    def cropped_shape(self) -> list[int]:
        """Shape of the body bounding box (the grid after cropping to the body)."""
        start, stop = self.body_box
        return [b - a for a, b in zip(start, stop)]


@dataclass
class Fingerprint:
    """Every subject's fingerprint plus the options it was computed with."""

    orientation: str | None
    roles: dict[str, list[str]]
    subjects: list[SubjectFingerprint]
    version: int = FINGERPRINT_VERSION

    @property
    def spatial_dims(self) -> int:
        """2 or 3 (the same for every subject)."""
        return self.subjects[0].spatial_dims

    @property
    def num_channels(self) -> int:
        """Image channels per subject (the same for every subject)."""
        return len(self.subjects[0].channels)

    @property
    def label_values(self) -> list[int]:
        """Every label value seen in any subject, sorted."""
        return sorted({c.value for s in self.subjects for c in s.labels})

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        """Rebuild from :meth:`to_json`."""
        subjects = []
        for s in data["subjects"]:
            channels = [
                ChannelFingerprint(
                    **{
                        **c,
                        "body": IntensityStats(**c["body"]) if c["body"] else None,
                        "foreground": IntensityStats(**c["foreground"])
                        if c["foreground"]
                        else None,
                    }
                )
                for c in s["channels"]
            ]
            labels = [ClassFingerprint(**c) for c in s["labels"]]
            subjects.append(SubjectFingerprint(**{**s, "channels": channels, "labels": labels}))
        return cls(
            orientation=data["orientation"],
            roles=data["roles"],
            subjects=subjects,
            version=data.get("version", FINGERPRINT_VERSION),
        )


# --------------------------------------------------------------------------- one subject


def _subsample(array: np.ndarray, factor: int) -> np.ndarray:
    return array[(slice(None),) * (array.ndim - 3) + (slice(None, None, factor),) * 3]


def _channel_fingerprint(
    channel: np.ndarray, body: np.ndarray, foreground: np.ndarray | None, looks_ct: bool
) -> ChannelFingerprint:
    outside = channel[~body]
    if outside.size == 0:
        background = "none"
    else:
        # exactly-zero (or exactly-minimum) background: skull-stripped or masked scans
        zero_fraction = float(np.mean(outside == 0)) if not looks_ct else 0.0
        min_fraction = float(np.mean(outside == channel.min()))
        background = "zero" if max(zero_fraction, min_fraction) > 0.5 else "noise"
    sample = channel.ravel(order="K")[:: max(1, channel.size // 200_000)]
    return ChannelFingerprint(
        minimum=float(channel.min()),
        maximum=float(channel.max()),
        integer_valued=bool(np.all(sample == np.round(sample))),
        looks_ct=looks_ct,
        background=background,
        body_fraction=float(body.mean()),
        body=IntensityStats.of(channel[body]),
        foreground=None if foreground is None else IntensityStats.of(channel[foreground]),
    )


def _class_fingerprints(label: np.ndarray) -> list[ClassFingerprint]:
    if label.dtype.kind in "ub":
        counts_all = np.bincount(label.ravel(order="K"))
        values = np.flatnonzero(counts_all)
        counts = counts_all[values]
    else:
        values, counts = np.unique(label, return_counts=True)
    result = []
    box = F.foreground_bounding_box(label != 0)
    # components are counted inside the labels' bounding box: the rest is background
    inside = label[tuple(slice(a, b) for a, b in zip(*box))] if box is not None else label
    for value, count in zip(values.tolist(), counts.tolist()):
        if value == 0:
            result.append(ClassFingerprint(int(value), int(count), 0, []))
            continue
        components, number = ndimage.label(inside == value)
        sizes = sorted((int(s) for s in np.bincount(components.ravel())[1:]), reverse=True)
        result.append(
            ClassFingerprint(int(value), int(count), int(number), sizes[:MAX_COMPONENT_SIZES])
        )
    return result


def _read(row: SubjectRow, column: str, kind: str) -> Image:
    """The file as an :class:`Image` without copying voxels where that is safe.

    NIfTI files are read through nibabel's array proxy and wrapped as they are (the planner only
    measures them); anything unusual (other formats, non-finite values, non-integer labels, 2D
    or 5D files) goes through :func:`~voxelflow.io.readers.read_image` and its checks.
    """
    path = row.path(column)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib
        import torch

        try:
            # a .nii / .nii.gz file loads as a NIfTI image (nib.load is typed for any format)
            loaded = cast("nib.Nifti1Image", nib.load(str(path)))
            array = np.asanyarray(loaded.dataobj)
        except Exception:  # unreadable here: the full reader names the problem
            return read_image(path, kind=kind)  # type: ignore[arg-type]
        floating = array.dtype.kind == "f"
        usable = array.ndim in (3, 4) and array.shape[2] > 1 and array.dtype.kind in "uif"
        if usable and floating:
            usable = bool(np.isfinite(array).all()) and (
                kind != "label" or bool(np.all(array == np.round(array)))
            )
        if usable:
            channels = array[None] if array.ndim == 3 else np.moveaxis(array, -1, 0)
            if array.dtype.byteorder not in ("=", "|"):
                channels = channels.astype(array.dtype.newbyteorder("="))
            data = torch.from_numpy(np.ascontiguousarray(channels) if floating else channels)
            return Image(data, loaded.affine, kind=kind, path=path)  # type: ignore[arg-type]
    return read_image(path, kind=kind)  # type: ignore[arg-type]


def _oriented(
    shape: list[int], affine: np.ndarray, box: list[list[int]], orientation: str | None
) -> tuple[list[int], np.ndarray, list[list[int]]]:
    """Shape, affine and box as they are after reorienting to ``orientation`` (no voxels moved:
    the statistics do not depend on the axis order, only these do)."""
    if not orientation:
        return shape, affine, box
    dims = len(shape)
    transform = F.orientation_transform(affine, orientation, spatial_dims=dims)
    dummy = np.broadcast_to(np.zeros((), dtype=np.uint8), (1, *shape))
    new_affine = F.apply_orientation(dummy, affine, transform)[1]
    new_shape, start, stop = [0] * dims, [0] * dims, [0] * dims
    for axis, (target, flip) in enumerate(transform):
        target = int(target)
        new_shape[target] = shape[axis]
        low, high = box[0][axis], box[1][axis]
        if flip < 0:
            low, high = shape[axis] - high, shape[axis] - low
        start[target], stop[target] = low, high
    return new_shape, new_affine, [start, stop]


def fingerprint_subject(
    row: SubjectRow, roles: dict[str, list[str]], orientation: str | None
) -> SubjectFingerprint:
    """Read one subject's files once and compute its fingerprint.

    Args:
        row: the subject's table row.
        roles: ``image`` columns (stacked as channels) and optionally one ``label`` column.
        orientation: axis codes the plan reorients to (``None`` keeps the file's).

    Raises:
        GeometryError: an image and the label (or two images) are on different grids; the
            message names both files.
    """
    images = [_read(row, column, "intensity") for column in roles["image"]]
    label_columns = roles.get("label") or []
    label = _read(row, label_columns[0], "label") if label_columns else None
    first = images[0]
    for other in [*images[1:], *([label] if label is not None else [])]:
        check_same_grid(first, other, what=f"subject {row.name!r}: its image and label")
    files = {c: file_identity(row.path(c)) for c in [*roles["image"], *label_columns]}
    original = first.orientation
    data = [channel for img in images for channel in img.data.numpy()]  # views, file axes
    label_data = label.data.numpy()[0] if label is not None else None
    spatial_dims = first.spatial_dims
    file_shape = [int(n) for n in data[0].shape]
    factor = 2 if spatial_dims == 3 and data[0].size > BODY_SUBSAMPLE_VOXELS else 1
    channels = []
    bodies = []
    for channel in data:
        ct = looks_like_ct(channel)
        small = _subsample(channel, factor) if factor > 1 else channel
        body_small = body_mask(small, looks_ct=ct)
        bodies.append(body_small)
        fg = None
        if label_data is not None:
            fg_label = _subsample(label_data, factor) if factor > 1 else label_data
            fg = fg_label > 0
        channels.append(_channel_fingerprint(small, body_small, fg, ct))
    union = np.any(bodies, axis=0)
    box = F.foreground_bounding_box(union)
    if box is None:
        start, stop = [0] * spatial_dims, list(file_shape)
    else:
        start = [int(a) * factor for a in box[0]]
        stop = [min(int(b) * factor, n) for b, n in zip(box[1], file_shape)]
    if label_data is not None and label_data.any():
        # the label foreground always lies inside the box used for cropping
        lbox = F.foreground_bounding_box(label_data > 0)
        assert lbox is not None
        start = [min(a, b) for a, b in zip(start, lbox[0])]
        stop = [max(a, b) for a, b in zip(stop, lbox[1])]
    shape, affine, (start, stop) = _oriented(file_shape, first.affine, [start, stop], orientation)
    spacing = [round(float(s), 6) for s in F.spacing_of(affine, spatial_dims)]
    return SubjectFingerprint(
        subject=row.name,
        files=files,
        spatial_dims=spatial_dims,
        original_orientation=original,
        shape=shape,
        spacing=spacing,
        body_box=[start, stop],
        channels=channels,
        labels=_class_fingerprints(label_data) if label_data is not None else [],
    )


def _work(args: tuple[SubjectRow, dict[str, list[str]], str | None]) -> SubjectFingerprint | str:
    """Worker entry: a fingerprint, or the one-line message of a voxelflow error."""
    import torch

    torch.set_num_threads(1)
    try:
        return fingerprint_subject(*args)
    except VoxelflowError as exc:
        return f"{type(exc).__name__}:{exc}"


# --------------------------------------------------------------------------- the dataset


def _cached(path: Path, orientation: str | None, roles: dict[str, list[str]]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cached = Fingerprint.from_json(data)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        logger.warning("%s: unreadable fingerprint cache (%s); recomputing", path, exc)
        return {}
    if cached.version != FINGERPRINT_VERSION or cached.orientation != orientation:
        return {}
    if cached.roles != roles:
        return {}
    return {s.subject: s for s in cached.subjects}


def _unchanged(record: SubjectFingerprint, row: SubjectRow, roles: dict[str, list[str]]) -> bool:
    columns = [*roles["image"], *(roles.get("label") or [])]
    try:
        return all(record.files.get(c) == file_identity(row.path(c)) for c in columns)
    except DataError:
        return False


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def fingerprint_dataset(
    rows: Sequence[SubjectRow],
    *,
    roles: dict[str, list[str]],
    orientation: str | None = "RAS",
    cache: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Fingerprint:
    """The fingerprint of every subject in ``rows``, reusing ``cache`` where files are unchanged.

    Args:
        rows: the dataset table.
        roles: ``{"image": [columns...], "label": [column]}`` (label optional).
        orientation: axis codes to reorient to before measuring (``None``: keep the files').
        cache: ``fingerprint.json`` to reuse and rewrite (atomically); ``None``: no cache.
        workers: worker processes; default the available cores (at most one per subject).
        progress: show a progress bar.

    Raises:
        DataError: no subjects, an unreadable file, images and label on different grids, or a
            channel count that differs between subjects (each naming the subject and files).
    """
    if not rows:
        raise DataError("plan: the dataset has no subjects")
    cache_path = Path(cache) if cache is not None else None
    known = _cached(cache_path, orientation, roles) if cache_path else {}
    records: dict[str, SubjectFingerprint] = {}
    todo = []
    for row in rows:
        old = known.get(row.name)
        if old is not None and _unchanged(old, row, roles):
            records[row.name] = old
        else:
            todo.append(row)
    if todo:
        logger.info(
            "fingerprint: reading %d subject(s)%s",
            len(todo),
            f", {len(records)} from the cache" if records else "",
        )
        for name, result in zip(
            [r.name for r in todo], _run(todo, roles, orientation, workers, progress)
        ):
            if isinstance(result, str):
                raise DataError(result.partition(":")[2])
            records[name] = result
    fingerprint = Fingerprint(orientation, roles, [records[r.name] for r in rows])
    _check_consistent(fingerprint)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(fingerprint.to_json(), indent=1).encode("utf-8")
        atomic_write(cache_path, lambda stream: stream.write(text))
    return fingerprint


def _run(
    rows: list[SubjectRow],
    roles: dict[str, list[str]],
    orientation: str | None,
    workers: int | None,
    progress: bool,
) -> list[SubjectFingerprint | str]:
    from tqdm import tqdm

    count = min(len(rows), workers or available_cores())
    jobs = [(row, roles, orientation) for row in rows]
    bar = tqdm(total=len(rows), desc="fingerprint", unit="subject", disable=not progress or None)
    results: list[SubjectFingerprint | str] = []
    try:
        if count <= 1:
            for job in jobs:
                results.append(_work(job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=count) as pool:
                for result in pool.map(_work, jobs):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


def _check_consistent(fingerprint: Fingerprint) -> None:
    first = fingerprint.subjects[0]
    for subject in fingerprint.subjects[1:]:
        if len(subject.channels) != len(first.channels):
            raise DataError(
                f"plan: subject {subject.subject!r} has {len(subject.channels)} image channel(s), "
                f"subject {first.subject!r} has {len(first.channels)}: every subject needs the "
                f"same channels ({', '.join(fingerprint.roles['image'])})"
            )
        if subject.spatial_dims != first.spatial_dims:
            raise DataError(
                f"plan: subject {subject.subject!r} is {subject.spatial_dims}D, subject "
                f"{first.subject!r} is {first.spatial_dims}D"
            )
