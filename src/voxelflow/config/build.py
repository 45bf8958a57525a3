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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from voxelflow.config.schema import Component, ExperimentConfig
from voxelflow.errors import ConfigError
from voxelflow.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.optim.lr_scheduler import LambdaLR

    from voxelflow.applications.base import Application
    from voxelflow.engine.hooks import Hook
    from voxelflow.sampling.base import Sampler
    from voxelflow.transforms.base import Transform
    from voxelflow.transforms.compose import Compose
    from voxelflow.transforms.normalize import Normalizer

T = TypeVar("T")
#: a component as the config gives it: a ``Component``, ``{"name": ..., **options}`` or a name
ComponentSpec = Component | Mapping[str, Any] | str

__all__ = [
    "application_class",
    "build_augmentation",
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
    "component_parts",
]


def check_component(
    registry: Registry[Any], component: ComponentSpec, *, key: str, fixed: Iterable[str] = ()
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Look up the component's name and check its options against the callable's signature.

    Args:
        registry: where the name is registered (plugin paths ``pkg.mod:Name`` are imported).
        component: the name and options from the config (a ``Component``, a mapping with
            ``name`` or a bare name).
        key: the config key of the component (``"network"``, ``"augmentation[2]"``).
        fixed: argument names the caller passes itself (not settable from the config).

    Returns:
        The callable and the options to pass (numbers given as text read, with a warning).

    Raises:
        RegistryError: unknown name (``key.name: unknown ... Did you mean``).
        ConfigProblems: every option problem of the component: unknown (with suggestions), set
            by voxelflow, missing, or of the wrong type (``key.option: ...``).
    """
    name, options = component_parts(component, key=key)
    return registry.check(name, options, key=key, fixed=fixed)


def build_component(
    registry: Registry[Any], component: ComponentSpec, *, key: str, **fixed_kwargs: Any
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
        RegistryError: unknown name. ConfigError: unknown, missing or wrongly typed options.
    """
    name, options = component_parts(component, key=key)
    return registry.build(name, options, key=key, **fixed_kwargs)


def component_parts(component: ComponentSpec, *, key: str) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a ``Component``, a ``{"name": ..., **options}`` mapping or a name."""
    if isinstance(component, str):
        return component, {}
    if not isinstance(component, Mapping):  # a Component, or an object shaped like one
        return str(getattr(component, "name", "")), dict(getattr(component, "kwargs", {}) or {})
    options = dict(component)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}.name: expected a component name, got {name!r}")
    return name, options


# --------------------------------------------------------------------------- thin wrappers
def _spec(source: ExperimentConfig | ComponentSpec, section: str) -> ComponentSpec:
    """The component of ``section`` when ``source`` is a whole experiment, else ``source``."""
    return getattr(source, section) if isinstance(source, ExperimentConfig) else source


def build_network(
    source: ExperimentConfig | ComponentSpec,
    *,
    in_channels: int,
    out_channels: int,
    spatial_dims: int,
    key: str = "network",
    **fixed_kwargs: Any,
) -> nn.Module:
    """The network of ``experiment.network`` (or of a component, e.g. a GAN's discriminator),
    from the registry ``voxelflow.networks.NETWORKS``.

    Args:
        source: the experiment, or the network component itself.
        in_channels, out_channels, spatial_dims: set by the application, not the config.
        key: config key named in errors (``"task.discriminator"`` for a second network).
        **fixed_kwargs: further arguments the application sets (``image_size`` ...).

    Shape:
        input ``(B, in_channels, *spatial)`` → output ``(B, out_channels, *spatial)`` for
        segmentation networks.
    """
    from voxelflow.networks import NETWORKS

    network: nn.Module = build_component(
        NETWORKS, _spec(source, "network"), key=key, spatial_dims=spatial_dims,
        in_channels=in_channels, out_channels=out_channels, **fixed_kwargs,
    )  # fmt: skip
    return network


def build_loss(source: ExperimentConfig | ComponentSpec, **fixed_kwargs: Any) -> nn.Module:
    """The loss of ``experiment.loss`` (registry ``voxelflow.losses.LOSSES``)."""
    from voxelflow.losses import LOSSES

    loss: nn.Module = build_component(LOSSES, _spec(source, "loss"), key="loss", **fixed_kwargs)
    return loss


def build_optimizer(
    source: ExperimentConfig | ComponentSpec,
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    *,
    key: str = "optimizer",
) -> torch.optim.Optimizer:
    """The optimiser of ``experiment.optimizer`` over ``params`` (``voxelflow.optim.OPTIMIZERS``);
    ``key`` is the config key named in errors."""
    from voxelflow.optim import OPTIMIZERS

    optimizer: torch.optim.Optimizer = build_component(
        OPTIMIZERS, _spec(source, "optimizer"), key=key, params=params
    )
    return optimizer


def build_scheduler(
    source: ExperimentConfig | ComponentSpec,
    optimizer: torch.optim.Optimizer,
    *,
    max_iterations: int | None = None,
    key: str = "scheduler",
) -> LambdaLR:
    """The per-iteration learning-rate schedule of ``experiment.scheduler`` (a ``LambdaLR``).

    Every schedule also takes ``warmup_iterations`` and ``warmup_start_factor``;
    ``max_iterations`` comes from ``training.max_iterations`` (or the argument).
    """
    from torch.optim.lr_scheduler import LambdaLR

    from voxelflow.optim import SCHEDULERS

    if max_iterations is None:
        if not isinstance(source, ExperimentConfig):
            raise TypeError("build_scheduler: max_iterations is needed without an experiment")
        max_iterations = source.training.max_iterations
    factor = build_component(
        SCHEDULERS, _spec(source, "scheduler"), key=key, max_iterations=max_iterations
    )
    return LambdaLR(optimizer, lr_lambda=factor)


def build_sampler(experiment: ExperimentConfig, **fixed_kwargs: Any) -> Sampler:
    """The training sampler of ``experiment.sampling.sampler`` (``voxelflow.sampling.SAMPLERS``)."""
    from voxelflow.sampling import SAMPLERS

    sampler: Sampler = build_component(
        SAMPLERS, experiment.sampling.sampler, key="sampling.sampler", **fixed_kwargs
    )
    return sampler


def build_augmentations(
    source: ExperimentConfig | Iterable[ComponentSpec], **fixed_kwargs: Any
) -> list[Transform]:
    """The random transforms of ``experiment.augmentation``, in order
    (``voxelflow.transforms.compose.AUGMENTATIONS``; errors name ``augmentation[i]``)."""
    from voxelflow.transforms.compose import AUGMENTATIONS

    components = source.augmentation if isinstance(source, ExperimentConfig) else source
    return [
        build_component(AUGMENTATIONS, component, key=f"augmentation[{index}]", **fixed_kwargs)
        for index, component in enumerate(components)
    ]


def build_augmentation(experiment: ExperimentConfig) -> Compose | None:
    """:func:`build_augmentations` composed, seeded with ``training.seed`` (None if there are none).

    Shape:
        the composition maps a sample of ``(C, *spatial)`` tensors to the same shapes.
    """
    from voxelflow.transforms.compose import Compose

    transforms = build_augmentations(experiment)
    return Compose(transforms, seed=experiment.training.seed) if transforms else None


def build_normalizers(
    source: ExperimentConfig | Iterable[ComponentSpec],
    *,
    states: Sequence[Mapping[str, Any] | None] = (),
) -> list[Normalizer]:
    """The normalisation steps of ``preprocessing.normalization``, in order, each restored from
    its fitted state in ``states`` when there is one (errors name
    ``preprocessing.normalization[i]``; registry ``voxelflow.transforms.normalize.NORMALIZERS``)."""
    from voxelflow.transforms.normalize import NORMALIZERS

    if isinstance(source, ExperimentConfig):
        source = source.preprocessing.normalization
    steps = []
    for index, component in enumerate(source):
        key = f"preprocessing.normalization[{index}]"
        step = build_component(NORMALIZERS, component, key=key)
        state = states[index] if index < len(states) else None
        if state:
            step.load_state(dict(state))
        steps.append(step)
    return steps


def application_class(experiment: ExperimentConfig) -> type[Application]:
    """The :class:`~voxelflow.applications.base.Application` subclass named by ``application``
    (a registered name, or a ``pkg.module:Name`` plugin imported because the config names it).

    Raises:
        RegistryError: ``application: unknown application ... Did you mean``.
    """
    from voxelflow.applications import APPLICATIONS
    from voxelflow.errors import RegistryError

    try:
        return APPLICATIONS.get(experiment.application)
    except RegistryError as exc:
        raise RegistryError(f"application: {exc}") from None


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
