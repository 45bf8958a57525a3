"""Choice of PyTorch's intra-op thread count from the cores available to the process."""

from __future__ import annotations

import os


def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` text ("quota period"); None when unlimited."""
    parts = text.split()
    if len(parts) < 1 or parts[0] == "max":
        return None
    period = float(parts[1]) if len(parts) > 1 else 100000.0
    quota = float(parts[0])
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """Cores allowed by cgroup v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``; None when unlimited."""
    quota, period = float(quota_text.strip()), float(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def available_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """Cores the process may use: affinity limited by a cgroup quota, at least 1."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = affinity if quota is None else min(affinity, int(quota))
    return max(1, cores)


def main_threads(cores: int, num_workers: int) -> int:
    """Threads of the main process: cores left after one per DataLoader worker, at least 1."""
    return max(1, cores - num_workers)
