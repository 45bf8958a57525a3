"""Numbers written as text in a config reach no optimiser as strings (``lr: 1e-3``)."""

from __future__ import annotations

import pytest
import torch

from voxelflow.config.load import safe_load
from voxelflow.errors import ConfigError
from voxelflow.optim import build_optimizer, build_scheduler


def test_yaml_exponent_without_dot_is_a_number() -> None:
    data = safe_load("optimizer:\n  name: adam\n  lr: 1e-3\n  eps: -2E+1\nname: 1e3x\n")
    assert data["optimizer"]["lr"] == pytest.approx(1e-3)
    assert isinstance(data["optimizer"]["eps"], float)
    assert data["name"] == "1e3x"


def test_numeric_string_option_is_read_with_a_warning_naming_the_key() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.warns(UserWarning, match=r"optimizer\.lr"):
        optimizer = build_optimizer("adamw", params, lr="1e-3")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_non_numeric_string_option_is_refused_naming_the_key() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match=r"optimizer\.lr: expected a number, got 'fast'"):
        build_optimizer("sgd", params, lr="fast")


def test_integer_option_given_as_text_stays_an_integer() -> None:
    optimizer = build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.warns(UserWarning, match="warmup_iterations"):
        build_scheduler("poly", optimizer, max_iterations=10, warmup_iterations="2")
    with pytest.raises(ConfigError, match="expected an integer"):
        build_scheduler("poly", optimizer, max_iterations=10, warmup_iterations="2.5")
