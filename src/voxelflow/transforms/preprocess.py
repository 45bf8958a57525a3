"""The deterministic preprocessing pipeline and its exact inverse.

:class:`Preprocessor` applies, in order and as configured by
:class:`voxelflow.config.schema.PreprocessingConfig`:

1. non-finite voxels → 0 (warning with the count) or a :class:`DataError`;
2. reorientation to ``orientation`` (axis permutations and flips only: exact);
3. resampling to ``spacing`` (images: ``image_interpolation``; labels: nearest or
   ``partial_volume``; weights: linear) over the same field of view;
4. cropping to the bounding box of non-zero ``image`` voxels (or of the body) plus ``crop_margin``;
5. intensity normalisation of the ``image`` role (``normalization`` steps, in order);
6. label values → class indices 0..K-1 (``label_values`` or the fitted values).

It returns the new :class:`Subject` and a JSON-serialisable *record* of what was done;
:func:`invert` uses the record to bring any output on the preprocessed grid (class
probabilities, a label map, a regression image) back onto the original grid: un-crop (pad with
``fill_value``), resample back to the original shape and affine, un-reorient, and map class
indices back to label values.

Example:
    >>> from voxelflow.config.schema import PreprocessingConfig
    >>> image = Image(torch.rand(1, 8, 8, 4), np.diag([1.0, 1.0, 4.0, 1.0]))
    >>> pre = Preprocessor(PreprocessingConfig(spacing=[2.0, 2.0, 2.0]))
    >>> processed, record = pre(Subject("case1", {"image": image}))
    >>> processed["image"].spatial_shape
    (4, 4, 8)
    >>> restored = invert(processed["image"], record, kind="intensity")
    >>> restored.spatial_shape, bool(np.allclose(restored.affine, image.affine))
    ((8, 8, 4), True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voxelflow.errors import DataError, ShapeError
from voxelflow.io.image import Image, ImageKind, Subject
from voxelflow.transforms import functional as F
from voxelflow.transforms.label import LabelMapping
from voxelflow.transforms.normalize import Normalizer, body_mask

if TYPE_CHECKING:  # config sits beside transforms in the layers; only its type is needed
    from voxelflow.config.schema import PreprocessingConfig

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
NORMALIZED_ROLES = ("image",)
LABEL_ROLE = "label"


def _grid(image: Image) -> dict[str, Any]:
    return {"shape": list(image.spatial_shape), "affine": image.affine.tolist()}


def replace_non_finite(image: Image, *, policy: str = "warn", role: str = "") -> Image:
    """Replace NaN/±Inf voxels by 0 with a warning giving the count, or raise.

    Raises:
        DataError: when ``policy == "error"`` and the image has non-finite voxels.
    """
    # a finite sum means every voxel is finite (NaN and ±Inf propagate): one cheap pass
    if not image.data.is_floating_point() or bool(torch.isfinite(image.data.sum())):
        return image
    bad = ~torch.isfinite(image.data)
    count = int(bad.sum())
    if count == 0:
        return image
    where = f"{str(image.path)!r}" if image.path else f"image {role!r}"
    if policy == "error":
        raise DataError(f"expected finite voxel values in {where}, got {count} NaN/Inf voxels")
    logger.warning("%s: replaced %d NaN/Inf voxels with 0", where, count)
    return image.with_data(torch.where(bad, torch.zeros((), dtype=image.dtype), image.data))


#: an input whose spacing differs from the training spacing by more than this factor is warned about
SPACING_WARNING_RATIO = 3.0


def input_assumption_warnings(subject: Subject, config: PreprocessingConfig) -> list[str]:
    """What about an input is far from what the model was trained on (one sentence each).

    Checks the spacing against ``config.spacing`` (ratio above :data:`SPACING_WARNING_RATIO` on
    any axis: the input is still resampled to the training spacing, but detail or context the
    model never saw is lost or invented) and the modality against the normalisation (a ``ct``
    step on an image that does not look like CT, or an MR-style body-mask z-score on one that
    does).
    """
    from voxelflow.transforms.normalize import looks_like_ct

    image = subject.images.get("image") or next(iter(subject.images.values()))
    where = f"subject {subject.name!r}" + (f" ({image.path})" if image.path else "")
    warnings = []
    wanted = list(config.spacing or [])[: image.spatial_dims]
    if len(wanted) == image.spatial_dims:
        for axis, (have, want) in enumerate(zip(image.spacing, wanted)):
            if want is None or have <= 0:
                continue
            ratio = max(have / want, want / have)
            if ratio > SPACING_WARNING_RATIO:
                warnings.append(
                    f"{where}: spacing {have:.3g} mm on axis {axis} is {ratio:.1f}× "
                    f"{'finer' if have < want else 'coarser'} than the training spacing "
                    f"{want:.3g} mm; resampled to it, but the model never saw such data"
                )
    for step in config.normalization:
        channels = step.kwargs.get("channels") or range(image.num_channels)
        for index in channels:
            if index >= image.num_channels:
                continue
            ct = looks_like_ct(image.data[index].numpy())
            if step.name == "ct" and not ct:
                warnings.append(
                    f"{where}: channel {index} does not look like CT (no air at -1000 HU) but the "
                    "model was trained on CT (normalisation 'ct')"
                )
            elif step.name == "zscore" and step.kwargs.get("mask") == "body" and ct:
                warnings.append(
                    f"{where}: channel {index} looks like CT (air at -1000 HU) but the model was "
                    "trained on MR-like images (body-mask z-score)"
                )
    return warnings


def adaptation_note(subject: Subject, config: PreprocessingConfig) -> str | None:
    """What preprocessing changes about this input's grid, in one sentence (None: nothing)."""
    image = subject.images.get("image") or next(iter(subject.images.values()))
    wanted = list(config.spacing or [])[: image.spatial_dims]
    changes = []
    if len(wanted) == image.spatial_dims:
        target = [w if w is not None else h for w, h in zip(wanted, image.spacing)]
        if any(abs(h - t) > 1e-3 for h, t in zip(image.spacing, target)):
            changes.append(
                "resampled "
                + "×".join(f"{v:.3g}" for v in image.spacing)
                + " → "
                + "×".join(f"{v:.3g}" for v in target)
                + " mm (the model's spacing)"
            )
    if config.orientation and image.orientation != config.orientation[: image.spatial_dims]:
        changes.append(f"reoriented {image.orientation} → {config.orientation}")
    if not changes:
        return None
    return f"subject {subject.name!r}: " + ", ".join(changes) + "; outputs mapped back to its grid"


