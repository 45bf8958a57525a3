"""voxelflow.networks: the network registry and :func:`build_network`.

Every network follows :class:`~voxelflow.networks.base.Network`: constructor
``Net(spatial_dims, in_channels, out_channels, *, **options)`` with YAML-able options,
``output_size(input_size)``, ``check_input_size(input_size)``; segmentation and regression
networks return logits ``(B, out_channels, *spatial_out)``, classifiers ``(B, out_channels)``.

Example:
    >>> net = build_network("unet", spatial_dims=3, in_channels=1, out_channels=2, channels=[8, 16])
    >>> count_parameters(net) > 0
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.networks.base import Network, count_parameters
from voxelflow.registry import Registry

NETWORKS: Registry[type[nn.Module]] = Registry("network")

# Family modules register themselves on import (explicit list, no scanning).
from voxelflow.networks import (  # noqa: E402
    deepmedic,
    dense_vnet,
    densenet,
    gan,
    generative,
    highresnet,
    holistic_net,
    resnet,
    scalenet,
    toynet,
    unet,
    vnet,
)

_FAMILIES = {
    "unet": (unet.UNet, "nnU-Net-style U-Net (plain or residual encoder, deep supervision)"),
    "vnet": (vnet.VNet, "V-Net: residual 5×5×5 stages, strided down/up convolutions"),
    "highresnet": (highresnet.HighResNet, "HighRes3DNet: dilated residual network (small/large)"),
    "dense_vnet": (dense_vnet.DenseVNet, "Dense V-Net: dense feature stacks at three scales"),
    "deepmedic": (deepmedic.DeepMedic, "DeepMedic: normal + subsampled pathways, valid convs"),
    "scalenet": (
        scalenet.ScaleNet,
        "ScaleNet: shared per-modality backbone, merge, HighRes frontend",
    ),
    "holistic_net": (
        holistic_net.HolisticNet,
        "HolisticNet: dilated residual stack, merged scores",
    ),
    "toynet": (toynet.ToyNet, "ToyNet: one conv + activation + 1×1 classifier (smoke tests)"),
    "resnet": (resnet.ResNet, "pre-activation bottleneck ResNet classifier"),
    "se_resnet": (resnet.SEResNet, "ResNet classifier with squeeze-and-excitation blocks"),
    "densenet": (densenet.DenseNet, "DenseNet classifier (dense blocks + transitions)"),
    "vae": (generative.VariationalAutoencoder, "convolutional variational autoencoder"),
    "autoencoder": (generative.Autoencoder, "deterministic convolutional autoencoder"),
    "generator": (gan.Generator, "GAN generator: noise (+ conditioning image) → image"),
    "discriminator": (gan.Discriminator, "GAN discriminator: image → (B, 1) logits"),
}
for _name, (_cls, _description) in _FAMILIES.items():
    NETWORKS.add(_name, _cls, description=_description)


class NamedOptions(Protocol):
    """A component given as a name and its options (``voxelflow.config.schema.Component``)."""

    @property
    def name(self) -> str: ...

    @property
    def kwargs(self) -> Mapping[str, Any]: ...


def build_network(
    name_or_component: str | NamedOptions,
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    **kwargs: Any,
) -> nn.Module:
    """Build a network from a registered name (or plugin path) or a config ``Component``.

    Args:
        name_or_component: a name such as ``"unet"``, a plugin path ``"pkg.mod:Net"``, or an
            object with ``.name`` and ``.kwargs`` (``voxelflow.config.schema.Component``).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        **kwargs: network options; they must not repeat options of the component.

    Returns:
        The network module.

    Raises:
        RegistryError: unknown name (with suggestions).
        ConfigError: an unknown or duplicated option, or an invalid value.

    Shape:
        the network maps ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``
        (smaller for networks with valid convolutions: see ``output_size``).

    Example:
        >>> import torch
        >>> network = build_network("unet", spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8])
        >>> network(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 3, 16, 16, 16])
    """
    if isinstance(name_or_component, str):
        name, options = name_or_component, {}
    else:
        name, options = name_or_component.name, dict(name_or_component.kwargs)
    duplicated = sorted(set(options) & set(kwargs))
    if duplicated:
        raise ConfigError(f"network.{duplicated[0]}: option given twice (config and caller)")
    return NETWORKS.build(
        name, {**options, **kwargs}, key="network",
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
    )  # fmt: skip


def default_parameter_count(
    name: str, *, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2
) -> int:
    """Parameters of network ``name`` at its default options (for ``voxelflow list networks``)."""
    return count_parameters(
        build_network(
            name, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels
        )
    )


__all__ = ["NETWORKS", "Network", "build_network", "count_parameters", "default_parameter_count"]
