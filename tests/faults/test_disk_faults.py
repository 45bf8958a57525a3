"""A failing disk at `voxelflow train` / `infer`: one line naming the file, exit 1, nothing lost.

CI runs as root, where ``chmod`` cannot make a folder read-only, so the faults are injected at
the writer: the ``OSError`` a read-only file system (EROFS), a full disk (ENOSPC) or a missing
permission (EACCES) would raise is raised where voxelflow writes.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from voxelflow.cli.main import main
from voxelflow.engine import checkpoint as checkpoint_module
from voxelflow.engine.checkpoint import CheckpointManager, load_checkpoint
from voxelflow.io import writers as writers_module

sys.path.insert(0, str(Path(__file__).parent))
from test_config_faults_cli import _config, _dataset


def _os_error(code: int, path: object = None) -> OSError:
    import os

    return OSError(code, os.strerror(code), None if path is None else str(path))


def _train_config(tmp_path: Path, **training: object) -> Path:
    table = _dataset(tmp_path / "data", with_labels=True)
    settings = {"max_iterations": 1, "batch_size": 1, "num_workers": 0, **training}
    split = {"validation": 0.0, "test": 0.34}  # one test subject for `voxelflow infer`
    return _config(tmp_path, table, training=settings, split=split, inference={"window": [8, 8, 8]})


def test_read_only_run_folder_is_named_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _train_config(tmp_path)
    run = tmp_path / "run"
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if self == run or run in self.parents:
            raise _os_error(errno.EROFS, self)
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    code = main(["train", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"cannot create system.run_dir {str(run)!r}: read-only file system" in err
    assert "Traceback" not in err and not run.exists()


def test_permission_denied_on_the_run_config_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _train_config(tmp_path)

    def denied(*args: object, **kwargs: object) -> tuple[int, str]:
        raise _os_error(errno.EACCES)

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", denied)
    code = main(["train", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert (
        f"cannot write run config {str(tmp_path / 'run' / 'config.yaml')!r}: permission denied"
        in err
    )
    assert "Traceback" not in err


def test_disk_full_while_checkpointing_keeps_the_previous_one_and_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _train_config(tmp_path, max_iterations=3, checkpoint_every=1, keep_last=3)
    real_save = torch.save
    calls = {"count": 0}

    def full_on_second(obj: object, stream: object, *args: object, **kwargs: object) -> None:
        calls["count"] += 1
        if calls["count"] == 2:
            stream.write(b"half a checkpoint")  # type: ignore[attr-defined]
            raise _os_error(errno.ENOSPC)
        real_save(obj, stream, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint_module.torch, "save", full_on_second)
    code = main(["train", "-c", str(config)])
    err = capsys.readouterr().err
    checkpoints = tmp_path / "run" / "checkpoints"
    assert code == 1, err
    assert (
        f"cannot write checkpoint {str(checkpoints / 'step_00000002.pt')!r}: no space left on "
        "device; previous checkpoint step_00000001.pt intact; free space and rerun"
    ) in err
    assert "Traceback" not in err
    assert sorted(p.name for p in checkpoints.iterdir()) == ["index.json", "step_00000001.pt"]
    assert load_checkpoint(checkpoints / "step_00000001.pt")["step"] == 1
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)  # space freed
    assert main(["train", "-c", str(config)]) == 0
    last = CheckpointManager(checkpoints).last_path()
    assert last is not None and load_checkpoint(last)["step"] == 3


def test_disk_full_while_writing_a_prediction_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _train_config(tmp_path)
    assert main(["train", "-c", str(config)]) == 0
    capsys.readouterr()

    def full(image: object, filename: str) -> None:
        Path(filename).write_bytes(b"half an image")
        raise _os_error(errno.ENOSPC)

    monkeypatch.setattr(writers_module.nib, "save", full)
    code = main(["infer", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 1, err
    predictions = tmp_path / "run" / "predictions"
    assert (
        f"cannot write image {str(predictions / 's2_seg.nii.gz')!r}: no space left on device" in err
    )
    assert "no existing file was replaced; free space and rerun" in err
    assert "Traceback" not in err
    # nothing half-written is left under a final name, nor a temporary folder
    assert not [p for p in predictions.rglob("*") if p.is_file()]


def test_a_second_training_does_not_touch_the_first_ones_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _train_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    first = yaml.safe_dump({"written": "by the first training"})
    (run / "config.yaml").write_text(first)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from voxelflow.engine.run_dir import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = main(["train", "-c", str(config)])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2, err
    assert "in use by another training" in err and f"pid {holder.pid}" in err
    assert (run / "config.yaml").read_text() == first
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml"]


def test_disk_full_at_any_other_write_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxelflow.engine.logging import RunLogger

    config = _train_config(tmp_path)
    scalars = tmp_path / "run" / "scalars.csv"

    def full(self: object, *args: object, **kwargs: object) -> None:
        raise _os_error(errno.ENOSPC, scalars)

    monkeypatch.setattr(RunLogger, "log_scalars", full)
    code = main(["train", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"cannot write {str(scalars)!r}: no space left on device; free space and rerun" in err
    assert "Traceback" not in err
