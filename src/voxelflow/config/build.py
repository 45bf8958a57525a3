"""Names become objects here, and only here.

:func:`build_component` looks a :class:`~voxelflow.config.schema.Component` name up in a
registry (with "did you mean"), checks its options against the callable's signature (an unknown
option is a :class:`~voxelflow.errors.ConfigError` naming ``key.option`` with suggestions; a
missing required option too) and calls it. The thin ``build_*`` wrappers import the registries
of the other packages lazily, so importing :mod:`voxelflow.config` stays light.

Example:
    >>> network = build_network(experiment, in_channels=1, out_channels=3, spatial_dims=3)  # doctest: +SKIP
    >>> optimizer = build_optimizer(experiment, network.parameters())  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from voxelflow.config.schema import Component, ExperimentConfig
from voxelflow.errors import ConfigError, RegistryError
from voxelflow.registry import Registry, suggest

if TYPE_CHECKING:
    import torch
    from torch import nn

    from voxelflow.engine.hooks import Hook

T = TypeVar("T")

__all__ = [
    "build_augmentations",
    "build_component",
    "build_hooks",
    "build_loss",
    "build_network",
    "build_normalizers",
    "build_optimizer",
    "build_sampler",
    "build_scheduler",
    "check_component",
]


def check_component(
    registry: Registry[Any], component: Component, *, key: str, fixed: Iterable[str] = ()
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Look up ``component.name`` and check its options against the callable's signature.

    Args:
        registry: where the name is registered (plugin paths ``pkg.mod:Name`` are imported).
        component: the name and options from the config.
        key: the config key path of the component (``"network"``, ``"augmentation.2"``).
        fixed: argument names the caller passes itself (not settable from the config).

    Returns:
        The callable and the options to pass.

    Raises:
        RegistryError: unknown name (``key.name: unknown ... Did you mean``).
        ConfigError: an unknown, a fixed or a missing required option (``key.option``).
    """
    try:
        factory = registry.get(component.name)
    except RegistryError as exc:
        raise RegistryError(f"{key}.name: {exc}") from None
    options = component.kwargs
    fixed = set(fixed)
    clashing = sorted(fixed & set(options))
    if clashing:
        raise ConfigError(
            f"{key}.{clashing[0]}: set by voxelflow itself for {registry.kind} {component.name!r}, "
            f"expected it absent from the config, got {options[clashing[0]]!r}"
        )
    parameters = _parameters(factory)
    if parameters is None:
        return factory, options
    accepted = [p.name for p in parameters if p.name not in fixed and _is_named(p)]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        for option in options:
            if option not in accepted:
                raise ConfigError(
                    f"{key}.{option}: unknown option of {registry.kind} {component.name!r}."
                    f"{suggest(option, accepted)} Options: {', '.join(accepted) or 'none'}"
                )
    missing = [
        p.name
        for p in parameters
        if _is_named(p)
        and p.default is inspect.Parameter.empty
        and p.name not in fixed | set(options)
    ]
    if missing:
        raise ConfigError(
            f"{key}: {registry.kind} {component.name!r} expected option(s) {missing}, got none for them"
        )
    return factory, options


def build_component(
    registry: Registry[Any], component: Component, *, key: str, **fixed_kwargs: Any
) -> Any:
    """Build ``component`` from ``registry``: check the options, then call the factory.

    Args:
        registry: where the name is registered.
        component: the name and options from the config.
        key: the config key path, named in errors.
        **fixed_kwargs: arguments the caller provides (channels, parameters ...).

    Returns:
        Whatever the registered callable returns.

    Raises:
        RegistryError: unknown name. ConfigError: unknown or missing options.
    """
    factory, options = check_component(registry, component, key=key, fixed=fixed_kwargs)
    return factory(**fixed_kwargs, **options)


