"""How many threads PyTorch uses: chosen from the cores actually available to the process.

PyTorch starts one intra-op thread per *visible* core (``os.cpu_count()``), even when the
process is pinned to fewer cores (``taskset``, Slurm, Kubernetes) or limited by a cgroup CPU
quota (Docker ``--cpus``), and every DataLoader worker competes for the same cores. On a shared
2-core machine this oversubscription made the demo ~7× slower than ``OMP_NUM_THREADS=1``.

The rule (:func:`choose_threads`), in order of precedence:

1. ``system.threads`` in the config: used as given (a warning when above the available cores);
2. ``OMP_NUM_THREADS`` in the environment: used as given (the user's own choice);
3. automatic: ``max(1, cores - workers)`` (``cores // LOCAL_WORLD_SIZE - workers`` under
   ``torchrun``, whose ranks on one machine share its cores) where ``cores`` is the smallest of
   the affinity mask, the cgroup v2 ``cpu.max`` quota and the cgroup v1 CFS quota (floored: a
   thread beyond a fractional quota is throttled, and a throttled thread stalls every other
   thread of a parallel op at its barrier). Each DataLoader worker is one busy process, so it gets a core
   and one thread (:func:`worker_init`); the training process gets the rest.

:func:`worker_init` is the DataLoader ``worker_init_fn``: one intra-op thread per worker and
SIGINT ignored there, so Ctrl-C reaches the training process once (it saves a checkpoint and
exits 130) instead of every worker printing a ``KeyboardInterrupt`` traceback.

Example:
    >>> choice = choose_threads(None, workers=1, cores=CoreCount(4, "affinity"), environ={})
    >>> choice.threads, choice.source
    (3, 'auto')
    >>> choose_threads(2, workers=1, cores=CoreCount(4, "affinity"), environ={}).source
    'config'
"""

from __future__ import annotations

