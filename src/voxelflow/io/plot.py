"""Pictures of images: orthogonal slices with label and prediction overlays.

:func:`plot_views` draws the three orthogonal planes (sagittal, coronal, axial) through one
point, by default the foreground centre (of the label, else of the prediction, else of the
image's above-mean voxels), after turning the grid to RAS so every picture reads the same way
whatever the file's orientation: patient's right on the right of the picture (neurological
convention), superior and anterior up. Each overlay (reference label, prediction) gets its own
row; label values keep one colour across rows and the legend names them.

The same montage backs ``voxelflow view``, :meth:`Image.plot <voxelflow.io.image.Image.plot>`
and :meth:`Subject.plot <voxelflow.io.image.Subject.plot>`. Matplotlib is a core dependency;
only the Agg (file) backend is used, so no display is needed.

Example:
    >>> import numpy as np, torch
    >>> from voxelflow.io.image import Image
    >>> label = torch.zeros(1, 8, 8, 8, dtype=torch.int16)
    >>> label[0, 2:4, 5:7, 1:3] = 1
    >>> foreground_centre(Image(torch.rand(1, 8, 8, 8)), Image(label, kind="label"))
    (2, 6, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from voxelflow.errors import ShapeError
from voxelflow.io.image import Image, check_same_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the overlay colours, in order of the label values present (label 0 is never drawn)
PALETTE: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)  # fmt: skip
#: opacity of the filled overlays
OVERLAY_ALPHA = 0.45
VIEWS = ("sagittal", "coronal", "axial")


def to_ras(image: Image) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """The data turned to the closest RAS grid (axis flips and swaps only, no resampling).

    Returns:
        ``(data, spacing, ornt)``: data ``(C, X, Y[, Z])`` with +X right, +Y anterior,
        +Z superior; its spacing; the nibabel orientation transform applied.
    """
    data = image.numpy()
    if image.spatial_dims == 2:
        return data, tuple(image.spacing), np.array([[0, 1], [1, 1]])
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(image.affine), nib.orientations.axcodes2ornt("RAS")
    )
    turned = np.stack([nib.orientations.apply_orientation(channel, ornt) for channel in data])
    spacing = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(ornt):
        spacing[int(target_axis)] = image.spacing[source_axis]
    return turned, tuple(spacing), ornt


def ras_index(index: Sequence[int], shape: Sequence[int], ornt: np.ndarray) -> tuple[int, ...]:
    """A voxel index of the file's grid in the RAS-turned grid of :func:`to_ras`."""
    turned = [0] * len(index)
    for source_axis, (target_axis, flip) in enumerate(ornt[: len(index)]):
        value = int(index[source_axis])
        turned[int(target_axis)] = shape[source_axis] - 1 - value if flip < 0 else value
    return tuple(turned)


