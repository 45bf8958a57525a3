"""One build path, which is also the validator: every problem of every component, in one run,
each with its key in one format (``augmentation[1].rotaton: ...``)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

import voxelflow as vf
from voxelflow.api.experiment import Experiment
from voxelflow.cli.main import main
from voxelflow.config import build
from voxelflow.config.load import validate_experiment
from voxelflow.errors import ConfigError

#: one line per mistake of ``_nine_mistakes``, each starting with its exact key
EXPECTED = (
    "dataset.inputs: application 'segmentation' needs a 'label' role",
    "loss.name: unknown loss 'dice_cee'. Did you mean: 'dice_ce'",
    "optimizer.weight_decay: expected a value >= 0, got -0.1",
    "scheduler.name: unknown scheduler 'cosin'. Did you mean: 'cosine'",
    "sampling.sampler.name: unknown sampler 'uniformm'. Did you mean: 'uniform'",
    "augmentation[1].rotaton: unknown option of augmentation 'affine'. Did you mean: 'rotation'",
    "preprocessing.normalization[0].maks: unknown option of normalizer 'zscore'. "
    "Did you mean: 'mask'",
    "network.featurs: unknown option of network 'unet'",
    "sampling.window: expected 3 sizes, got [16, 16] (3D images)",
)


def _table(folder: Path) -> Path:
    folder.mkdir()
    lines = ["subject,image"]
    for i in range(2):
        image, _ = vf.make_phantom((16, 16, 8), num_classes=2, seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}_img.nii.gz")
        lines.append(f"s{i},s{i}_img.nii.gz")
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    return folder / "table.csv"


def _nine_mistakes(tmp_path: Path) -> dict[str, object]:
    return {
        "dataset": {"csv": str(_table(tmp_path / "data")), "inputs": {"image": ["image"]}},
        "sampling": {"window": [16, 16], "sampler": {"name": "uniformm"}},
        "network": {"name": "unet", "channels": [4, 8], "featurs": 3},
        "loss": {"name": "dice_cee"},
        "optimizer": {"name": "adamw", "lr": "1e-3", "weight_decay": -0.1},
        "scheduler": {"name": "cosin"},
        "augmentation": [{"name": "flip"}, {"name": "affine", "rotaton": 10}],
        "preprocessing": {"normalization": [{"name": "zscore", "maks": "nonzero"}]},
        "training": {"max_iterations": 2, "num_workers": 0},
        "system": {"run_dir": str(tmp_path / "run"), "device": "cpu"},
    }


def _assert_every_mistake(problems: list[str]) -> None:
    for expected in EXPECTED:
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert len(problems) == len(EXPECTED), problems
    assert not any("optimizer.lr" in p for p in problems)  # read with a warning, not refused


def test_cli_validate_lists_all_nine_mistakes_in_one_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    text = yaml.safe_dump(_nine_mistakes(tmp_path))
    path.write_text(text.replace("lr: 1e-3", 'lr: "1e-3"'))  # quoted: a string in YAML
    with pytest.warns(UserWarning, match=r"optimizer\.lr: read the string '1e-3' as the number"):
        assert main(["config", "validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    listed = [line.strip()[2:] for line in err.splitlines() if line.strip().startswith("- ")]
    assert f"{len(EXPECTED)} problem(s)" in err and "Traceback" not in err
    _assert_every_mistake(listed)


def test_infer_lists_every_component_problem_before_reading_files(tmp_path: Path, capsys) -> None:
    config = {
        "network": {"name": "unet", "featurs": 3},
        "augmentation": [{"name": "flip"}, {"name": "affine", "rotaton": 10}],
        "system": {"run_dir": str(tmp_path / "no_run")},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["infer", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err, err
    assert "network.featurs: unknown option" in err and "augmentation[1].rotaton: unknown" in err


def test_api_validate_lists_the_same_problems(tmp_path: Path) -> None:
    experiment = Experiment(validate_experiment(_nine_mistakes(tmp_path)))
    with pytest.warns(UserWarning, match=r"optimizer\.lr"):
        problems = experiment.validate()
    _assert_every_mistake(problems)


#: key format: a dotted path, list items as ``[index]``, then ``: `` (never ``augmentation.0``)
KEY = re.compile(r"^[a-z_]+(\.[a-z_]+|\[\d+\])*: ")


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda c: build.build_network(c, in_channels=1, out_channels=2, spatial_dims=3),
         "network.featurs"),
        (lambda c: build.build_loss(c), "loss.featurs"),
        (lambda c: build.build_optimizer(c, []), "optimizer.featurs"),
        (lambda c: build.build_scheduler(c, None), "scheduler.featurs"),  # type: ignore[arg-type]
        (lambda c: build.build_sampler(c), "sampling.sampler.featurs"),
        (lambda c: build.build_augmentations(c), "augmentation[1].featurs"),
        (lambda c: build.build_normalizers(c), "preprocessing.normalization[1].featurs"),
        (lambda c: build.build_hooks(c), "training.hooks[0].featurs"),
    ],
)  # fmt: skip
def test_error_keys_use_one_format_for_every_kind(call, key: str) -> None:
    bad = {"featurs": 1}
    config = validate_experiment(
        {
            "network": {"name": "unet", **bad},
            "loss": {"name": "dice_ce", **bad},
            "optimizer": {"name": "sgd", **bad},
            "scheduler": {"name": "poly", **bad},
            "sampling": {"sampler": {"name": "uniform", **bad}},
            "augmentation": [{"name": "flip"}, {"name": "flip", **bad}],
            "preprocessing": {"normalization": [{"name": "zscore"}, {"name": "zscore", **bad}]},
            "training": {"hooks": [{"name": "stop_after", **bad}]},
        }
    )
    with pytest.raises(ConfigError) as info:
        call(config)
    message = str(info.value)
    assert message.startswith(f"{key}: unknown option"), message
    assert KEY.match(message)


def test_wrong_simple_type_and_missing_required_option_are_named() -> None:
    config = validate_experiment({"optimizer": {"name": "sgd", "nesterov": "yes", "lr": [1]}})
    with pytest.raises(ConfigError) as info:
        build.build_optimizer(config, [])
    lines = str(info.value).splitlines()
    assert "optimizer.nesterov: expected bool, got 'yes' (str)" in lines
    assert "optimizer.lr: expected float, got [1] (list)" in lines
