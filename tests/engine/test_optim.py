"""Optimisers and learning-rate schedules: options, hand formulas, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from voxelflow.errors import ConfigError, RegistryError
from voxelflow.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler

BASE_LR = 0.1


def learning_rates(name: str, iterations: int, **kwargs) -> list[float]:
    """The learning rate used at each of ``iterations`` optimiser steps."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=BASE_LR)
    scheduler = build_scheduler(name, optimizer, **kwargs)
    rates = []
    for _ in range(iterations):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


# ------------------------------------------------------------------------- optimisers
def test_every_optimizer_builds_and_steps():
    assert set(OPTIMIZERS.names()) == {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
    for name in OPTIMIZERS.names():
        model = torch.nn.Linear(3, 1)
        optimizer = build_optimizer(name, model.parameters(), lr=0.05, weight_decay=1e-4)
        before = model.weight.detach().clone()
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        assert not torch.equal(before, model.weight), name
        assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)


def test_sgd_options_and_hand_step():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = build_optimizer(
        "sgd", [weight], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5
    )
    assert optimizer.param_groups[0]["nesterov"] is True
    (2 * weight).sum().backward()
    optimizer.step()
    # gradient 2 + weight decay 0.5·1 = 2.5; first momentum buffer b = 2.5; nesterov step g + 0.9 b = 4.75
    assert weight.item() == pytest.approx(1.0 - 0.1 * 4.75)


def test_adamw_decoupled_decay_default_and_betas_from_a_list():
    optimizer = build_optimizer("adamw", [torch.nn.Parameter(torch.zeros(1))], betas=[0.8, 0.99])
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-2)
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_optimizer_errors():
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(RegistryError, match="Did you mean"):
        build_optimizer("adamm", params)
    with pytest.raises(ConfigError, match=r"optimizer\.momentun.*Did you mean: 'momentum'"):
        build_optimizer("sgd", params, momentun=0.9)
    with pytest.raises(ConfigError, match=r"optimizer\.lr: expected a value > 0, got -1"):
        build_optimizer("adam", params, lr=-1)
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimizer("sgd", params, momentum=0.0, nesterov=True)


# ------------------------------------------------------------------------- schedules
def test_registered_schedules():
    assert {"constant", "step", "poly", "cosine", "linear", "linear_warmup"} <= set(
        SCHEDULERS.names()
    )


def test_constant():
    assert learning_rates("constant", 5, max_iterations=5) == [BASE_LR] * 5


def test_poly_matches_nnunet_formula():
    rates = learning_rates("poly", 12, max_iterations=10)
    expected = [BASE_LR * (1 - min(i, 10) / 10) ** 0.9 for i in range(12)]
    assert rates == pytest.approx(expected)
    assert rates[10] == 0.0


def test_cosine_and_linear():
    rates = learning_rates("cosine", 9, max_iterations=8, min_factor=0.1)
    expected = [
        BASE_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, 8) / 8))) for i in range(9)
    ]
    assert rates == pytest.approx(expected)
    rates = learning_rates("linear", 5, max_iterations=4, end_factor=0.5)
    assert rates == pytest.approx([BASE_LR * (1 - 0.5 * i / 4) for i in range(5)])


def test_step_by_size_and_milestones():
    rates = learning_rates("step", 7, max_iterations=7, step_size=3, gamma=0.5)
    assert rates == pytest.approx([BASE_LR * 0.5 ** (i // 3) for i in range(7)])
    rates = learning_rates("step", 7, max_iterations=7, milestones=[2, 5], gamma=0.1)
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ConfigError, match="exactly one of step_size or milestones"):
        learning_rates("step", 1, max_iterations=7)


def test_warmup_on_any_schedule():
    rates = learning_rates(
        "poly", 12, max_iterations=10, warmup_iterations=3, warmup_start_factor=0.0
    )
    warmup = [BASE_LR * (i + 1) / 4 for i in range(3)]
    after = [BASE_LR * (1 - min(i, 7) / 7) ** 0.9 for i in range(9)]
    assert rates == pytest.approx(warmup + after)
    rates = learning_rates(
        "linear_warmup", 5, max_iterations=10, warmup_iterations=2, warmup_start_factor=0.4
    )
    assert rates == pytest.approx(
        [BASE_LR * (0.4 + 0.6 / 3), BASE_LR * (0.4 + 1.2 / 3), BASE_LR, BASE_LR, BASE_LR]
    )


def test_scheduler_errors():
    with pytest.raises(ConfigError, match="warmup_iterations: expected a value > 0"):
        learning_rates("linear_warmup", 1, max_iterations=10)
    with pytest.raises(
        ConfigError, match="warmup_iterations: expected 0 <= value < max_iterations"
    ):
        learning_rates("cosine", 1, max_iterations=10, warmup_iterations=10)
    with pytest.raises(ConfigError, match=r"min_factr.*Did you mean: 'min_factor'"):
        learning_rates("cosine", 1, max_iterations=10, min_factr=0.1)
    with pytest.raises(RegistryError, match="unknown scheduler"):
        learning_rates("exponentiall", 1, max_iterations=10)


@pytest.mark.parametrize("name", ["poly", "cosine", "step"])
def test_resume_from_state_dict_is_exact(name, tmp_path):
    options = {"max_iterations": 20, "warmup_iterations": 3}
    if name == "step":
        options["step_size"] = 4

    def make():
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=BASE_LR)
        return optimizer, build_scheduler(name, optimizer, **options)

    optimizer, scheduler = make()
    uninterrupted = []
    for iteration in range(20):
        uninterrupted.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        if iteration == 8:
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                tmp_path / "c.pt",
            )
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    optimizer, scheduler = make()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(9, 20):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert resumed == uninterrupted[9:]


def test_schedule_classes_take_every_option_in_their_signature():
    """config.build checks options against the registered callable's signature: warm-up included."""
    import inspect

    for name in SCHEDULERS.names():
        parameters = inspect.signature(SCHEDULERS.get(name)).parameters
        assert {"max_iterations", "warmup_iterations", "warmup_start_factor"} <= set(parameters), (
            name
        )
    schedule = SCHEDULERS.get("cosine")(max_iterations=10, warmup_iterations=4, min_factor=0.5)
    assert [schedule(i) for i in (0, 3, 4, 10)] == pytest.approx([0.2, 0.8, 1.0, 0.5])