def foreground_centre(image: Image, *overlays: Image | None) -> tuple[int, ...]:
    """The voxel (of ``image``'s grid) the views pass through.

    The centre of mass of the first overlay with any non-zero voxel; else of the image voxels
    above the image's mean (the head or body rather than the air around it); else the middle.
    """
    for overlay in overlays:
        if overlay is not None:
            mask = overlay.numpy().max(axis=0) > 0
            if mask.any():
                return _centre_of(mask)
    values = image.numpy()[0].astype(np.float64)
    finite = np.isfinite(values)
    if finite.any():
        mask = finite & (values > values[finite].mean())
        if mask.any():
            return _centre_of(mask)
    return tuple(n // 2 for n in image.spatial_shape)


def _centre_of(mask: np.ndarray) -> tuple[int, ...]:
    coordinates = np.argwhere(mask)
    centre = np.round(coordinates.mean(axis=0)).astype(int)
    # a concave shape's centre of mass may fall outside it: take the nearest voxel inside
    nearest = coordinates[np.argmin(((coordinates - centre) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest)


def label_colours(*overlays: Image | None) -> dict[int, str]:
    """One colour per non-zero label value found in any overlay, in increasing value order."""
    values: set[int] = set()
    for overlay in overlays:
        if overlay is not None:
            values |= {int(v) for v in np.unique(overlay.numpy()) if v != 0}
    return {value: PALETTE[i % len(PALETTE)] for i, value in enumerate(sorted(values))}


def _planes(data: np.ndarray, centre: Sequence[int]) -> list[tuple[str, np.ndarray, int]]:
    """``(view, plane, axis)`` of each orthogonal view of a ``(X, Y[, Z])`` RAS array.

    Planes are transposed for ``imshow(origin="lower")``: rows go up (superior or anterior),
    columns go right (patient's right or anterior).
    """
    if data.ndim == 2:
        return [("image", data.T, -1)]
    x, y, z = centre
    return [
        ("sagittal", data[x, :, :].T, 0),
        ("coronal", data[:, y, :].T, 1),
        ("axial", data[:, :, z].T, 2),
    ]


def _aspect(view: str, spacing: Sequence[float]) -> float:
    if view == "sagittal":
        return spacing[2] / spacing[1]
    if view == "coronal":
        return spacing[2] / spacing[0]
    return spacing[1] / spacing[0]


def _window(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _rgba(plane: np.ndarray, colours: Mapping[int, str]) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*plane.shape, 4), dtype=np.float32)
    for value, colour in colours.items():
        rgba[plane == value] = (*to_rgba(colour)[:3], OVERLAY_ALPHA)
    return rgba


def plot_views(
    image: Image,
    *,
    label: Image | None = None,
    pred: Image | None = None,
    label_names: Mapping[int, str] | None = None,
    centre: Sequence[int] | None = None,
    channel: int = 0,
    title: str | None = None,
) -> Figure:
    """The montage: orthogonal slices of ``image`` through ``centre`` with overlays.

    Args:
        image: the intensity image, ``(C, X, Y[, Z])``; channel ``channel`` is shown.
        label: a reference label map on the image's grid (one row, filled overlay).
        pred: a predicted label map on the image's grid (one more row).
        label_names: label value → name for the legend (values without a name: the number).
        centre: voxel index (of the file's grid) the planes pass through; default
            :func:`foreground_centre`.
        channel: which channel of a multi-channel image to show.
        title: the figure's title (default: the file name, or "image").

    Returns:
        A matplotlib :class:`~matplotlib.figure.Figure` (save it with :func:`save_figure`).

    Raises:
        GeometryError: an overlay is not on the image's grid (both files named).
        ShapeError: ``channel`` or ``centre`` out of range.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    overlays = [(name, o) for name, o in (("label", label), ("prediction", pred)) if o is not None]
    for name, given in overlays:
        check_same_grid(image, given, what=f"the image and its {name}")
    if not 0 <= channel < image.num_channels:
        raise ShapeError(
            f"channel: expected 0..{image.num_channels - 1} for {_file(image)}, got {channel}"
        )
    if centre is None:
        centre = foreground_centre(image, label, pred)
    centre = tuple(int(c) for c in centre)
    if len(centre) != image.spatial_dims or any(
        not 0 <= c < n for c, n in zip(centre, image.spatial_shape)
    ):
        raise ShapeError(
            f"centre: expected {image.spatial_dims} voxel indices inside {image.spatial_shape}, "
            f"got {centre}"
        )
    data, spacing, ornt = to_ras(image)
    ras_centre = ras_index(centre, image.spatial_shape, ornt)
    low, high = _window(data[channel])
    colours = label_colours(label, pred)
    rows: list[tuple[str, Image | None]] = list(overlays) or [("image", None)]
    planes = _planes(data[channel], ras_centre)
    figure = Figure(figsize=(3.2 * len(planes), 3.2 * len(rows) + 0.9), dpi=100)
    axes = figure.subplots(len(rows), len(planes), squeeze=False)
    for row, (row_name, overlay) in enumerate(rows):
        overlay_planes = _planes(to_ras(overlay)[0][0], ras_centre) if overlay is not None else None
        for column, (view, plane, axis) in enumerate(planes):
            ax = axes[row][column]
            aspect = 1.0 if axis < 0 else _aspect(view, spacing)
            ax.imshow(plane, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect,
                      interpolation="nearest")  # fmt: skip
            if overlay_planes is not None:
                ax.imshow(_rgba(overlay_planes[column][1], colours), origin="lower",
                          aspect=aspect, interpolation="nearest")  # fmt: skip
            ax.set_title(f"{row_name}: {view}" if overlays else view, fontsize=9)
            ax.set_axis_off()
    if colours:
        names = dict(label_names or {})
        handles = [
            Patch(facecolor=colour, edgecolor="none", label=_legend_text(value, names))
            for value, colour in colours.items()
        ]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6),
                      fontsize=9, frameon=False)  # fmt: skip
    where = f"slices through voxel {centre} of the {image.orientation} grid"
    figure.suptitle(f"{title or _file(image, quoted=False)}: {where}", fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.12 if colours else 0.03,
                           wspace=0.05, hspace=0.2)  # fmt: skip
    return figure


def _legend_text(value: int, names: Mapping[int, str]) -> str:
    name = names.get(value)
    return f"{value} {name}" if name else str(value)


def _file(image: Image, *, quoted: bool = True) -> str:
    if image.path is None:
        return "<in-memory image>" if quoted else "image"
    return repr(str(image.path)) if quoted else Path(image.path).name


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as PNG (folders created); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")
    return path


def figure_rgb(figure: Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 array (for TensorBoard image summaries)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def parse_label_names(text: str | None) -> dict[int, str]:
    """``"1=grey_matter,2=white_matter"``, or a YAML/JSON file of ``{value: name}``.

    Raises:
        ConfigError: a pair without ``=``, a value that is not an integer, or an unreadable
            file (named).
    """
    from voxelflow.errors import ConfigError

    if not text:
        return {}
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        import yaml

        try:
            loaded: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--label-names: cannot read {str(path)!r}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"--label-names: expected {str(path)!r} to hold a mapping value → name"
            )
        pairs = [(str(k), str(v)) for k, v in loaded.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            value, sep, name = item.partition("=")
            if not sep:
                raise ConfigError(f"--label-names: expected VALUE=NAME pairs, got {item!r}")
            pairs.append((value.strip(), name.strip()))
    names = {}
    for value, name in pairs:
        try:
            names[int(value)] = name
        except ValueError:
            raise ConfigError(
                f"--label-names: expected an integer label value, got {value!r}"
            ) from None
    return names
