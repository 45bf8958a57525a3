"""build_component: names → objects with signature-checked options."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from voxelflow.config.build import build_component, check_component
from voxelflow.config.schema import Component
from voxelflow.errors import ConfigError, RegistryError
from voxelflow.registry import Registry

WIDGETS: Registry[type] = Registry("widget")


@WIDGETS.register("square")
@dataclass
class Square:
    """A widget with a required and an optional option."""

    channels: int
    side: float
    colour: str = "red"


@WIDGETS.register("anything")
class Anything:
    """Takes any option."""

    def __init__(self, **options: object) -> None:
        self.options = options


def test_builds_with_fixed_and_config_options() -> None:
    widget = build_component(WIDGETS, Component(name="square", side=2.0), key="widget", channels=3)
    assert widget == Square(channels=3, side=2.0, colour="red")


def test_unknown_name_suggests() -> None:
    with pytest.raises(
        RegistryError, match=r"widget\.name: unknown widget 'sqare'\. Did you mean: 'square'"
    ):
        build_component(WIDGETS, Component(name="sqare"), key="widget")


def test_unknown_option_names_key_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        build_component(
            WIDGETS,
            Component(name="square", side=1, color="blue"),
            key="augmentation[2]",
            channels=1,
        )
    message = str(info.value)
    assert message.startswith("augmentation[2].color: unknown option of widget 'square'")
    assert "Did you mean: 'colour'" in message
    assert "channels" not in message.split("Options:")[1]  # fixed arguments are not offered


def test_missing_required_option() -> None:
    with pytest.raises(
        ConfigError, match=r"widget\.side: expected a value \(a required option of widget 'square'\)"
    ):
        build_component(WIDGETS, Component(name="square"), key="widget", channels=1)


def test_fixed_option_cannot_come_from_config() -> None:
    with pytest.raises(ConfigError, match=r"network\.channels: set by voxelflow itself"):
        build_component(
            WIDGETS, Component(name="square", side=1, channels=4), key="network", channels=1
        )


def test_var_keyword_accepts_everything() -> None:
    widget = build_component(WIDGETS, Component(name="anything", a=1, b=[2]), key="x")
    assert widget.options == {"a": 1, "b": [2]}


def test_plugin_path() -> None:
    factory, options = check_component(
        WIDGETS, Component(name="collections:OrderedDict", a=1), key="x"
    )
    assert factory(**options) == {"a": 1}


def test_real_registries_through_wrappers() -> None:
    import torch

    from voxelflow.config.build import build_loss, build_network, build_optimizer, build_scheduler
    from voxelflow.config.load import load_experiment

    experiment = load_experiment(
        {
            "network": {"name": "toynet", "features": 4},
            "loss": {"name": "dice", "squared": True},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0},
            "scheduler": {"name": "poly"},
            "training": {"max_iterations": 10},
        }
    )
    network = build_network(experiment, in_channels=2, out_channels=3, spatial_dims=3)
    assert network(torch.zeros(1, 2, 6, 6, 6)).shape == (1, 3, 6, 6, 6)
    assert build_loss(experiment).squared is True
    optimizer = build_optimizer(experiment, network.parameters())
    assert optimizer.param_groups[0]["lr"] == 0.1
    scheduler = build_scheduler(experiment, optimizer)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 1 / 10) ** 0.9)
    bad = load_experiment({"network": {"name": "toynet", "featurs": 4}})
    with pytest.raises(ConfigError, match=r"network\.featurs: .*Did you mean: 'features'"):
        build_network(bad, in_channels=1, out_channels=2, spatial_dims=3)
