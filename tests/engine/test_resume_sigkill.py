"""A run killed with SIGKILL and resumed logs the same losses as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voxelflow.engine.logging import read_scalars

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from engine_toys import ToyData, ToyRegression, make_batch, tiny_net
    from voxelflow.applications.base import OptimizationSettings
    from voxelflow.engine.hooks import Hook
    from voxelflow.config.schema import TrainingConfig
    from voxelflow.engine.trainer import Trainer

    run_dir, kill_at, data_kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class KillAt(Hook):
        def on_step_end(self, trainer, batch, losses):
            if trainer.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    class PlainData:  # no state_dict: the trainer replays it, skipping consumed batches
        def __iter__(self):
            return (make_batch(index, 2) for index in range(7))

    data = ToyData(2) if data_kind == "stateful" else PlainData()
    options = TrainingConfig(max_iterations=16, checkpoint_every=4, log_every=1, validate_every=0,
                             seed=5)
    app = ToyRegression(tiny_net(dropout=0.3))
    Trainer(app, data, run_dir=run_dir, training=options, progress=False, tensorboard=False, optimization=OptimizationSettings("sgd", {"lr": 0.05}, "cosine", {}, 16),
            device="cpu", hooks=[KillAt()]).fit()
    """
)


def _run(script: Path, run_dir: Path, kill_at: int, data_kind: str) -> int:
    # the caller's PYTHONPATH kept after the toys: the child imports the voxelflow under test
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(run_dir), str(kill_at), data_kind]
    return subprocess.run(command, env=env, capture_output=True, timeout=120).returncode


@pytest.mark.slow
@pytest.mark.parametrize("data_kind", ["stateful", "replayed"])
def test_sigkill_then_resume_gives_the_same_losses(tmp_path: Path, data_kind: str) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    assert _run(script, tmp_path / "straight", 0, data_kind) == 0
    assert _run(script, tmp_path / "killed", 10, data_kind) == -signal.SIGKILL
    killed_rows = read_scalars(tmp_path / "killed" / "scalars.csv")
    assert max(step for step, _, _ in killed_rows) == 9  # logged past the last checkpoint (8)
    assert _run(script, tmp_path / "killed", 0, data_kind) == 0

    def losses(folder: str) -> dict[int, float]:
        rows = read_scalars(tmp_path / folder / "scalars.csv")
        return {step: value for step, name, value in rows if name == "train/loss"}

    straight, resumed = losses("straight"), losses("killed")
    assert sorted(straight) == list(range(1, 17))
    assert resumed == straight  # bit-identical on the CPU
    learning_rates = [
        v
        for _, name, v in read_scalars(tmp_path / "killed" / "scalars.csv")
        if name == "lr/default"
    ]
    assert learning_rates[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine schedule ran to its end
