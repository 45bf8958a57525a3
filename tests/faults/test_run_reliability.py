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
    from voxelflow.config.schema import TrainingConfig
    from voxelflow.engine.trainer import Trainer

    run_dir, iterations = sys.argv[1], int(sys.argv[2])
    options = TrainingConfig(max_iterations=iterations, checkpoint_every=10_000, log_every=1,
                             validate_every=0, seed=5)
    app = ToyRegression(tiny_net(dropout=0.3))
    Trainer(app, ToyData(2), run_dir=run_dir, training=options, progress=False, tensorboard=False,
            optimization=OptimizationSettings("sgd", {"lr": 0.05}, "constant", {}, iterations),
            device="cpu").fit()
    """
)


def _command(script: Path, run_dir: Path, iterations: int) -> list[str]:
    return [sys.executable, str(script), str(run_dir), str(iterations)]


def _env() -> dict[str, str]:
    # the caller's PYTHONPATH kept after the toys: the child imports the voxelflow under test
    path = os.pathsep.join(filter(None, [str(TOYS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


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
    from voxelflow.config.schema import TrainingConfig
    from voxelflow.engine.trainer import Trainer

    def trainer(iterations: int) -> Trainer:
        options = TrainingConfig(
            max_iterations=iterations, checkpoint_every=2, keep_last=3, log_every=1,
            validate_every=0, seed=5,
        )  # fmt: skip
        return Trainer(
            ToyRegression(tiny_net()), ToyData(2), run_dir=tmp_path, training=options,
            progress=False, tensorboard=False,
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


def _wait_for_losses(run_dir: Path, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not (run_dir / "scalars.csv").is_file() or not _losses(run_dir):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)


@pytest.mark.slow
def test_sigint_saves_the_current_step_and_exits_130(tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        _command(script, run_dir, 100_000), env=_env(), stderr=subprocess.PIPE, text=True
    )
    _wait_for_losses(run_dir, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "SIGINT received" in stderr and "KeyboardInterrupt" not in stderr
    last = CheckpointManager(run_dir / "checkpoints").last_path()
    assert last is not None
    step = int(load_checkpoint(last)["step"])
    assert step >= 1 and max(_losses(run_dir)) == step
    assert f"checkpoint of iteration {step} written to {last}" in stderr


def test_every_checkpoint_damaged_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_config_faults_cli import _config, _dataset

    from voxelflow.cli.main import main

    table = _dataset(tmp_path / "data", with_labels=True)
    training = {"max_iterations": 2, "checkpoint_every": 1, "keep_last": 2, "batch_size": 1,
                "num_workers": 0}  # fmt: skip
    assert main(["train", "-c", str(_config(tmp_path, table, training=training))]) == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in checkpoints.glob("step_*.pt"))
    assert names == ["step_00000001.pt", "step_00000002.pt"]
    for name in names:
        data = (checkpoints / name).read_bytes()
        (checkpoints / name).write_bytes(data[: len(data) // 3])
    capsys.readouterr()
    longer = {**training, "max_iterations": 4}
    code = main(["train", "-c", str(_config(tmp_path, table, training=longer))])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"{checkpoints}: every checkpoint is damaged (step_00000002.pt, step_00000001.pt)" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert sorted(p.name for p in checkpoints.glob("step_*")) == [n + ".damaged" for n in names]


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    from engine_toys import ToyData, ToyRegression, tiny_net
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.engine import distributed
    from voxelflow.config.schema import TrainingConfig
    from voxelflow.engine.trainer import Trainer

    run_dir = sys.argv[1]
    context = distributed.init_distributed(backend="gloo")
    options = TrainingConfig(max_iterations=100_000, checkpoint_every=10_000, log_every=1,
                             validate_every=0, seed=5)
    trainer = Trainer(ToyRegression(tiny_net()), ToyData(2, seed=context.rank), run_dir=run_dir,
                      training=options, device="cpu", progress=False, tensorboard=False,
                      optimization=OptimizationSettings("sgd", {"lr": 0.01}, "constant", {},
                                                        100_000))
    try:
        trainer.fit()
    except SystemExit:
        print(f"rank {context.rank} stopped at {trainer.step}", flush=True)
        raise
    """
)


@pytest.mark.slow
def test_under_ddp_a_signal_to_one_rank_stops_every_rank_and_rank_0_saves(tmp_path: Path) -> None:
    import socket

    script = tmp_path / "ddp_script.py"
    script.write_text(DDP_SCRIPT)
    run_dir = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = []
    for rank in range(2):
        env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}  # fmt: skip
        ranks.append(subprocess.Popen(
            [sys.executable, str(script), str(run_dir)], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "scalars.csv").is_file() or not _losses(run_dir):
            if time.monotonic() > deadline or any(p.poll() is not None for p in ranks):
                pytest.fail(f"training did not start: {[p.poll() for p in ranks]}")
            time.sleep(0.05)
        ranks[1].send_signal(signal.SIGTERM)  # the signal reaches rank 1 only
        outputs = [process.communicate(timeout=120) for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [p.returncode for p in ranks] == [143, 143], outputs
    steps = {int(out.strip().split()[-1]) for out, _ in outputs}
    last = CheckpointManager(run_dir / "checkpoints").last_path()
    assert last is not None
    assert len(steps) == 1 and int(load_checkpoint(last)["step"]) == steps.pop()
    assert "SIGTERM received" in outputs[0][1] and "SIGTERM received" not in outputs[1][1]
