"""Dataset table rows → preprocessed, cached subjects.

:class:`PreprocessedDataset` reads each subject's files (one or more columns per role, stacked
as channels), enforces the one grid policy, preprocesses them
(:class:`~voxelflow.transforms.preprocess.Preprocessor`) and stores the result in the mmap
cache (:class:`~voxelflow.io.cache.ArrayCache`). Files are read by
:func:`~voxelflow.data.subject.read_row_images`, the reader inference uses too. The cache key
of a subject is a hash of its input files' identities (resolved path, size, mtime), the preprocessing settings and the
fitted state (histogram landmarks, label values): editing one file or one setting rebuilds only
the affected entries. ``dataset[i]`` returns a :class:`CachedSubject` whose arrays are
read-only memory maps, built on first access.

For the Python API without a table, :func:`preprocess_subject` runs the same pipeline in memory.

Example:
    >>> ds = PreprocessedDataset(rows, inputs={"image": ["t1", "t2"], "label": ["seg"]},
    ...                          preprocessing=PreprocessingConfig(), cache_dir=run / "cache")  # doctest: +SKIP
    >>> ds.fit(train_indices)            # doctest: +SKIP
    >>> ds.build(num_workers=2)          # doctest: +SKIP
    >>> ds[0].arrays["image"].shape      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, cast

from tqdm import tqdm

from voxelflow.config.schema import PreprocessingConfig
from voxelflow.data.cached import CachedSubject, compute_class_locations

# re-exported: their home is data/subject.py, the one reader of a subject's files
from voxelflow.data.subject import (  # noqa: F401
    DEFAULT_KINDS,
    check_one_channel,
    default_kind,
    read_image_file,
    read_row_images,
)
from voxelflow.errors import DataError
from voxelflow.io.cache import ArrayCache, cache_key, file_identity
from voxelflow.io.folders import input_folders, refuse_inside_inputs
from voxelflow.io.image import ImageKind, Subject
from voxelflow.io.table import SubjectRow
from voxelflow.transforms.preprocess import Preprocessor

logger = logging.getLogger(__name__)

def preprocess_subject(
    subject: Subject, preprocessing: PreprocessingConfig, fitted_state: dict[str, Any] | None = None
) -> tuple[Subject, dict[str, Any]]:
    """Preprocess an in-memory subject (no cache); returns ``(subject, record)``.

    Raises:
        DataError: a normaliser that needs fitting has no ``fitted_state``.
    """
    preprocessor = Preprocessor(preprocessing, fitted_state=fitted_state)
    _require_fitted(preprocessor)
    return preprocessor(subject)


def save_fitted_state(state: dict[str, Any], path: str | Path) -> None:
    """Write the fitted preprocessing state (landmarks, label values) as readable JSON."""
    Path(path).write_text(json.dumps(state, indent=2))


def load_fitted_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_fitted_state`."""
    return json.loads(Path(path).read_text())


def _require_fitted(preprocessor: Preprocessor) -> None:
    if preprocessor.needs_fit:
        unfitted = [type(s).__name__ for s in preprocessor.normalizers if not s.is_fitted]
        raise DataError(
            f"preprocessing steps {unfitted} need fitting: call dataset.fit(train_indices) "
            "or pass the saved fitted_state"
        )


