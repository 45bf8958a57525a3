"""SubjectView is a Sequence of the dataset's subjects at the chosen rows."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

from voxelflow.engine.run import SubjectView


def test_subject_view_indexes_slices_and_iterates_the_chosen_rows() -> None:
    rows = ["s0", "s1", "s2", "s3"]  # stands for a PreprocessedDataset: indexable by row
    view = SubjectView(rows, [3, 1, 2])
    assert isinstance(view, Sequence)
    assert len(view) == 3
    assert view[0] == "s3" and view[-1] == "s2"
    assert view[1:] == ["s1", "s2"]
    assert list(view) == ["s3", "s1", "s2"] and "s1" in view and "s0" not in view
    assert list(pickle.loads(pickle.dumps(view))) == ["s3", "s1", "s2"]
