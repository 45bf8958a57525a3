"""A DataLoader worker that died (killed, out of memory): one clear error instead of a traceback.

PyTorch notices a dead worker either through its SIGCHLD handler ("DataLoader worker (pid 123)
is killed by signal: Killed.") or when a batch does not come ("DataLoader worker (pid(s) 123)
exited unexpectedly"); both are ``RuntimeError``\\ s, raised in the main process. The trainer
turns them into a :class:`~voxelflow.errors.DataError` naming the worker's pid, its index and,
for a :class:`~voxelflow.sampling.queue.PatchQueue`, the subjects of its shard: the subjects it
was loading are the first suspects (a huge file, a corrupt cache entry).

Example:
    >>> error = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
    >>> worker_pids(error)
    [4242]
"""

from __future__ import annotations

import contextlib
import re

from voxelflow.errors import DataError

_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\)(.*)", re.DOTALL)


def worker_pids(error: BaseException) -> list[int]:
    """The pids named by PyTorch's dead-worker ``RuntimeError``; empty for any other error."""
    if not isinstance(error, RuntimeError):
        return []
    match = _WORKER_DIED.search(str(error))
    if match is None:
        return []
    return [int(pid) for pid in re.findall(r"\d+", match.group(1))]


def _subject_name(subjects: object, index: int) -> str:
    """A subject's name without loading it (a view over a dataset's rows), else its index."""
    dataset, indices = getattr(subjects, "dataset", None), getattr(subjects, "indices", None)
    rows = getattr(dataset, "rows", None)
    if rows is not None and indices is not None:
        return str(rows[indices[index]].name)
    return f"#{index}"


def _shard_subjects(loader: object, worker: int, *, rank: int, world_size: int) -> list[str]:
    """The subjects of one worker's shard this epoch (empty when the loader cannot say)."""
    queue = getattr(loader, "dataset", None)
    workers = int(getattr(loader, "num_workers", 0) or 0)
    if queue is None or workers < 1 or not hasattr(queue, "shard_subjects"):
        return []
    shard, shards = rank * workers + worker, world_size * workers
    indices = queue.shard_subjects(int(getattr(queue, "epoch", 0)), shard, shards)
    return [_subject_name(queue.subjects, i) for i in indices]


def dead_worker_error(
    error: BaseException, loader: object, *, rank: int = 0, world_size: int = 1, step: int = 0
) -> DataError | None:
    """A :class:`DataError` describing the dead worker(s) of ``loader``, or None if ``error``
    is something else.

    Args:
        error: the exception raised while training.
        loader: the training DataLoader (its persistent iterator maps pids to worker indices).
        rank, world_size: this process's place under ``torchrun``, for the shard.
        step: the iteration reached, for the message.

    Returns:
        e.g. ``training data: DataLoader worker 1 (pid 4242, shard of subjects s0, s2) died
        (killed by signal: Killed) at iteration 57; training stopped ...``.
    """
    pids = worker_pids(error)
    if not pids:
        return None
    match = _WORKER_DIED.search(str(error))
    how = match.group(2).strip(" .") if match else ""
    how = how.removeprefix("is ") or "exited unexpectedly"
    iterator = getattr(loader, "_iterator", None)  # kept by persistent_workers=True
    workers = [getattr(p, "pid", None) for p in getattr(iterator, "_workers", [])]
    parts = []
    for pid in pids:
        if pid not in workers:
            parts.append(f"DataLoader worker (pid {pid})")
            continue
        worker = workers.index(pid)
        names = _shard_subjects(loader, worker, rank=rank, world_size=world_size)
        shard = f", shard of subjects {', '.join(names)}" if names else ""
        parts.append(f"DataLoader worker {worker} (pid {pid}{shard})")
    return DataError(
        f"training data: {'; '.join(parts)} died ({how}) at iteration {step}; training "
        "stopped (the kernel kills a worker when memory runs out: lower training.num_workers or "
        "sampling.queue_length); run the same command again to resume from the last checkpoint"
    )


def stop_workers(loader: object) -> None:
    """Shut down the workers of a DataLoader's persistent iterator, after one of them died.

    PyTorch's SIGCHLD handler would otherwise raise the same error again in the main process at
    the next signal, e.g. while the run's logs are being closed.
    """
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is None:
        return
    with contextlib.suppress(Exception):  # best effort while failing; the cause is reported
        shutdown()
