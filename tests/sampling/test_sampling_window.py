"""Window resolution, placement and padded reading."""

from __future__ import annotations

import numpy as np
import pytest

from voxelflow.errors import ShapeError
from voxelflow.sampling.window import (
    clamp_centre,
    read_window,
    resolve_window,
    valid_centre_bounds,
    window_start,
)


def test_resolve_window_whole_axis_and_errors():
    assert resolve_window((0, -1, 4), (5, 6, 7)) == (5, 6, 4)
    with pytest.raises(
        ShapeError, match=r"expected a window of 3 sizes.*subject 'x'.*got \(4, 4\)"
    ):
        resolve_window((4, 4), (5, 6, 7), subject="x")
    with pytest.raises(ShapeError, match="expected window sizes >= 1"):
        resolve_window((4, -3, 4), (5, 6, 7))


def test_read_window_inside_matches_slice_and_pads_outside():
    array = np.arange(2 * 5 * 6 * 4, dtype=np.float32).reshape(2, 5, 6, 4)
    np.testing.assert_array_equal(read_window(array, (1, 2, 0), (3, 3, 4)), array[:, 1:4, 2:5, 0:4])
    out = read_window(array, (-2, 4, 1), (4, 4, 5), pad_value=-7.0)
    expected = np.full((2, 4, 4, 5), -7.0, np.float32)
    expected[:, 2:4, 0:2, 0:3] = array[:, 0:2, 4:6, 1:4]
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_read_window_from_memmap_keeps_dtype(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(60, dtype=np.uint8).reshape(1, 3, 4, 5))
    mm = np.load(path, mmap_mode="r")
    out = read_window(mm, (0, 0, 0), (5, 4, 5))  # larger than the image on axis 0: padded
    assert out.dtype == np.uint8 and out.shape == (1, 5, 4, 5)
    assert not isinstance(out, np.memmap) and out.flags.writeable
    inside = read_window(mm, (1, 0, 0), (2, 4, 5))  # a contiguous slice is still copied
    assert inside.flags.writeable and not np.shares_memory(inside, mm)
    np.testing.assert_array_equal(out[:, :3], np.asarray(mm))
    assert (out[:, 3:] == 0).all()


def test_centre_bounds_and_clamp():
    low, high = valid_centre_bounds((4, 10), (10, 6))
    # axis 0: centre = start + 2 for start in [0, 6]; axis 1: window larger -> centred (start -2)
    np.testing.assert_array_equal(low, [2, 3])
    np.testing.assert_array_equal(high, [8, 3])
    np.testing.assert_array_equal(
        window_start(clamp_centre((0, 5), (4, 10), (10, 6)), (4, 10)), [0, -2]
    )
