"""Threads chosen by voxelflow: cores from affinity and cgroup quotas, precedence, workers."""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelflow.config.load import validate_experiment
from voxelflow.engine.threads import (
    CoreCount,
    apply_threads,
    available_cores,
    cgroup_quota,
    choose_threads,
    parse_cfs,
    parse_cpu_max,
    worker_init,
)
from voxelflow.errors import ConfigError
from voxelflow.synthetic import make_phantom, phantom_affine


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_quota_parsers():
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cpu_max("200000") == 2.0  # period defaults to 100 ms
    assert parse_cpu_max("max 100000") is None and parse_cpu_max("") is None
    assert parse_cfs("300000\n", "100000\n") == 3.0
    assert parse_cfs("-1", "100000") is None and parse_cfs("x", "1") is None


def test_cgroup_v2_quota_of_the_process_and_its_ancestors(tmp_path: Path):
    root = tmp_path / "cgroup"
    proc = write(tmp_path / "proc_cgroup", "0::/user.slice/job\n")
    write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    assert cgroup_quota(root, proc) is None
    assert available_cores(affinity=8, root=root, proc_cgroup=proc) == CoreCount(8, "affinity")
    write(root / "user.slice" / "cpu.max", "250000 100000\n")  # the parent limits the child
    assert cgroup_quota(root, proc) == (2.5, "cgroup v2 cpu.max")
    cores = available_cores(affinity=8, root=root, proc_cgroup=proc)
    assert cores.cores == 2 and "cgroup v2" in cores.limit  # floored: 2.5 cores → 2 threads
    write(root / "user.slice" / "job" / "cpu.max", "50000 100000\n")  # half a core: still 1
    assert available_cores(affinity=8, root=root, proc_cgroup=proc).cores == 1
    assert available_cores(affinity=1, root=root, proc_cgroup=proc) == CoreCount(1, "affinity")


def test_cgroup_v2_container_root(tmp_path: Path):
    root = tmp_path / "cgroup"
    proc = write(tmp_path / "proc_cgroup", "0::/\n")
    write(root / "cpu.max", "300000 100000\n")
    assert available_cores(affinity=16, root=root, proc_cgroup=proc).cores == 3


