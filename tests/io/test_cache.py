"""The mmap array cache: round trip, keys, invalidation, atomic concurrent writes."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

from voxelflow.data.cached import compute_class_locations
from voxelflow.errors import DataError, SecurityError
from voxelflow.io.cache import ArrayCache, cache_key, file_identity
from voxelflow.synthetic import make_phantom, phantom_affine


def arrays() -> dict[str, np.ndarray]:
    image, label = make_phantom((12, 10, 8), seed=1)
    return {"image": np.stack([image, image * 2]), "label": label[None]}


def test_round_trip_is_memory_mapped_with_metadata(tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    data = arrays()
    locations = compute_class_locations(data["label"])
    affine = phantom_affine()
    written = cache.write(
        "case1-abc",
        data,
        kinds={"image": "intensity", "label": "label"},
        affine=affine,
        record={"steps": [{"name": "crop"}]},
        class_locations=locations,
    )
    entry = cache.load("case1-abc")
    for loaded in (written, entry):
        assert isinstance(loaded.arrays["image"], np.memmap)
        assert not loaded.arrays["image"].flags.writeable
        np.testing.assert_array_equal(loaded.arrays["image"], data["image"])
        np.testing.assert_array_equal(loaded.arrays["label"], data["label"])
        assert loaded.arrays["label"].dtype == data["label"].dtype
        np.testing.assert_array_equal(loaded.affine, affine)
        assert loaded.record == {"steps": [{"name": "crop"}]}
        assert loaded.kinds == {"image": "intensity", "label": "label"}
        assert sorted(loaded.class_locations) == sorted(locations)
        for value, indices in locations.items():
            np.testing.assert_array_equal(loaded.class_locations[value], indices)
    files = sorted(p.name for p in (tmp_path / "cache" / "case1-abc").iterdir())
    assert files == ["class_locations.npy", "entry.json", "image.npy", "label.npy"]
    meta = json.loads((tmp_path / "cache" / "case1-abc" / "entry.json").read_text())
    assert meta["shapes"]["image"] == [2, 12, 10, 8] and meta["dtypes"]["label"] == "int16"
    assert cache.keys() == ["case1-abc"] and "case1-abc" in cache
    assert not any((tmp_path / "cache" / ".tmp").iterdir())


def test_missing_kind_unsafe_key_and_absent_entry(tmp_path):
    cache = ArrayCache(tmp_path)
    assert cache.load("nothing-here") is None
    with pytest.raises(DataError, match="missing"):
        cache.write("k", arrays(), kinds={"image": "intensity"})
    with pytest.raises(SecurityError):
        cache.write("../escape", arrays(), kinds={"image": "intensity", "label": "label"})


def test_file_identity_changes_with_content_and_key_with_settings(tmp_path):
    path = tmp_path / "image.nii.gz"
    path.write_bytes(b"abc")
    first = file_identity(path)
    assert first["path"] == str(path.resolve()) and first["size"] == 3
    assert cache_key("s", first, {"spacing": [1, 1, 1]}) == cache_key(
        "s", first, {"spacing": [1, 1, 1]}
    )
    assert cache_key("s", first, {"spacing": [1, 1, 1]}) != cache_key(
        "s", first, {"spacing": [2, 1, 1]}
    )
    path.write_bytes(b"abcd")
    os.utime(path, ns=(first["mtime_ns"] + 10**9, first["mtime_ns"] + 10**9))
    second = file_identity(path)
    assert second != first
    assert cache_key("s", first) != cache_key("s", second)
    assert cache_key("sub ject/../x", first).startswith("sub_ject_.._x-")
    with pytest.raises(DataError, match="existing input file"):
        file_identity(tmp_path / "missing.nii")


def test_corrupt_entry_is_dropped_and_prune_keeps_listed(tmp_path):
    cache = ArrayCache(tmp_path)
    kinds = {"image": "intensity", "label": "label"}
    cache.write("a", arrays(), kinds=kinds)
    cache.write("b", arrays(), kinds=kinds)
    (tmp_path / "a" / "image.npy").write_bytes(b"not numpy")
    assert cache.load("a") is None
    assert not (tmp_path / "a").exists()
    cache.write("c", arrays(), kinds=kinds)
    interrupted = tmp_path / ".tmp" / "c.deadbeef"
    interrupted.mkdir()
    (tmp_path / ".tmp" / "c.running").mkdir()
    os.utime(interrupted, (time.time() - 7200, time.time() - 7200))
    assert cache.prune(["c"]) == ["b"]
    assert cache.keys() == ["c"]
    assert sorted(p.name for p in (tmp_path / ".tmp").iterdir()) == ["c.running"]


def _write_in_process(root: str, barrier_path: str) -> str:
    while not os.path.exists(barrier_path):  # start both writers together
        time.sleep(0.001)
    entry = ArrayCache(root).write(
        "shared", arrays(), kinds={"image": "intensity", "label": "label"}
    )
    return str(entry.folder)


def test_two_processes_building_the_same_entry(tmp_path):
    barrier = tmp_path / "go"
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        results = [
            pool.apply_async(_write_in_process, (str(tmp_path / "c"), str(barrier)))
            for _ in range(2)
        ]
        time.sleep(0.2)
        barrier.touch()
        folders = [r.get(timeout=30) for r in results]
    assert folders[0] == folders[1]
    entry = ArrayCache(tmp_path / "c").load("shared")
    np.testing.assert_array_equal(entry.arrays["image"], arrays()["image"])
    assert not any((tmp_path / "c" / ".tmp").iterdir())


def test_many_threads_writing_and_reading_concurrently(tmp_path):
    cache = ArrayCache(tmp_path)
    errors: list[BaseException] = []
    expected = arrays()

    def work() -> None:
        try:
            entry = cache.load("t") or cache.write(
                "t", expected, kinds={"image": "intensity", "label": "label"}
            )
            np.testing.assert_array_equal(entry.arrays["label"], expected["label"])
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.keys() == ["t"]
