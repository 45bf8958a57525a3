"""A DataLoader worker killed under load: training stops with one line naming it, never hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from voxelflow.engine.dead_workers import dead_worker_error, worker_pids
from voxelflow.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_config_faults_cli import _config, _dataset

# fills the page cache (a file written and read again and again) and keeps one core busy;
# niced, so that on a small shared machine it slows the training down without starving it
LOAD = textwrap.dedent(
    """
    import os, sys, time
    os.nice(10)
    path = sys.argv[1]
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(64):
            handle.write(block)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        with open(path, "rb") as handle:
            while handle.read(1 << 22):
                sum(range(20_000))
    """
)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_the_error_names_pid_worker_and_shard_subjects() -> None:
    class Row:
        def __init__(self, name: str) -> None:
            self.name = name

    class View:  # like engine.run.SubjectView: names without loading
        dataset = type("D", (), {"rows": [Row("a"), Row("b"), Row("c"), Row("d")]})()
        indices = (0, 1, 2, 3)

    class Queue:
        subjects, epoch = View(), 0

        def shard_subjects(self, epoch: int, shard: int, shards: int) -> list[int]:
            return list(range(4))[shard::shards]

    class Worker:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    loader = type("L", (), {"dataset": Queue(), "num_workers": 2})()
    loader._iterator = type("I", (), {"_workers": [Worker(11), Worker(22)]})()
    error = RuntimeError("DataLoader worker (pid 22) is killed by signal: Killed. ")
    failure = dead_worker_error(error, loader, step=7)
    assert isinstance(failure, DataError)
    assert str(failure).startswith(
        "training data: DataLoader worker 1 (pid 22, shard of subjects b, d) died "
        "(killed by signal: Killed) at iteration 7; training stopped"
    )
    late = RuntimeError("DataLoader worker (pid(s) 11, 33) exited unexpectedly")
    assert worker_pids(late) == [11, 33]
    text = str(dead_worker_error(late, loader))
    assert "worker 0 (pid 11, shard of subjects a, c)" in text and "(pid 33)" in text
    assert dead_worker_error(RuntimeError("CUDA out of memory"), loader) is None


@pytest.mark.slow
def test_killed_worker_under_load_stops_training_naming_it(tmp_path: Path) -> None:
    table = _dataset(tmp_path / "data", with_labels=True)
    training = {"max_iterations": 100_000, "batch_size": 1, "num_workers": 2,
                "checkpoint_every": 50, "log_every": 1}  # fmt: skip
    config = _config(tmp_path, table, training=training)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(tmp_path / "cache_filler.bin")])
    started = time.monotonic()
    train = subprocess.Popen(
        [sys.executable, "-m", "voxelflow", "train", "-c", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        scalars = tmp_path / "run" / "scalars.csv"
        workers: list[int] = []
        while len(workers) < 2 or not scalars.is_file() or scalars.stat().st_size < 200:
            assert train.poll() is None, train.communicate()[1]
            # generous: CI runs this beside another pytest worker on 2 cores
            assert time.monotonic() - started < 90, "training did not start within 90 s"
            time.sleep(0.1)
            own = _cmdline(train.pid)
            workers = [c for c in _children(train.pid) if _cmdline(c) == own]
        victim = workers[-1]
        os.kill(victim, signal.SIGKILL)
        _, stderr = train.communicate(timeout=30)  # never hangs: 2 minutes at most in all
    finally:
        for process in (train, load):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert train.returncode == 1, stderr
    assert f"(pid {victim}, shard of subjects " in stderr and "died (" in stderr
    assert "Traceback" not in stderr
