"""The patch queue: sharding over workers and ranks, shuffling, resume and worker errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sampling_fixtures import make_subject
from torch.utils.data import DataLoader

from voxelflow.errors import ConfigError, DataError
from voxelflow.sampling import PatchQueue, UniformSampler
from voxelflow.transforms.compose import build_augmentation


class LazySubjects:
    """Indexable, lazily loading subjects (like the cache); can fail on one index."""

    def __init__(self, count: int, *, broken: int | None = None) -> None:
        self.count, self.broken = count, broken

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        subject = make_subject(f"s{index}", shape=(12, 10, 8), seed=index)
        if index == self.broken:
            subject.arrays["image"] = np.ones(
                (1, 3, 3, 3), np.float32
            )  # wrong shape: sampling fails
        return subject


def _subjects_seen(loader) -> Counter:
    return Counter(name for batch in loader for name in batch["subject"])


@pytest.mark.parametrize("workers", [0, 2])
def test_each_subject_sampled_once_per_epoch(workers):
    queue = PatchQueue(
        LazySubjects(7),
        UniformSampler((4, 4, 4), windows_per_subject=2),
        infinite=False,
        queue_length=5,
    )
    seen = _subjects_seen(DataLoader(queue, batch_size=3, num_workers=workers))
    assert seen == Counter({f"s{i}": 2 for i in range(7)})


def test_ranks_partition_subjects():
    sampler = UniformSampler((4, 4, 4))
    seen = [
        _subjects_seen(
            DataLoader(
                PatchQueue(LazySubjects(9), sampler, rank=r, world_size=3, infinite=False),
                batch_size=2,
            )
        )
        for r in range(3)
    ]
    names = [set(s) for s in seen]
    assert set.union(*names) == {f"s{i}" for i in range(9)} and sum(map(len, names)) == 9


def test_shuffled_and_deterministic_under_seed():
    sampler = UniformSampler((4, 4, 4), windows_per_subject=3)

    def stream(seed, epoch=0):
        queue = PatchQueue(LazySubjects(5), sampler, seed=seed, infinite=False, queue_length=8)
        queue.set_epoch(epoch)
        return [(w["subject"], tuple(w["location"].tolist())) for w in queue]

    assert stream(1) == stream(1)
    assert stream(1) != stream(2) and stream(1) != stream(1, epoch=1)
    names = [n for n, _ in stream(1)]
    assert names != sorted(names)  # windows of different subjects are mixed


def test_resume_skips_consumed_windows():
    sampler = UniformSampler((4, 4, 4), windows_per_subject=2)
    queue = PatchQueue(LazySubjects(4), sampler, seed=3, queue_length=4)
    iterator = iter(queue)
    full = [tuple(next(iterator)["location"].tolist()) for _ in range(12)]
    state = {"seed": 3, "epoch": 0, "windows_consumed": 5}
    resumed = PatchQueue(LazySubjects(4), sampler, queue_length=4)
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert [tuple(next(again)["location"].tolist()) for _ in range(7)] == full[5:]
    assert queue.state_dict()["windows_consumed"] == 4  # 12 windows = one epoch of 8, then 4 more


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_error_names_subject_with_traceback(workers):
    queue = PatchQueue(LazySubjects(4, broken=2), UniformSampler((4, 4, 4)), infinite=False)
    with pytest.raises(
        Exception, match=r"(?s)failed to sample subject 's2'.*Original traceback"
    ) as info:
        list(DataLoader(queue, batch_size=1, num_workers=workers))
    if workers == 0:
        assert isinstance(info.value, DataError)


def test_queue_with_augmentation_collates_batches():
    aug = build_augmentation(
        [{"name": "flip"}, {"name": "affine", "rotation": 10}, {"name": "gamma", "p": 0.5}]
    )
    queue = PatchQueue(
        LazySubjects(3),
        UniformSampler((6, 6, 4), windows_per_subject=2),
        transform=aug,
        infinite=False,
    )
    batch = next(iter(DataLoader(queue, batch_size=4)))
    assert batch["image"].shape == (4, 1, 6, 6, 4) and batch["label"].dtype == torch.uint8
    assert batch["location"].shape == (4, 3)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="rank"):
        PatchQueue(LazySubjects(2), UniformSampler((4, 4, 4)), rank=2, world_size=2)
    with pytest.raises(ConfigError, match="queue_length"):
        PatchQueue(LazySubjects(2), UniformSampler((4, 4, 4)), queue_length=0)


def test_queue_accepts_a_list_of_transforms():
    from voxelflow.transforms.spatial import RandomFlip

    subjects = LazySubjects(2)
    queue = PatchQueue(
        subjects,
        UniformSampler((4, 4, 4)),
        transform=[RandomFlip(flip_probability=1.0)],
        infinite=False,
    )
    for window in queue:
        x, y, z = window["location"].tolist()
        raw = torch.from_numpy(np.asarray(subjects[int(window["subject"][1:])].arrays["image"]))
        torch.testing.assert_close(
            window["image"], torch.flip(raw[:, x : x + 4, y : y + 4, z : z + 4], (1, 2, 3))
        )
