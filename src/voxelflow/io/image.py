"""The two data containers of voxelflow: :class:`Image` and :class:`Subject`.

An ``Image`` is a tensor with its geometry: ``data`` of shape ``(C, *spatial)`` (2D or 3D; a 4D
time series is stored as channels) and a 4×4 ``affine`` mapping voxel indices to RAS+ world
coordinates in mm, exactly as nibabel defines it. A 2D image still has a 4×4 affine (its third
axis has size one and is not stored in ``data``).

A ``Subject`` is a named set of images sharing one grid (e.g. ``{"image": T1+T2, "label": seg}``)
plus non-image fields such as a class or a target value from the dataset table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from voxelflow.errors import GeometryError, ShapeError

ImageKind = Literal["intensity", "label", "weight"]

#: Grid tolerance of the project's one grid policy (mm for translations/spacing, rad for angles).
GRID_TOLERANCE_MM = 1e-3
GRID_TOLERANCE_RAD = 1e-4


@dataclass
class Image:
    """A medical image: a ``(C, *spatial)`` tensor plus its voxel-to-world affine.

    Args:
        data: tensor of shape ``(C, X, Y)`` or ``(C, X, Y, Z)``.
        affine: 4×4 voxel-to-world matrix (RAS+, mm). Defaults to identity.
        kind: ``"intensity"`` (resampled linearly), ``"label"`` (nearest, integer values) or
            ``"weight"`` (linear, non-negative).
        path: the file (or DICOM folder) it was read from, if any.
        meta: source metadata (header fields, DICOM tags, qform/sform codes, ...).

    Shape:
        data: ``(C, *spatial)``

    Example:
        >>> img = Image(torch.zeros(1, 4, 5, 6), np.diag([2.0, 2.0, 3.0, 1.0]))
        >>> img.spatial_shape, img.spacing, img.orientation
        ((4, 5, 6), (2.0, 2.0, 3.0), 'RAS')
    """

    data: torch.Tensor
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    kind: ImageKind = "intensity"
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.data, np.ndarray):
            self.data = torch.from_numpy(np.ascontiguousarray(self.data))
        if not isinstance(self.data, torch.Tensor):
            raise TypeError(
                f"Image.data must be a torch.Tensor or numpy array, got {type(self.data).__name__}"
            )
        if self.data.ndim not in (3, 4):
            raise ShapeError(
                f"Image.data must have shape (C, X, Y) or (C, X, Y, Z), got {tuple(self.data.shape)}"
                f"{_where(self.path)}"
            )
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ShapeError(f"Image.affine must be 4×4, got {affine.shape}{_where(self.path)}")
        self.affine = affine
        if self.path is not None:
            self.path = Path(self.path)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def num_channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.data.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial size ``(X, Y)`` or ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.data.ndim - 1

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis (column norms of the affine)."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(z) for z in zooms[: self.spatial_dims])

    @property
    def origin(self) -> tuple[float, float, float]:
        """World coordinate (mm, RAS+) of voxel ``(0, 0, 0)``."""
        x, y, z = (float(v) for v in self.affine[:3, 3])
        return x, y, z

    @property
    def direction(self) -> np.ndarray:
        """3×3 matrix of unit axis directions (columns) in RAS+ world space."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        direction: np.ndarray = self.affine[:3, :3] / np.where(zooms == 0, 1.0, zooms)
        return direction

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` (nibabel's ``aff2axcodes``), 2 letters in 2D."""
        import nibabel as nib  # here: training and the GPU benchmark need no nibabel

        codes = "".join(nib.aff2axcodes(self.affine))
        return codes[: self.spatial_dims]

    @property
    def dtype(self) -> torch.dtype:
        """The tensor's dtype."""
        return self.data.dtype

    def numpy(self) -> np.ndarray:
        """The data as a numpy array ``(C, *spatial)`` (shares memory when possible)."""
        return self.data.detach().cpu().numpy()

    def with_data(self, data: torch.Tensor | np.ndarray, **changes: Any) -> Image:
        """A new Image with other data (same spatial grid unless ``affine`` is given)."""
        tensor = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
        return replace(self, data=tensor, meta=dict(self.meta), **changes)

    def same_grid(self, other: Image) -> bool:
        """True when both images share shape and affine within the grid tolerance."""
        return grid_difference(self, other) is None

    def plot(
        self,
        label: Image | None = None,
        pred: Image | None = None,
        *,
        label_names: dict[int, str] | None = None,
        path: str | Path | None = None,
        centre: tuple[int, ...] | None = None,
        channel: int = 0,
    ) -> Any:
        """Orthogonal slices through the foreground centre, with label / prediction overlays.

        Args:
            label: a label map on this image's grid (filled overlay, one row).
            pred: a predicted label map on this image's grid (one more row).
            label_names: label value → name, shown in the colour legend.
            path: also write the picture here as PNG.
            centre: voxel index the planes pass through (default: the foreground centre).
            channel: the channel shown.

        Returns:
            the matplotlib ``Figure`` (see :func:`voxelflow.io.plot.plot_views`).

        Example:
            >>> image = Image(torch.rand(1, 8, 8, 8))
            >>> len(image.plot().axes)  # sagittal, coronal, axial
            3
        """
        from voxelflow.io.plot import plot_views, save_figure

        figure = plot_views(
            self, label=label, pred=pred, label_names=label_names, centre=centre, channel=channel
        )
        if path is not None:
            save_figure(figure, path)
        return figure

    def __repr__(self) -> str:
        src = f", path={str(self.path)!r}" if self.path else ""
        return (
            f"Image(kind={self.kind!r}, shape={tuple(self.data.shape)}, dtype={self.data.dtype}, "
            f"spacing={tuple(round(s, 4) for s in self.spacing)}, orientation={self.orientation!r}{src})"
        )


def grid_difference(a: Image, b: Image) -> str | None:
    """Describe how the grids of ``a`` and ``b`` differ, or ``None`` when they match.

    Grids match when spatial shapes are equal, axis directions agree within
    :data:`GRID_TOLERANCE_RAD` and spacing and origin within :data:`GRID_TOLERANCE_MM`.
    """
    if a.spatial_shape != b.spatial_shape:
        return f"spatial shape {a.spatial_shape} vs {b.spatial_shape}"
    sa, sb = np.asarray(a.spacing), np.asarray(b.spacing)
    if np.max(np.abs(sa - sb)) > GRID_TOLERANCE_MM:
        return f"spacing {_mm(sa)} vs {_mm(sb)} mm"
    cos = np.clip(np.sum(a.direction * b.direction, axis=0), -1.0, 1.0)
    angle = float(np.max(np.arccos(cos)))
    if angle > GRID_TOLERANCE_RAD:
        return f"axis directions differ by {angle:.2e} rad (orientation {a.orientation} vs {b.orientation})"
    shift = float(np.linalg.norm(a.affine[:3, 3] - b.affine[:3, 3]))
    if shift > GRID_TOLERANCE_MM:
        return f"origin differs by {shift:.4g} mm"
    return None


def _mm(values: np.ndarray) -> str:
    """``(1.0, 1.2, 1.5)``: plain floats, not ``np.float64(...)`` reprs."""
    return "(" + ", ".join(f"{float(v):.5g}" for v in values) + ")"


def check_same_grid(a: Image, b: Image, *, what: str = "images") -> None:
    """Raise :class:`GeometryError` naming both files when ``a`` and ``b`` are on different grids.

    Example:
        >>> image = Image(torch.zeros(1, 4, 4, 4))
        >>> check_same_grid(image, Image(torch.ones(1, 4, 4, 4)))  # same grid: nothing happens
        >>> check_same_grid(image, Image(torch.zeros(1, 4, 4, 4), np.diag([2.0, 1.0, 1.0, 1.0])))
        Traceback (most recent call last):
        ...
        voxelflow.errors.GeometryError: images are not on the same grid: ...
    """
    diff = grid_difference(a, b)
    if diff is not None:
        raise GeometryError(
            f"{what} are not on the same grid: {_name(a)} and {_name(b)} differ ({diff}). "
            "Resample them onto one grid, or opt into resampling in the config."
        )


@dataclass
class Subject:
    """One case of a dataset: named images on one grid plus table fields.

    Args:
        name: subject id (unique in a dataset).
        images: role → Image, e.g. ``{"image": ..., "label": ...}``.
        fields: non-image values from the table (class, target value, group, ...).

    Example:
        >>> s = Subject("case1", {"image": Image(torch.zeros(1, 4, 4, 4))})
        >>> s["image"].spatial_shape
        (4, 4, 4)
    """

    name: str
    images: dict[str, Image] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, role: str) -> Image:
        try:
            return self.images[role]
        except KeyError:
            raise KeyError(
                f"subject {self.name!r} has no image {role!r}; it has {sorted(self.images)}"
            ) from None

    def __contains__(self, role: object) -> bool:
        return role in self.images

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shared spatial shape of the subject's images."""
        first = next(iter(self.images.values()))
        return first.spatial_shape

    def check_grid(self) -> None:
        """Enforce the one grid policy across this subject's images."""
        images = list(self.images.values())
        for other in images[1:]:
            check_same_grid(images[0], other, what=f"images of subject {self.name!r}")

    def plot(
        self,
        image: str | None = None,
        *,
        label: str | None = "label",
        pred: str | None = "pred",
        label_names: dict[int, str] | None = None,
        path: str | Path | None = None,
        channel: int = 0,
    ) -> Any:
        """:meth:`Image.plot` of one intensity role with the subject's label maps as overlays.

        Args:
            image: the intensity role shown (default ``"image"``, else the first intensity one).
            label: the role of the reference label map (skipped when absent).
            pred: the role of a prediction (skipped when absent).
            label_names: label value → name for the legend.
            path: also write the picture here as PNG.
            channel: the channel of the intensity image shown.

        Returns:
            the matplotlib ``Figure``.

        Raises:
            KeyError: ``image`` is not a role of this subject (roles listed).
        """
        if image is None:
            intensity = [r for r, i in self.images.items() if i.kind == "intensity"]
            image = "image" if "image" in self.images else (intensity or list(self.images))[0]
        from voxelflow.io.plot import save_figure

        figure = self[image].plot(
            self.images.get(label) if label else None,
            self.images.get(pred) if pred else None,
            label_names=label_names,
            channel=channel,
        )
        figure.suptitle(
            f"{self.name} ({image}): {figure.get_suptitle().split(': ', 1)[-1]}", fontsize=10
        )
        if path is not None:
            save_figure(figure, path)
        return figure

    def with_images(self, images: dict[str, Image]) -> Subject:
        """A new Subject with other images, same name and fields."""
        return Subject(self.name, dict(images), dict(self.fields))


def _name(image: Image) -> str:
    return repr(str(image.path)) if image.path else "<in-memory image>"


def _where(path: Path | None) -> str:
    return f" (file {str(path)!r})" if path else ""