class Preprocessor:
    """Apply :class:`PreprocessingConfig` to subjects; fit its data-dependent parts.

    Args:
        config: the preprocessing section of the experiment.
        fitted_state: from :meth:`fit` (``{"normalization": [state, ...], "label_values": [...]}``).

    Raises:
        ConfigError / RegistryError: invalid normalisation steps.

    Shape:
        each image: ``(C, *spatial)`` → ``(C, *preprocessed spatial)``.

    Example:
        >>> from voxelflow.config.schema import PreprocessingConfig
        >>> image = Image(torch.rand(1, 8, 8, 4), np.diag([1.0, 1.0, 4.0, 1.0]))
        >>> preprocessor = Preprocessor(PreprocessingConfig(spacing=[2.0, 2.0, 2.0]))
        >>> processed, record = preprocessor(Subject("case1", {"image": image}))
        >>> processed["image"].spatial_shape, [step["name"] for step in record["steps"]]
        ((4, 4, 8), ['resample'])
    """

    def __init__(
        self, config: PreprocessingConfig, *, fitted_state: dict[str, Any] | None = None
    ) -> None:
        from voxelflow.config.build import build_normalizers  # the one build path (same rank)

        self.config = config
        state = fitted_state or {}
        saved = list(state.get("normalization") or [])
        self.normalizers: list[Normalizer] = build_normalizers(config.normalization, states=saved)
        values = (
            config.label_values if config.label_values is not None else state.get("label_values")
        )
        self.label_mapping = LabelMapping(values) if values is not None else None

    @property
    def fitted_state(self) -> dict[str, Any]:
        """JSON-serialisable fitted state (normaliser states and label values)."""
        return {
            "normalization": [step.state_dict() for step in self.normalizers],
            "label_values": self.label_mapping.values if self.label_mapping else None,
        }

    @property
    def needs_fit(self) -> bool:
        """True when a normaliser is unfitted (label values are optional)."""
        return any(not step.is_fitted for step in self.normalizers)

    def fit(self, subjects: Iterable[Subject]) -> dict[str, Any]:
        """Fit normalisers (each on the output of the previous ones) and the label values.

        Args:
            subjects: training subjects in their original form.

        Returns:
            the fitted state (also kept by this preprocessor).
        """
        keep_images = any(step.requires_fit for step in self.normalizers)
        images, label_values, count = [], [], 0
        for subject in subjects:  # only what fitting needs is kept in memory
            geometric = self.geometry(subject)[0]
            count += 1
            if keep_images and NORMALIZED_ROLES[0] in geometric:
                images.append(geometric[NORMALIZED_ROLES[0]].numpy())
            if LABEL_ROLE in geometric:
                label_values.append(np.unique(geometric[LABEL_ROLE].numpy()))
        if count == 0:
            raise DataError("expected at least one training subject to fit preprocessing, got none")
        for step in self.normalizers if keep_images else []:
            if step.requires_fit:
                step.fit(images)
            images = [step(image) for image in images]
        if self.config.label_values is None and label_values:
            self.label_mapping = LabelMapping.fit(label_values)
        return self.fitted_state

    def __call__(self, subject: Subject) -> tuple[Subject, dict[str, Any]]:
        """Preprocess ``subject``; returns ``(new subject, record)``."""
        processed, record = self.geometry(subject)
        images = dict(processed.images)
        for role in NORMALIZED_ROLES:
            if role in images and self.normalizers:
                images[role] = self.normalize(images[role])
        if self.label_mapping is not None and LABEL_ROLE in images:
            label = images[LABEL_ROLE]
            classes = self.label_mapping.to_classes(label.numpy(), path=label.path)
            images[LABEL_ROLE] = label.with_data(torch.from_numpy(classes.astype(np.int16)))
            record["steps"].append({"name": "label_map", "values": self.label_mapping.values})
        record["normalization"] = [c.name for c in self.config.normalization]
        record["preprocessed"] = _grid(next(iter(images.values())))
        return processed.with_images(images), record

    def normalize(self, image: Image) -> Image:
        """Run the normalisation steps on one image (float32 out)."""
        array = image.numpy().astype(np.float32)
        for step in self.normalizers:
            array = step(array, path=image.path)
        return image.with_data(torch.from_numpy(np.ascontiguousarray(array)))

    def geometry(self, subject: Subject) -> tuple[Subject, dict[str, Any]]:
        """Non-finite handling, reorientation, resampling and cropping (no normalisation)."""
        images = {
            role: replace_non_finite(img, policy=self.config.non_finite, role=role)
            for role, img in subject.images.items()
        }
        subject = subject.with_images(images)
        subject.check_grid()
        first = next(iter(images.values()))
        record: dict[str, Any] = {"version": RECORD_VERSION, "original": _grid(first), "steps": []}
        if self.config.orientation:
            images = self._reorient(images, record)
        if self.config.spacing:
            images = self._resample(images, record)
        if self.config.crop_foreground:
            images = self._crop(images, record, subject.name)
        return subject.with_images(images), record

    def _reorient(self, images: dict[str, Image], record: dict[str, Any]) -> dict[str, Image]:
        first = next(iter(images.values()))
        codes = self.config.orientation or ""
        transform = F.orientation_transform(first.affine, codes, spatial_dims=first.spatial_dims)
        if transform == [[float(axis), 1.0] for axis in range(first.spatial_dims)]:
            return images
        out = {}
        for role, img in images.items():
            data, affine, _ = F.apply_orientation(img.data, img.affine, transform)
            out[role] = img.with_data(data, affine=affine)
        record["steps"].append({"name": "reorient", "transform": transform, "before": _grid(first)})
        return out

    def _resample(self, images: dict[str, Image], record: dict[str, Any]) -> dict[str, Image]:
        first = next(iter(images.values()))
        wanted = list(self.config.spacing or [])[: first.spatial_dims]
        if len(wanted) != first.spatial_dims:  # named as configured, null entries included
            raise ShapeError(f"expected {first.spatial_dims} spacing values, got {wanted}")
        # a null entry keeps the file's spacing on that axis (2D plans keep the slice thickness)
        spacing = [s if s is not None else float(c) for s, c in zip(wanted, first.spacing)]
        shape, affine = F.spacing_grid(first.spatial_shape, first.affine, spacing)
        if shape == first.spatial_shape and np.allclose(affine, first.affine, atol=1e-6):
            return images
        out = {role: self._resample_image(img, shape, affine) for role, img in images.items()}
        record["steps"].append(
            {
                "name": "resample",
                "before": _grid(first),
                "after": {"shape": list(shape), "affine": affine.tolist()},
            }
        )
        return out

    def _resample_image(self, image: Image, shape: tuple[int, ...], affine: np.ndarray) -> Image:
        if image.kind == "label" and self.config.label_interpolation == "partial_volume":
            data = F.resample_labels_partial_volume(
                image.data, image.affine, target_shape=shape, target_affine=affine
            )
        else:
            by_kind: dict[str, F.Interpolation] = {"label": "nearest", "weight": "linear"}
            method = by_kind.get(image.kind, self.config.image_interpolation)
            data = F.resample(
                image.data,
                image.affine,
                target_shape=shape,
                target_affine=affine,
                interpolation=method,
            )
        return image.with_data(data, affine=affine)

    def _crop(
        self, images: dict[str, Image], record: dict[str, Any], name: str
    ) -> dict[str, Image]:
        roles = [r for r in NORMALIZED_ROLES if r in images] or [
            r for r, img in images.items() if img.kind == "intensity"
        ]
        if not roles:
            return images
        if self.config.crop_foreground == "body":
            mask = np.any([body_mask(c) for r in roles for c in images[r].numpy()], axis=0)
        else:
            mask = np.any([images[r].numpy() != 0 for r in roles], axis=(0, 1))
        box = F.foreground_bounding_box(mask, margin=self.config.crop_margin)
        if box is None:
            logger.warning("subject %r: no foreground voxels in %s; not cropping", name, roles)
            return images
        first = next(iter(images.values()))
        start, stop = box
        if list(stop) == list(first.spatial_shape) and not any(start):
            return images
        out = {}
        for role, img in images.items():
            data, affine = F.crop(img.data, img.affine, start, stop)
            out[role] = img.with_data(data.contiguous(), affine=affine)
        record["steps"].append(
            {"name": "crop", "start": list(start), "stop": list(stop), "before": _grid(first)}
        )
        return out


