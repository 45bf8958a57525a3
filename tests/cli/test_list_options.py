"""``voxelflow list KIND --options [NAME]`` through the real CLI entry point."""

from __future__ import annotations

import pytest

from voxelflow.cli.main import main
from voxelflow.optim import OPTIMIZERS
from voxelflow.transforms.normalize import NORMALIZERS


def test_options_of_one_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "optimizers", "--options", "sgd"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("optimizer 'sgd': SGD")
    assert "  set by voxelflow: params" in lines
    # hand values: voxelflow.optim.sgd(params, *, lr=0.01, momentum=0.9, nesterov=False, ...)
    assert "  lr: float = 0.01" in lines and "  nesterov: bool = false" in lines
    assert lines[lines.index("  lr: float = 0.01") + 1].strip() == "learning rate"


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("losses", "dice_ce", "  lambda_dice: float = 1.0"),
        ("schedulers", "poly", "  exponent: float = 0.9"),
        ("samplers", "balanced", "sampler 'balanced'"),
        ("transforms", "affine", "  rotation: Range | Sequence[Range] = 0.0"),
        ("transforms", "zscore", "normalizer 'zscore'"),
        ("metrics", "dice", "  set by voxelflow: pred, ref, spacing, tolerance"),
        ("readers", "nibabel", "reader 'nibabel'"),
        ("writers", "nibabel", "writer 'nibabel'"),
    ],
)
def test_options_for_every_registry(
    kind: str, name: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", kind, "--options", name]) == 0
    assert expected in capsys.readouterr().out


def test_options_without_a_name_cover_every_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "optimizers", "--options"]) == 0
    out = capsys.readouterr().out
    assert [line.split("'")[1] for line in out.splitlines() if line.startswith("optimizer '")] == (
        OPTIMIZERS.names()
    )
    assert main(["list", "transforms", "--options"]) == 0
    out = capsys.readouterr().out
    assert all(f"normalizer '{name}'" in out for name in NORMALIZERS.names())


def test_unknown_name_is_a_config_error_with_suggestions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list", "networks", "--options", "unte"]) == 2
    err = capsys.readouterr().err
    assert "unknown network 'unte'" in err and "Did you mean: 'unet'" in err
    assert "Traceback" not in err


def test_all_kinds_find_the_name_in_its_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--options", "adamw"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("optimizer 'adamw'") and "weight_decay: float = 0.01" in out