import logging
import math
import os
import signal
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from voxelflow.errors import ConfigError

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CoreCount:
    """Cores the process may use and what limited them.

    Attributes:
        cores: whole cores available (at least 1).
        limit: ``"affinity"``, ``"cgroup v2 cpu.max"``, ``"cgroup v1 cfs quota"`` or
            ``"cpu_count"`` (no affinity API on this platform).
    """

    cores: int
    limit: str


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count of the main process and why.

    Attributes:
        threads: ``torch.set_num_threads`` value of the training/inference process.
        workers: DataLoader worker processes (one thread each).
        cores: the available cores.
        source: ``"config"`` (system.threads), ``"env"`` (OMP_NUM_THREADS) or ``"auto"``.
        reason: one line for logs and ``voxelflow profile``.
    """

    threads: int
    workers: int
    cores: CoreCount
    source: str
    reason: str

    def describe(self) -> str:
        """``threads: 1 in the main process + 1 in each of 1 DataLoader worker(s) (auto: ...)``."""
        workers = f" + 1 in each of {self.workers} DataLoader worker(s)" if self.workers > 0 else ""
        return f"threads: {self.threads} in the main process{workers} ({self.reason})"


# --- cores ----------------------------------------------------------------------------------------
def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` text (``"quota period"``); None when unlimited.

    Example:
        >>> parse_cpu_max("150000 100000"), parse_cpu_max("max 100000")
        (1.5, None)
    """
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """Cores allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None when unlimited.

    Example:
        >>> parse_cfs("200000", "100000"), parse_cfs("-1", "100000")
        (2.0, None)
    """
    try:
        quota, period = float(quota_text.strip()), float(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _ancestors(root: Path, relative: str) -> list[Path]:
    """``root/a/b``, ``root/a``, ``root``: a quota on any ancestor cgroup limits the process."""
    parts = [p for p in relative.strip().split("/") if p]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def cgroup_quota(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> tuple[float, str] | None:
    """The tightest CPU quota (cores, may be fractional) of the process's cgroup, or None.

    Reads ``/proc/self/cgroup`` for the process's cgroup path, then ``cpu.max`` (cgroup v2) or
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (cgroup v1, in the ``cpu`` controller's
    hierarchy) of that cgroup and of each ancestor. Inside a container the path is often ``/``:
    the files at ``root`` are then the container's own limit.

    Args:
        root: the cgroup file-system mount point.
        proc_cgroup: the process's cgroup membership file.

    Returns:
        ``(cores, "cgroup v2 cpu.max" | "cgroup v1 cfs quota")`` or ``None`` when unlimited.
    """
    membership = _read(proc_cgroup) or ""
    quotas: list[tuple[float, str]] = []
    for line in membership.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, relative = fields
        if controllers == "":  # cgroup v2 unified hierarchy: "0::/path"
            for folder in _ancestors(root, relative):
                text = _read(folder / "cpu.max")
                value = parse_cpu_max(text) if text is not None else None
                if value is not None:
                    quotas.append((value, "cgroup v2 cpu.max"))
        elif "cpu" in controllers.split(","):
            mount = next(
                (
                    root / name
                    for name in (controllers, "cpu,cpuacct", "cpu")
                    if (root / name).is_dir()
                ),
                None,
            )
            if mount is None:
                continue
            for folder in _ancestors(mount, relative):
                quota, period = (
                    _read(folder / "cpu.cfs_quota_us"),
                    _read(folder / "cpu.cfs_period_us"),
                )
                value = (
                    parse_cfs(quota, period) if quota is not None and period is not None else None
                )
                if value is not None:
                    quotas.append((value, "cgroup v1 cfs quota"))
    if not membership and _read(root / "cpu.max") is not None:  # no /proc: the mount's own file
        value = parse_cpu_max(_read(root / "cpu.max") or "")
        if value is not None:
            quotas.append((value, "cgroup v2 cpu.max"))
    return min(quotas) if quotas else None


def affinity_cores() -> tuple[int, str]:
    """Cores in the process's affinity mask (``os.cpu_count()`` where there is no such API)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "affinity"
    return os.cpu_count() or 1, "cpu_count"


def available_cores(
    *,
    affinity: int | None = None,
    root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
) -> CoreCount:
    """Cores the process may use: the affinity mask limited by any cgroup CPU quota (floored).

    Args:
        affinity: cores in the affinity mask; None: asked from the OS.
        root: the cgroup mount point (tests pass a folder of fake files).
        proc_cgroup: the membership file (tests pass a fake one).
    """
    count, limit = (affinity, "affinity") if affinity is not None else affinity_cores()
    quota = cgroup_quota(root, proc_cgroup)
    if quota is not None and max(1, math.floor(quota[0])) < count:
        count, limit = math.floor(quota[0]), f"{quota[1]} {quota[0]:g} cores"
    return CoreCount(max(1, int(count)), limit)


# --- the choice -----------------------------------------------------------------------------------
def choose_threads(
    configured: int | None,
    *,
    workers: int,
    cores: CoreCount | None = None,
    environ: Mapping[str, str] | None = None,
) -> ThreadChoice:
    """Main-process intra-op threads: ``system.threads`` > ``OMP_NUM_THREADS`` > automatic.

    Args:
        configured: ``system.threads`` (None: not set).
        workers: DataLoader worker processes next to the main process (0 at inference).
        cores: the available cores; None: :func:`available_cores`.
        environ: the environment (default ``os.environ``).

    Raises:
        ConfigError: ``system.threads`` below 1 (the schema refuses it too; the API may not).

    Warns:
        UserWarning: ``system.threads`` above the available cores (once, naming the key).
    """
    cores = cores if cores is not None else available_cores()
    environ = os.environ if environ is None else environ
    if configured is not None:
        if int(configured) < 1:
            raise ConfigError(
                f"system.threads: expected a number of threads >= 1, got {configured}"
            )
        if configured > cores.cores:
            warnings.warn(
                f"system.threads: {configured} threads but only {cores.cores} cores are available "
                f"({cores.limit}); threads beyond the cores slow every step down",
                UserWarning,
                stacklevel=2,
            )
        return ThreadChoice(
            int(configured), workers, cores, "config", f"system.threads: {configured}"
        )
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        try:
            value = int(omp.split(",")[0])  # OpenMP allows a nesting list "4,2"
        except ValueError:
            value = 0
        if value >= 1:
            return ThreadChoice(value, workers, cores, "env", f"OMP_NUM_THREADS={omp}")
        logger.warning("OMP_NUM_THREADS=%r is not a number of threads; choosing automatically", omp)
    # torchrun starts LOCAL_WORLD_SIZE training processes on this machine: they share the cores
    processes = _local_processes(environ)
    share = max(1, cores.cores // processes)
    threads = max(1, share - workers)
    plural = "worker" if workers == 1 else "workers"
    reason = f"auto: {cores.cores} cores ({cores.limit}) - {workers} DataLoader {plural}"
    if processes > 1:
        reason = (
            f"auto: {cores.cores} cores ({cores.limit}) / {processes} local ranks - "
            f"{workers} DataLoader {plural}"
        )
    return ThreadChoice(threads, workers, cores, "auto", reason)


def _local_processes(environ: Mapping[str, str]) -> int:
    """Training processes on this machine: ``LOCAL_WORLD_SIZE`` under torchrun, else 1."""
    try:
        return max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def apply_threads(configured: int | None, *, workers: int, what: str = "training") -> ThreadChoice:
    """Choose and set the main process's intra-op threads; logged once per call.

    Args:
        configured: ``system.threads`` of the experiment (None: not set).
        workers: DataLoader workers that will run beside this process.
        what: ``"training"``, ``"inference"`` ... for the log line.
    """
    choice = choose_threads(configured, workers=workers)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    _limit_native_pools(choice.threads)
    logger.info("%s %s", what, choice.describe())
    return choice


def _limit_native_pools(threads: int) -> None:
    """Also cap the BLAS/OpenMP pools numpy and scipy loaded (their size was fixed at import,
    from ``OMP_NUM_THREADS`` or the core count), when ``threadpoolctl`` is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: torch's own pool is the one that matters most
        return
    threadpool_limits(limits=threads)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one intra-op thread, SIGINT ignored (the parent handles it).

    Picklable (a module-level function), so it also works with the ``spawn`` start method.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _limit_native_pools(1)