class PreprocessedDataset:
    """Table rows → preprocessed subjects, memory-mapped from the cache.

    Args:
        rows: the dataset table's rows.
        inputs: role → columns stacked as channels, e.g. ``{"image": ["t1", "t2"], "label": ["seg"]}``.
        kinds: role → image kind; default from the role name (see :func:`default_kind`).
        preprocessing: the preprocessing config.
        cache_dir: where entries are stored; must not be inside a folder holding inputs.
        fitted_state: fitted normaliser states and label values (from :meth:`fit` or a file).
        resample_to_first: resample a subject's images onto its first image instead of failing
            when their grids differ.

    Raises:
        DataError: a row lacks an input column.
        ConfigError: ``cache_dir`` is inside an input folder.
    """

    def __init__(
        self,
        rows: Sequence[SubjectRow],
        *,
        inputs: dict[str, list[str]],
        kinds: Mapping[str, ImageKind] | None = None,
        preprocessing: PreprocessingConfig,
        cache_dir: Path,
        fitted_state: dict[str, Any] | None = None,
        resample_to_first: bool = False,
    ) -> None:
        self.rows = list(rows)
        self.inputs = {role: list(columns) for role, columns in inputs.items()}
        self.kinds: dict[str, ImageKind] = {r: default_kind(r) for r in self.inputs}
        self.kinds.update(kinds or {})
        self.preprocessing = preprocessing
        self.cache = ArrayCache(cache_dir)
        self.resample_to_first = resample_to_first
        self.preprocessor = Preprocessor(preprocessing, fitted_state=fitted_state)
        self._settings = preprocessing.model_dump(mode="json", exclude={"cache_dir"})
        self._warned = False
        self._check_rows()
        self._check_cache_location(Path(cache_dir))

    def _check_rows(self) -> None:
        for row in self.rows:
            for role, columns in self.inputs.items():
                missing = [c for c in columns if not row.columns.get(c)]
                if missing:
                    raise DataError(
                        f"subject {row.name!r}: expected columns {missing} for role {role!r}, "
                        f"got columns {sorted(row.columns)}"
                    )

    def _check_cache_location(self, cache_dir: Path) -> None:
        paths = [
            row.path(c) for row in self.rows for columns in self.inputs.values() for c in columns
            if row.columns.get(c)
        ]
        refuse_inside_inputs(cache_dir, input_folders(paths), key="preprocessing.cache_dir")

    @property
    def fitted_state(self) -> dict[str, Any]:
        """The fitted preprocessing state (save it next to the model)."""
        return self.preprocessor.fitted_state

    def __len__(self) -> int:
        return len(self.rows)

    def fields(self, index: int) -> dict[str, Any]:
        """Non-image columns of row ``index``."""
        used = {c for columns in self.inputs.values() for c in columns}
        return {k: v for k, v in self.rows[index].columns.items() if k not in used}

    def key(self, index: int) -> str:
        """Cache key of row ``index``: inputs' identities + settings + fitted state."""
        row = self.rows[index]
        identities = {
            role: [file_identity(row.path(c)) for c in cols] for role, cols in self.inputs.items()
        }
        settings = self._settings
        return cache_key(
            row.name, identities, self.kinds, settings, self.fitted_state, self.resample_to_first
        )

    def load_original(self, index: int) -> Subject:
        """Read row ``index`` unpreprocessed, by :func:`~voxelflow.data.subject.read_row_images`
        (channels stacked, the one grid policy of training and inference)."""
        images = read_row_images(
            self.rows[index], self.inputs, kinds=self.kinds,
            resample_to_first=self.resample_to_first, non_finite=self.preprocessing.non_finite,
        )  # fmt: skip
        return Subject(self.rows[index].name, images, self.fields(index))

    def fit(self, train_indices: Sequence[int]) -> dict[str, Any]:
        """Fit normalisers and label values on the given (training) rows; returns the state."""
        subjects = (self.load_original(i) for i in train_indices)
        return self.preprocessor.fit(subjects)

    def build_entry(self, index: int) -> str:
        """Preprocess row ``index`` into the cache unless present; returns its key."""
        key = self.key(index)
        if key in self.cache:
            return key
        _require_fitted(self.preprocessor)
        if "label" in self.inputs and self.preprocessor.label_mapping is None and not self._warned:
            logger.warning(
                "label values are neither configured (preprocessing.label_values) nor fitted "
                "(dataset.fit(train_indices)): labels are cached with their raw values"
            )
            self._warned = True
        processed, record = self.preprocessor(self.load_original(index))
        arrays = {role: img.numpy() for role, img in processed.images.items()}
        kinds = {role: img.kind for role, img in processed.images.items()}
        locations = compute_class_locations(arrays["label"]) if "label" in arrays else None
        first = next(iter(processed.images.values()))
        self.cache.write(
            key,
            arrays,
            kinds=kinds,
            affine=first.affine,
            record=record,
            fields={"subject": self.rows[index].name},
            class_locations=locations,
        )
        return key

    def build(self, num_workers: int = 0, *, progress: bool = True) -> list[str]:
        """Build every missing entry, in ``num_workers`` processes (0: in this process).

        Returns:
            the keys of all rows.
        """
        _require_fitted(self.preprocessor)
        missing = [i for i in range(len(self)) if self.key(i) not in self.cache]
        bar = tqdm(total=len(missing), desc="preprocessing", unit="subject", disable=not progress)
        if num_workers <= 0:
            for index in missing:
                self.build_entry(index)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(num_workers, os.cpu_count() or 1)) as pool:
                for future in as_completed([pool.submit(self.build_entry, i) for i in missing]):
                    future.result()
                    bar.update()
        bar.close()
        return [self.key(i) for i in range(len(self))]

    def __getitem__(self, index: int) -> CachedSubject:
        if not -len(self) <= index < len(self):
            raise IndexError(f"expected a subject index in [0, {len(self)}), got {index}")
        index %= len(self)
        key = self.build_entry(index)
        entry = self.cache.load(key)
        if entry is None:  # removed between build and load: build once more
            entry = self.cache.load(self.build_entry(index))
        if entry is None:
            raise DataError(
                f"cache entry {key!r} for subject {self.rows[index].name!r} cannot be read"
            )
        # the cache stores the kinds build_entry wrote from Image.kind
        kinds = {r: cast(ImageKind, k) for r, k in entry.kinds.items()}
        return CachedSubject(
            self.rows[index].name,
            entry.arrays,
            kinds,
            entry.affine,
            self.fields(index),
            entry.class_locations,
            entry.record,
        )