def _parameters(factory: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # builtins or plugins without an inspectable signature
        return None


def _is_named(parameter: inspect.Parameter) -> bool:
    return parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


# --------------------------------------------------------------------------- thin wrappers
def build_network(
    experiment: ExperimentConfig, *, in_channels: int, out_channels: int, spatial_dims: int
) -> nn.Module:
    """The network of ``experiment.network`` (registry ``voxelflow.networks.NETWORKS``).

    Shape:
        input ``(B, in_channels, *spatial)`` → output ``(B, out_channels, *spatial)`` for
        segmentation networks.
    """
    from voxelflow.networks import NETWORKS

    return build_component(
        NETWORKS,
        experiment.network,
        key="network",
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
    )


def build_loss(experiment: ExperimentConfig, **fixed_kwargs: Any) -> nn.Module:
    """The loss of ``experiment.loss`` (registry ``voxelflow.losses.LOSSES``)."""
    from voxelflow.losses import LOSSES

    return build_component(LOSSES, experiment.loss, key="loss", **fixed_kwargs)


def build_optimizer(
    experiment: ExperimentConfig, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]]
) -> torch.optim.Optimizer:
    """The optimiser of ``experiment.optimizer`` over ``params``."""
    from voxelflow.optim import OPTIMIZERS

    return build_component(OPTIMIZERS, experiment.optimizer, key="optimizer", params=params)


def build_scheduler(experiment: ExperimentConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The per-iteration learning-rate schedule of ``experiment.scheduler``.

    Options are checked by :func:`voxelflow.optim.build_scheduler` (every schedule also
    takes ``warmup_iterations`` and ``warmup_start_factor``); ``max_iterations`` comes from
    ``training.max_iterations``.
    """
    from voxelflow.optim import SCHEDULERS
    from voxelflow.optim import build_scheduler as make_scheduler

    name = experiment.scheduler.name
    try:
        SCHEDULERS.get(name)
    except RegistryError as exc:
        raise RegistryError(f"scheduler.name: {exc}") from None
    if "max_iterations" in experiment.scheduler.kwargs:
        raise ConfigError(
            "scheduler.max_iterations: expected it absent (set training.max_iterations)"
        )
    return make_scheduler(
        name,
        optimizer,
        max_iterations=experiment.training.max_iterations,
        **experiment.scheduler.kwargs,
    )


def build_sampler(experiment: ExperimentConfig, **fixed_kwargs: Any) -> Any:
    """The training sampler of ``experiment.sampling.sampler`` (``voxelflow.sampling.SAMPLERS``)."""
    from voxelflow.sampling import SAMPLERS

    return build_component(
        SAMPLERS, experiment.sampling.sampler, key="sampling.sampler", **fixed_kwargs
    )


def build_augmentations(experiment: ExperimentConfig, **fixed_kwargs: Any) -> list[Any]:
    """The random transforms of ``experiment.augmentation``, in order
    (``voxelflow.transforms.compose.AUGMENTATIONS``)."""
    from voxelflow.transforms.compose import AUGMENTATIONS

    return [
        build_component(AUGMENTATIONS, component, key=f"augmentation.{index}", **fixed_kwargs)
        for index, component in enumerate(experiment.augmentation)
    ]


def build_normalizers(experiment: ExperimentConfig) -> list[Any]:
    """The normalisation steps of ``experiment.preprocessing.normalization``, in order
    (``voxelflow.transforms.normalize.NORMALIZERS``)."""
    from voxelflow.transforms.normalize import NORMALIZERS

    return [
        build_component(NORMALIZERS, component, key=f"preprocessing.normalization.{index}")
        for index, component in enumerate(experiment.preprocessing.normalization)
    ]


def build_hooks(experiment: ExperimentConfig) -> list[Hook]:
    """The hooks of ``training.hooks``, in order (registry ``voxelflow.engine.hooks.HOOKS``)."""
    return [
        build_component(hook_registry(), component, key=f"training.hooks[{index}]")
        for index, component in enumerate(experiment.training.hooks)
    ]


def hook_registry() -> Registry[type[Hook]]:
    """The hook registry (imported lazily: the engine sits above config in the layers)."""
    from voxelflow.engine.hooks import HOOKS

    return HOOKS
