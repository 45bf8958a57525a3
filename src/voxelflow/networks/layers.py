"""Layer factories by name and ``spatial_dims``: one implementation for 2D and 3D.

Every option is a plain YAML-able value (a name, an int, a list of ints). Unknown names raise
:class:`~voxelflow.errors.RegistryError` with "did you mean" suggestions.

Example:
    >>> block = torch.nn.Sequential(
    ...     conv(3, 1, 8, kernel_size=3), norm("instance", 3, 8), act("leaky_relu")
    ... )
    >>> block(torch.zeros(1, 1, 8, 8, 8)).shape
    torch.Size([1, 8, 8, 8, 8])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from voxelflow.errors import ConfigError
from voxelflow.registry import Registry

IntOrSequence = int | Sequence[int]

NORMS: Registry[Callable[..., nn.Module]] = Registry("normalisation")
ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation")
POOLS: Registry[Callable[..., nn.Module]] = Registry("pooling")
UPSAMPLE_MODES = {"nearest": "nearest", "linear": None, "bilinear": None, "trilinear": None}

_CONV: dict[int, Callable[..., nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE: dict[int, Callable[..., nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_DROPOUT = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}
_MAX_POOL: dict[int, Callable[..., nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL: dict[int, Callable[..., nn.Module]] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG: dict[int, Callable[..., nn.Module]] = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_ADAPTIVE_MAX: dict[int, Callable[..., nn.Module]] = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def check_spatial_dims(spatial_dims: int, *, supported: Sequence[int] = (1, 2, 3)) -> int:
    """Return ``spatial_dims`` after checking it is one of ``supported``.

    Raises:
        ConfigError: when ``spatial_dims`` is not supported.
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in tuple(supported):
        raise ConfigError(f"spatial_dims: expected one of {list(supported)}, got {spatial_dims!r}")
    return int(spatial_dims)


def as_tuple(value: IntOrSequence, spatial_dims: int, *, name: str = "value") -> tuple[int, ...]:
    """Broadcast an int to ``spatial_dims`` ints, or check a sequence has that length.

    Raises:
        ConfigError: when a sequence has the wrong length.
    """
    if isinstance(value, int):
        return (int(value),) * spatial_dims
    values = tuple(int(v) for v in value)
    if len(values) != spatial_dims:
        raise ConfigError(
            f"{name}: expected an int or {spatial_dims} ints (one per spatial axis), got {list(values)}"
        )
    return values


def same_padding(
    kernel_size: IntOrSequence, dilation: IntOrSequence, spatial_dims: int
) -> tuple[int, ...]:
    """Padding that keeps the size for odd kernels: ``dilation * (kernel - 1) // 2`` per axis."""
    kernel = as_tuple(kernel_size, spatial_dims, name="kernel_size")
    dil = as_tuple(dilation, spatial_dims, name="dilation")
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dil))


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: IntOrSequence = 3,
    stride: IntOrSequence = 1,
    dilation: IntOrSequence = 1,
    padding: IntOrSequence | str = "same",
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """A ``Conv{1,2,3}d``; ``padding="same"`` pads ``dilation*(kernel-1)//2``, ``"valid"`` pads 0.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial_out)``.
    """
    dims = check_spatial_dims(spatial_dims)
    if padding == "same":
        pad: IntOrSequence = same_padding(kernel_size, dilation, dims)
    elif padding == "valid":
        pad = 0
    elif isinstance(padding, str):
        raise ConfigError(f"padding: expected 'same', 'valid' or ints, got {padding!r}")
    else:
        pad = as_tuple(padding, dims, name="padding")
    return _CONV[dims](
        in_channels,
        out_channels,
        kernel_size=as_tuple(kernel_size, dims, name="kernel_size"),
        stride=as_tuple(stride, dims, name="stride"),
        dilation=as_tuple(dilation, dims, name="dilation"),
        padding=pad,
        groups=groups,
        bias=bias,
    )


