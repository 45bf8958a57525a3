"""The seven NiftyNet console scripts: argument parsing, refusals (exit 2, one line), net_download."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voxelflow.cli import main as cli_main
from voxelflow.cli.niftynet_scripts import net_classify, net_download, net_run, net_segment
from voxelflow.errors import ConfigError
from voxelflow.niftynet.commands import parse_arguments

ROOT = Path(__file__).resolve().parents[2]
INIS = ROOT / "tests" / "config" / "test_niftynet_inis"


def test_parse_niftynet_command_lines() -> None:
    found = parse_arguments(
        ["training", "-c", "x.ini", "--lr", "0.01", "--max_iter=10", "--set", "a.b=1"],
        application="segmentation",
    )
    assert (found.action, found.config, found.application) == (
        "train",
        Path("x.ini"),
        "segmentation",
    )
    assert found.overrides == {"lr": "0.01", "max_iter": "10"} and found.sets == ["a.b=1"]
    path = "niftynet.application.regression_application.RegressionApplication"
    assert parse_arguments(["infer", "-c", "x.ini", "-a", path], application=None).application == (
        "regression"
    )
    assert parse_arguments(["eval", "-a", "net_gan", "-c", "x.ini"], application=None).action == (
        "evaluation"
    )
    with pytest.raises(ConfigError, match=r"--max_iterr: not a NiftyNet parameter.*'max_iter'"):
        parse_arguments(["train", "-c", "x.ini", "--max_iterr", "3"], application="segmentation")
    with pytest.raises(ConfigError, match="-a net_segmentation: expected one of net_segment"):
        parse_arguments(["train", "-a", "net_segmentation", "-c", "x.ini"], application=None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "-c", "x.ini"], "expected an action train, inference or evaluation, got 'fit'"),
        (["train"], "expected -c CONFIG"),
        (["train", "-c", "x.ini", "--nope", "1"], "--nope: not a NiftyNet parameter"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert net_segment(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_wrong_application_for_the_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert net_classify(["train", "-c", str(INIS / "segmentation_default.ini")]) == 2
    assert "requires a [CLASSIFICATION] section" in capsys.readouterr().err
    assert net_run(["train", "-c", str(INIS / "segmentation_default.ini")]) == 2
    assert "expected -a APPLICATION" in capsys.readouterr().err


def test_net_run_dispatches_train_to_voxelflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(cli_main, "main", lambda argv: seen.append(list(argv)) or 0)
    monkeypatch.chdir(tmp_path)
    ini = shutil.copy(INIS / "regression.ini", tmp_path / "regression.ini")
    assert net_run(["train", "-a", "net_regress", "-c", str(ini), "--lr", "0.5"]) == 0
    (argv,) = seen
    assert argv[:2] == ["train", "-c"] and argv[2].endswith("regression.yaml")


def test_cuda_devices_sets_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setattr(cli_main, "main", lambda argv: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so the value set below is undone
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.chdir(tmp_path)
    assert net_segment(["train", "-c", str(INIS / "segmentation_default.ini")]) == 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # NiftyNet's behaviour, not a hard cuda:0


@pytest.mark.parametrize(
    "name",
    ["highres3dnet_brain_parcellation", "dense_vnet_abdominal_ct_model_zoo",
     "ultrasound_simulator_gan_model_zoo"],
)  # fmt: skip
def test_net_download_refuses_niftynet_zoo_entries(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert net_download([name, "--home", str(tmp_path / "zoo")]) == 2
    err = capsys.readouterr().err
    assert "TensorFlow checkpoints" in err and "nothing was downloaded" in err
    assert not (tmp_path / "zoo").exists()


def test_net_download_installs_a_voxelflow_zoo_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = ROOT / "zoo" / "voxelflow-demo-tissue"
    from voxelflow.zoo.entry import CARD_NAME

    if not (entry / CARD_NAME).is_file():
        pytest.skip("the repository's demo zoo entry is not present")
    assert net_download([str(entry), "--home", str(tmp_path / "zoo")]) == 0
    assert "installed" in capsys.readouterr().out
    assert (tmp_path / "zoo" / "entries").is_dir()
    assert net_download(["no_such_entry", "--home", str(tmp_path / "zoo")]) == 1


def test_console_scripts_are_registered() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for name in ("net_segment", "net_regress", "net_gan", "net_autoencoder", "net_classify",
                 "net_run", "net_download"):  # fmt: skip
        assert f'{name} = "voxelflow.cli.niftynet_scripts:{name}"' in text
    script = Path(sys.executable).with_name("net_download")
    if script.is_file():  # installed entry points (pip install -e .)
        done = subprocess.run(
            [str(script), "dense_vnet_abdominal_ct"], capture_output=True, text=True
        )
        assert done.returncode == 2 and "NiftyNet model-zoo entry" in done.stderr


def test_niftynet_inference_subjects() -> None:
    from types import SimpleNamespace

    from voxelflow.niftynet.actions import inference_subjects

    rows = [SimpleNamespace(name=n) for n in ("a", "b", "c")]
    split = {"train": ["a", "b"], "validation": ["c"], "test": []}

    def names(chosen: list[SimpleNamespace]) -> list[str]:
        return [r.name for r in chosen]

    assert names(inference_subjects(rows, split, "")) == ["a", "b", "c"]  # empty inference set
    assert names(inference_subjects(rows, {**split, "test": ["b"]}, "")) == ["b"]
    assert names(inference_subjects(rows, split, "training")) == ["a", "b"]
    assert names(inference_subjects(rows, split, "validation")) == ["c"]
    assert names(inference_subjects(rows, split, "inference")) == []


def test_2d_image_files_turn_h_w_1_windows_into_2d(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import SimpleITK as sitk

    from voxelflow.niftynet.actions import fit_windows_to_images
    from voxelflow.niftynet.conversion import convert_niftynet

    (tmp_path / "slices").mkdir()
    for i in range(2):
        for kind in ("img", "coordX"):
            image = sitk.GetImageFromArray(np.zeros((16, 16), np.float32))
            sitk.WriteImage(image, str(tmp_path / "slices" / f"frame{i}_{kind}.nrrd"))
    monkeypatch.chdir(tmp_path)
    experiment = convert_niftynet(INIS / "gan_2d.ini").experiment
    assert experiment.sampling.window == [16, 16, 1]
    fitted = fit_windows_to_images(experiment)
    assert fitted.sampling.window == [16, 16]  # 2-D files: NiftyNet's (h, w, 1) is [h, w]
    from voxelflow.networks import build_network

    generator = build_network(fitted.network, spatial_dims=2, in_channels=1, out_channels=1,
                              noise_size=100, image_size=[16, 16], features=[8, 4])  # fmt: skip
    assert generator(torch.zeros(2, 100)).shape == (2, 1, 16, 16)
