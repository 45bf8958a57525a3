"""Run folder reliability: one training per folder, SIGTERM/SIGINT save, damaged checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from voxelflow.engine.checkpoint import CheckpointManager, load_checkpoint
from voxelflow.engine.logging import read_scalars
from voxelflow.engine.run_dir import RunFolderBusyError, RunLock
from voxelflow.errors import ConfigError

TOYS = Path(__file__).parents[1] / "engine"

SCRIPT = textwrap.dedent(
    """
    import sys
    from engine_toys import ToyData, ToyRegression, tiny_net
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.engine.trainer import Trainer, TrainerOptions

    run_dir, iterations = sys.argv[1], int(sys.argv[2])
    options = TrainerOptions(max_iterations=iterations, checkpoint_every=10_000, log_every=1,
                             validate_every=0, progress=False, tensorboard=False, seed=5)
    app = ToyRegression(tiny_net(dropout=0.3))
    Trainer(app, ToyData(2), run_dir=run_dir, options=options,
            optimization=OptimizationSettings("sgd", {"lr": 0.05}, "constant", {}, iterations),
            device="cpu").fit()
    """
)


def _command(script: Path, run_dir: Path, iterations: int) -> list[str]:
    return [sys.executable, str(script), str(run_dir), str(iterations)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TOYS), "OMP_NUM_THREADS": "1"}


def _losses(run_dir: Path) -> dict[int, float]:
    rows = read_scalars(run_dir / "scalars.csv")
    return {step: value for step, name, value in rows if name == "train/loss"}


def test_second_lock_on_a_run_folder_fails_naming_folder_and_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from voxelflow.engine.run_dir import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusyError) as caught:
            RunLock(tmp_path).acquire()
        assert isinstance(caught.value, ConfigError)  # exit code 2 through the CLI
        assert str(tmp_path) in str(caught.value) and f"pid {holder.pid}" in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead process's lock: the folder is free again
    lock = RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_resume_matches(tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    straight = tmp_path / "straight"
    assert subprocess.run(_command(script, straight, 40), env=_env(), timeout=120).returncode == 0
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        _command(script, stopped, 100_000), env=_env(), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (stopped / "scalars.csv").is_file() or not _losses(stopped):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    # a second training on the same folder is refused at once
    second = subprocess.run(
        _command(script, stopped, 100_000), env=_env(), capture_output=True, text=True, timeout=60
    )
    assert second.returncode != 0 and "in use by another training" in second.stderr
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "SIGTERM received" in stderr
    last = CheckpointManager(stopped / "checkpoints").last_path()
    assert last is not None
    step = int(load_checkpoint(last)["step"])
    assert step >= 1 and max(_losses(stopped)) == step
    if step < 40:
        assert (
            subprocess.run(_command(script, stopped, 40), env=_env(), timeout=120).returncode == 0
        )
        assert _losses(stopped) == _losses(straight)


def test_truncated_latest_checkpoint_falls_back_and_is_renamed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sys.path.insert(0, str(TOYS))
    from engine_toys import ToyData, ToyRegression, tiny_net

    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.engine.trainer import Trainer, TrainerOptions

    def trainer(iterations: int) -> Trainer:
        options = TrainerOptions(
            max_iterations=iterations, checkpoint_every=2, keep_last=3, log_every=1,
            validate_every=0, progress=False, tensorboard=False, seed=5,
        )  # fmt: skip
        return Trainer(
            ToyRegression(tiny_net()), ToyData(2), run_dir=tmp_path, options=options,
            optimization=OptimizationSettings("sgd", {"lr": 0.05}, "constant", {}, 8),
            device="cpu",
        )  # fmt: skip

    trainer(4).fit()
    checkpoints = tmp_path / "checkpoints"
    latest = checkpoints / "step_00000004.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        resumed = trainer(6)
        resumed.fit()
    text = caplog.text
    assert "damaged" in text and "weights_only" not in text
    assert "step_00000004.pt" in text and "step_00000002.pt" in text
    assert (checkpoints / "step_00000004.pt.damaged").is_file()
    assert int(torch.load(checkpoints / "step_00000006.pt", weights_only=True)["step"]) == 6