def conv_transpose(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: IntOrSequence = 2,
    stride: IntOrSequence = 2,
    bias: bool = True,
) -> nn.Module:
    """A ``ConvTranspose{1,2,3}d``; with ``kernel_size == stride`` it multiplies the size by stride.

    Shape:
        ``(B, in_channels, *spatial)`` → ``(B, out_channels, *(spatial * stride))``.
    """
    dims = check_spatial_dims(spatial_dims)
    return _CONV_TRANSPOSE[dims](
        in_channels,
        out_channels,
        kernel_size=as_tuple(kernel_size, dims, name="kernel_size"),
        stride=as_tuple(stride, dims, name="stride"),
        bias=bias,
    )


@NORMS.register("batch", description="batch normalisation (Ioffe & Szegedy 2015)")
def _batch_norm(spatial_dims: int, channels: int, groups: int) -> nn.Module:
    return _BATCH_NORM[spatial_dims](channels)


@NORMS.register("instance", description="instance normalisation with learned affine")
def _instance_norm(spatial_dims: int, channels: int, groups: int) -> nn.Module:
    return _INSTANCE_NORM[spatial_dims](channels, affine=True)


@NORMS.register("group", description="group normalisation (Wu & He 2018)")
def _group_norm(spatial_dims: int, channels: int, groups: int) -> nn.Module:
    groups = min(groups, channels)
    if channels % groups:
        raise ConfigError(
            f"norm 'group': expected channels divisible by groups={groups}, got {channels} channels"
        )
    return nn.GroupNorm(groups, channels)


