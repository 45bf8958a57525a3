"""The demo's stated baseline: an intensity-only tissue classifier fitted on the training subjects.

Each image is z-scored (mean and standard deviation over its non-zero voxels); intensities are
binned into ``num_bins`` bins over the training range and each bin is assigned the label most
frequent in it across all training voxels. This is the best any classifier that looks at one
voxel's normalised intensity alone can do on the training data (a lookup-table Bayes
classifier), so a network beating it shows it learned to use spatial context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _zscore(image: np.ndarray) -> np.ndarray:
    inside = image[image > 0]
    mean, std = (float(inside.mean()), float(inside.std())) if inside.size else (0.0, 1.0)
    return (image - mean) / max(std, 1e-6)


class IntensityLookupBaseline:
    """Majority label per normalised-intensity bin.

    Example:
        >>> images = [np.array([[[0.0, 1.0, 2.0, 3.0]]])]
        >>> labels = [np.array([[[0, 0, 1, 1]]])]
        >>> IntensityLookupBaseline(num_bins=4).fit(images, labels).predict(images[0]).tolist()
        [[[0, 0, 1, 1]]]
    """

    def __init__(self, num_bins: int = 128) -> None:
        self.num_bins = num_bins
        self.edges: np.ndarray | None = None
        self.table: np.ndarray | None = None

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> IntensityLookupBaseline:
        """Fit the lookup table on training images and their label maps (same shapes)."""
        values = np.concatenate([_zscore(im).ravel() for im in images])
        targets = np.concatenate([np.asarray(lb).ravel().astype(np.int64) for lb in labels])
        self.edges = np.linspace(values.min(), values.max(), self.num_bins + 1)
        bins = np.clip(np.digitize(values, self.edges[1:-1]), 0, self.num_bins - 1)
        counts = np.zeros((self.num_bins, int(targets.max()) + 1), dtype=np.int64)
        np.add.at(counts, (bins, targets), 1)
        self.table = counts.argmax(axis=1)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Label map of the same shape as ``image``."""
        if self.edges is None or self.table is None:
            raise RuntimeError("call fit() before predict()")
        bins = np.clip(np.digitize(_zscore(image), self.edges[1:-1]), 0, self.num_bins - 1)
        return self.table[bins]