def invert(
    image: Image,
    record: dict[str, Any],
    *,
    kind: ImageKind | None = None,
    fill_value: float = 0.0,
    map_labels: bool = True,
) -> Image:
    """Map an image on the preprocessed grid back onto the original grid of ``record``.

    Args:
        image: output on the preprocessed grid, e.g. class probabilities ``(C, *spatial)``.
        record: the record returned by :class:`Preprocessor` for this subject.
        kind: ``"label"`` resamples nearest and maps class indices back to label values;
            ``"intensity"``/``"weight"`` resample linearly. Defaults to ``image.kind``.
        fill_value: value outside the cropped region.
        map_labels: for labels, map class indices back to the original label values.

    Returns:
        the image with the original shape and exactly the original affine.

    Raises:
        ShapeError: when ``image`` is not on the record's preprocessed grid.

    Shape:
        image.data: ``(C, *preprocessed spatial)`` → ``(C, *original spatial)``

    Example:
        >>> from voxelflow.config.schema import PreprocessingConfig
        >>> image = Image(torch.rand(1, 8, 8, 4), np.diag([1.0, 1.0, 4.0, 1.0]))
        >>> preprocessor = Preprocessor(PreprocessingConfig(spacing=[2.0, 2.0, 2.0]))
        >>> processed, record = preprocessor(Subject("case1", {"image": image}))
        >>> probabilities = processed["image"].with_data(torch.full((3, 4, 4, 8), 0.5))
        >>> restored = invert(probabilities, record, kind="intensity")
        >>> restored.data.shape, bool(np.allclose(restored.affine, image.affine))
        (torch.Size([3, 8, 8, 4]), True)
    """
    kind = kind or image.kind
    expected = record["preprocessed"]["shape"]
    if list(image.spatial_shape) != expected:
        raise ShapeError(
            f"invert: expected an image of spatial shape {tuple(expected)}, got {image.spatial_shape}"
        )
    data, affine = image.data, image.affine
    for step in reversed(record["steps"]):
        data, affine = _undo_step(
            step, data, affine, kind=kind, fill_value=fill_value, map_labels=map_labels
        )
    original = np.asarray(record["original"]["affine"], dtype=np.float64)
    return image.with_data(data, affine=original, kind=kind)


def _undo_step(
    step: dict[str, Any],
    data: torch.Tensor,
    affine: np.ndarray,
    *,
    kind: str,
    fill_value: float,
    map_labels: bool,
) -> tuple[torch.Tensor, np.ndarray]:
    name = step["name"]
    if name == "label_map":
        if kind == "label" and map_labels:
            values = LabelMapping(step["values"]).to_values(data.numpy())
            return torch.from_numpy(values), affine
        return data, affine
    before = step["before"]
    if name == "crop":
        shape = before["shape"]
        after = [s - b for s, b in zip(shape, step["stop"])]
        return F.pad(data, affine, step["start"], after, value=fill_value)
    if name == "resample":
        method: F.Interpolation = "nearest" if kind == "label" else "linear"
        resampled = F.resample(
            data,
            affine,
            target_shape=before["shape"],
            target_affine=np.asarray(before["affine"]),
            interpolation=method,
        )
        return resampled, np.asarray(before["affine"], dtype=np.float64)
    if name == "reorient":
        return F.undo_reorient(data, affine, step["transform"])
    raise DataError(f"invert: expected a known preprocessing step in the record, got {name!r}")