@NORMS.register("layer", description="layer normalisation over channels and space (GroupNorm(1))")
def _layer_norm(spatial_dims: int, channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(1, channels)


@NORMS.register("none", description="no normalisation")
def _no_norm(spatial_dims: int, channels: int, groups: int) -> nn.Module:
    return nn.Identity()


def norm(name: str, spatial_dims: int, channels: int, *, groups: int = 8) -> nn.Module:
    """Normalisation layer by name: ``batch``, ``instance``, ``group``, ``layer`` or ``none``.

    Args:
        name: normalisation name.
        spatial_dims: 1, 2 or 3.
        channels: number of channels normalised.
        groups: groups for ``group`` (reduced to ``channels`` when larger).

    Raises:
        RegistryError: unknown name (with suggestions).
    """
    factory = NORMS.get(name)
    return factory(check_spatial_dims(spatial_dims), channels, groups)


_ACTIVATION_CLASSES: dict[str, tuple[type[nn.Module], dict[str, object]]] = {
    "relu": (nn.ReLU, {}),
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": 0.01}),
    "prelu": (nn.PReLU, {}),
    "elu": (nn.ELU, {}),
    "selu": (nn.SELU, {}),
    "gelu": (nn.GELU, {}),
    "silu": (nn.SiLU, {}),
    "tanh": (nn.Tanh, {}),
    "sigmoid": (nn.Sigmoid, {}),
    "none": (nn.Identity, {}),
}
for _name, (_cls, _defaults) in _ACTIVATION_CLASSES.items():
    ACTIVATIONS.add(_name, _cls, description=f"torch.nn.{_cls.__name__}")


def act(name: str, **kwargs: object) -> nn.Module:
    """Activation by name: relu, leaky_relu, prelu, elu, selu, gelu, silu, tanh, sigmoid, none.

    Args:
        name: activation name.
        **kwargs: passed to the torch class (e.g. ``negative_slope=0.2`` for ``leaky_relu``).

    Raises:
        RegistryError: unknown name (with suggestions).
    """
    cls = ACTIVATIONS.get(name)
    options = dict(_ACTIVATION_CLASSES.get(name, (cls, {}))[1])
    options.update(kwargs)
    return cls(**options)


@POOLS.register("max", description="max pooling")
def _max_pool(
    spatial_dims: int, kernel_size: IntOrSequence, stride: IntOrSequence | None
) -> nn.Module:
    return _MAX_POOL[spatial_dims](kernel_size, stride=stride)


@POOLS.register("avg", description="average pooling")
def _avg_pool(
    spatial_dims: int, kernel_size: IntOrSequence, stride: IntOrSequence | None
) -> nn.Module:
    return _AVG_POOL[spatial_dims](kernel_size, stride=stride)


@POOLS.register("adaptive_avg", description="adaptive average pooling to kernel_size (global: 1)")
def _adaptive_avg(
    spatial_dims: int, kernel_size: IntOrSequence, stride: IntOrSequence | None
) -> nn.Module:
    return _ADAPTIVE_AVG[spatial_dims](kernel_size)


@POOLS.register("adaptive_max", description="adaptive max pooling to kernel_size (global: 1)")
def _adaptive_max(
    spatial_dims: int, kernel_size: IntOrSequence, stride: IntOrSequence | None
) -> nn.Module:
    return _ADAPTIVE_MAX[spatial_dims](kernel_size)


def pool(
    name: str,
    spatial_dims: int,
    *,
    kernel_size: IntOrSequence = 2,
    stride: IntOrSequence | None = None,
) -> nn.Module:
    """Pooling by name: ``max``, ``avg``, ``adaptive_avg``, ``adaptive_max``.

    For the adaptive kinds ``kernel_size`` is the output size (``1`` = global pooling).

    Raises:
        RegistryError: unknown name (with suggestions).
    """
    factory = POOLS.get(name)
    return factory(check_spatial_dims(spatial_dims), kernel_size, stride)


def dropout(spatial_dims: int, probability: float, *, channelwise: bool = False) -> nn.Module:
    """Dropout; ``channelwise=True`` drops whole feature maps (``Dropout{1,2,3}d``).

    Raises:
        ConfigError: when ``probability`` is outside ``[0, 1)``.
    """
    if not 0.0 <= probability < 1.0:
        raise ConfigError(f"dropout: expected a probability in [0, 1), got {probability!r}")
    if probability == 0.0:
        return nn.Identity()
    if channelwise:
        return _DROPOUT[check_spatial_dims(spatial_dims)](probability)
    return nn.Dropout(probability)


class Upsample(nn.Module):
    """Interpolate by a scale factor or to the size of a reference tensor.

    Args:
        spatial_dims: 1, 2 or 3.
        scale_factor: per-axis factor (int or list).
        mode: ``nearest`` or ``linear`` (``bilinear``/``trilinear`` are accepted aliases).
    """

    def __init__(
        self, spatial_dims: int, *, scale_factor: IntOrSequence = 2, mode: str = "nearest"
    ):
        super().__init__()
        dims = check_spatial_dims(spatial_dims)
        if mode not in UPSAMPLE_MODES:
            from voxelflow.registry import suggest

            raise ConfigError(
                f"upsample mode: expected one of {sorted(UPSAMPLE_MODES)}, got {mode!r}."
                f"{suggest(mode, sorted(UPSAMPLE_MODES))}"
            )
        self.mode = (
            "nearest" if mode == "nearest" else {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
        )
        self.scale_factor = tuple(
            float(s) for s in as_tuple(scale_factor, dims, name="scale_factor")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, C, *spatial)`` → ``(B, C, *(spatial * scale_factor))``."""
        size = [int(s * f) for s, f in zip(x.shape[2:], self.scale_factor)]
        return resize(x, size, mode=self.mode)


def resize(x: torch.Tensor, size: Sequence[int], *, mode: str = "nearest") -> torch.Tensor:
    """Interpolate ``x`` to a spatial ``size`` (``align_corners=False`` for linear modes).

    Shape:
        ``(B, C, *spatial)`` → ``(B, C, *size)``.
    """
    if mode == "nearest":
        return nn.functional.interpolate(x, size=list(size), mode="nearest")
    return nn.functional.interpolate(x, size=list(size), mode=mode, align_corners=False)


def linear_mode(spatial_dims: int) -> str:
    """The torch interpolation mode name for linear interpolation in ``spatial_dims``."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[check_spatial_dims(spatial_dims)]


def upsample(
    spatial_dims: int, *, scale_factor: IntOrSequence = 2, mode: str = "nearest"
) -> nn.Module:
    """Upsampling layer by mode name (``nearest`` or ``linear``); see :class:`Upsample`."""
    return Upsample(spatial_dims, scale_factor=scale_factor, mode=mode)