def test_cgroup_v1_cfs_quota(tmp_path: Path):
    root = tmp_path / "cgroup"
    proc = write(
        tmp_path / "proc_cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:cpuset:/\n"
    )
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    write(folder / "cpu.cfs_quota_us", "-1\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(root, proc) is None
    write(folder / "cpu.cfs_quota_us", "200000\n")
    assert cgroup_quota(root, proc) == (2.0, "cgroup v1 cfs quota")
    assert available_cores(affinity=4, root=root, proc_cgroup=proc).cores == 2


def test_no_cgroup_files_means_affinity(tmp_path: Path):
    proc = write(tmp_path / "proc_cgroup", "0::/\n")
    assert available_cores(affinity=6, root=tmp_path / "none", proc_cgroup=proc).cores == 6
    real = available_cores()  # this machine: at least one core, at most the visible ones
    assert 1 <= real.cores <= (os.cpu_count() or 1)


def test_automatic_choice_leaves_a_core_per_worker():
    four = CoreCount(4, "affinity")
    assert choose_threads(None, workers=0, cores=four, environ={}).threads == 4
    assert choose_threads(None, workers=2, cores=four, environ={}).threads == 2
    choice = choose_threads(None, workers=6, cores=four, environ={})
    assert choice.threads == 1 and choice.source == "auto"
    assert "4 cores (affinity) - 6 DataLoader workers" in choice.reason


def test_torchrun_ranks_on_one_machine_share_its_cores():
    eight = CoreCount(8, "affinity")
    choice = choose_threads(None, workers=2, cores=eight, environ={"LOCAL_WORLD_SIZE": "2"})
    assert choice.threads == 2 and "/ 2 local ranks" in choice.reason  # 8 / 2 ranks - 2 workers
    assert (
        choose_threads(None, workers=3, cores=eight, environ={"LOCAL_WORLD_SIZE": "4"}).threads == 1
    )


def test_precedence_config_over_env_over_auto(caplog):
    four = CoreCount(4, "affinity")
    env = choose_threads(None, workers=1, cores=four, environ={"OMP_NUM_THREADS": "1"})
    assert (env.threads, env.source) == (1, "env")
    config = choose_threads(2, workers=1, cores=four, environ={"OMP_NUM_THREADS": "1"})
    assert (config.threads, config.source) == (2, "config")
    with caplog.at_level(logging.WARNING, logger="voxelflow.engine.threads"):
        bad = choose_threads(None, workers=1, cores=four, environ={"OMP_NUM_THREADS": "lots"})
    assert (bad.threads, bad.source) == (3, "auto") and "OMP_NUM_THREADS" in caplog.text


def test_more_threads_than_cores_warns_once_and_zero_is_refused():
    two = CoreCount(2, "affinity")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choice = choose_threads(5, workers=0, cores=two, environ={})
    assert choice.threads == 5
    assert len(caught) == 1 and "system.threads: 5 threads but only 2 cores" in str(
        caught[0].message
    )
    with pytest.raises(ConfigError, match=r"system\.threads"):
        choose_threads(0, workers=0, cores=two, environ={})


@pytest.mark.parametrize("value", [0, -2])
def test_schema_refuses_zero_or_negative_threads_naming_the_key(value):
    base = {"dataset": {"csv": "x.csv"}, "network": {"name": "unet"}}
    with pytest.raises(ConfigError, match=r"system\.threads: expected .*1"):
        validate_experiment({**base, "system": {"threads": value}})
    assert validate_experiment({**base, "system": {"threads": 3}}).system.threads == 3
    assert validate_experiment(base).system.threads is None


def test_apply_threads_sets_torch(restore_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    choice = apply_threads(1, workers=3)
    assert torch.get_num_threads() == 1 and choice.source == "config"


class _WorkerFacts(torch.utils.data.Dataset):
    """Each item: the worker's pid, intra-op threads and whether SIGINT is ignored."""

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> tuple[int, int, bool]:
        time.sleep(0.01)
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        return os.getpid(), torch.get_num_threads(), ignored


def test_workers_get_one_thread_and_survive_ctrl_c():
    loader = torch.utils.data.DataLoader(
        _WorkerFacts(), batch_size=None, num_workers=1, worker_init_fn=worker_init
    )
    batches = iter(loader)
    pid, threads, ignored = next(batches)
    assert pid != os.getpid() and threads == 1 and ignored
    os.kill(pid, signal.SIGINT)  # what Ctrl-C sends to the whole foreground process group
    time.sleep(0.2)
    for _ in range(30):  # the worker is alive and still delivers: only the parent reacts
        assert next(batches)[0] == pid
    del batches


def _experiment(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    lines = ["subject,image,label"]
    for i in range(3):
        image, label = make_phantom((18, 16, 12), num_classes=3, seed=i)
        affine = phantom_affine((1.0, 1.2, 1.5))
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), data / f"s{i}_image.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), data / f"s{i}_label.nii.gz")
        lines.append(f"s{i},{data}/s{i}_image.nii.gz,{data}/s{i}_label.nii.gz")
    (data / "table.csv").write_text("\n".join(lines) + "\n")
    config = root / "experiment.yaml"
    config.write_text(
        f"""dataset: {{csv: {data / "table.csv"}, inputs: {{image: [image], label: [label]}}}}
split: {{validation: 0.34, test: 0.0}}
sampling: {{window: [12, 12, 8], windows_per_subject: 2, queue_length: 4}}
augmentation: [{{name: affine, rotation: 10, p: 1.0}}]
network: {{name: toynet}}
loss: {{name: dice_ce}}
training: {{batch_size: 2, num_workers: 1}}
system: {{run_dir: {root / "run"}, device: cpu, threads: 1}}
"""
    )
    return config


def test_profile_prints_the_thread_choice(tmp_path: Path, capsys, restore_threads):
    from voxelflow.cli.main import main

    config = _experiment(tmp_path)
    argv = ["profile", "-c", str(config), "--iterations", "2", "--warmup", "1",
            "--no-augmentation-split"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = (
        "threads: 1 in the main process + 1 in each of 1 DataLoader worker(s) (system.threads: 1)"
    )
    assert expected in out.splitlines()
    assert "note: augmented windows are resampled by the fused numba kernel" in out
    assert torch.get_num_threads() == 1


def test_training_pipeline_takes_threads_kernel_and_worker_init_from_the_config(
    tmp_path: Path, restore_threads
):
    from voxelflow.config.load import load_experiment
    from voxelflow.engine.run import build_training_pipeline

    config = _experiment(tmp_path)
    experiment = load_experiment(config, ["system.resample_kernel=torch", "system.threads=2"])
    pipeline = build_training_pipeline(experiment, tmp_path / "run")
    assert pipeline.queue.sampler.resample_kernel == "torch"
    assert pipeline.loader.worker_init_fn is worker_init
    assert (pipeline.threads.threads, pipeline.threads.source) == (2, "config")
    assert torch.get_num_threads() == 2
