"""NiftyNet's 2-D windows ``(h, w, 1)`` for every application: a 2-D network over single slices.

NiftyNet took a window whose last size is 1 as 2-D and built 2-D networks for it, whatever the
application. voxelflow's segmentation does the same natively (slice windows); for the other
applications the converter wraps the network as ``{name: voxelflow.niftynet.slices:
single_slice, network: {...the network...}}``: a 2-D network applied to ``(B, C, h, w, 1)``
tensors with the slice axis squeezed, outputs given it back.

Example:
    >>> import torch
    >>> net = single_slice(3, 1, 2, network={"name": "toynet"})
    >>> net(torch.zeros(1, 1, 8, 8, 1)).shape
    torch.Size([1, 2, 8, 8, 1])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["PLUGIN", "SingleSlice", "single_slice"]

#: the network plugin name the converter writes
PLUGIN = "voxelflow.niftynet.slices:single_slice"


def _squeeze(value: Any) -> tuple[Any, bool]:
    """``(B, C, h, w, 1)`` → ``(B, C, h, w)``; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() == 5 and value.shape[-1] == 1:
        return value.squeeze(-1), True
    return value, False


def _unsqueeze(value: Any) -> Any:
    """Give 2-D image outputs ``(B, C, h, w)`` their slice axis back (recursively in tuples,
    lists and dicts); vectors such as logits or latents stay as they are."""
    if isinstance(value, torch.Tensor):
        return value.unsqueeze(-1) if value.dim() == 4 else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # named tuples
        return type(value)(*(_unsqueeze(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_unsqueeze(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _unsqueeze(v) for k, v in value.items()}
    return value


def _sliced(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        squeezed = [_squeeze(a) for a in args]
        named = {k: _squeeze(v) for k, v in kwargs.items()}
        result = function(*(a for a, _ in squeezed), **{k: v for k, (v, _) in named.items()})
        if any(s for _, s in squeezed) or any(s for _, s in named.values()):
            return _unsqueeze(result)
        if not any(isinstance(a, torch.Tensor) and a.dim() == 4 for a in args):
            return _unsqueeze(result) if _generates_slices(function) else result
        return result

    return call


def _generates_slices(function: Callable[..., Any]) -> bool:
    """A method called without an image (a generator's ``forward(noise)``, a decoder) made by a
    :class:`SingleSlice` built for slices: its 2-D images get the slice axis."""
    owner = getattr(function, "__self__", None)
    return bool(getattr(owner, "_voxelflow_slices", False))


class SingleSlice(nn.Module):
    """A 2-D network over ``(B, C, h, w, 1)`` slices; methods of the inner network (``encode``,
    ``decode`` ...) are wrapped the same way.

    Shape:
        ``(B, C, h, w, 1)`` → the inner output with 2-D images as ``(B, C', h, w, 1)``;
        ``(B, C, h, w)`` inputs are passed through unchanged.
    """

    def __init__(self, inner: nn.Module, *, slices: bool = True) -> None:
        super().__init__()
        self.inner = inner
        inner._voxelflow_slices = slices  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _sliced(self.inner.forward)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self._modules["inner"]
            value = getattr(inner, name)
            return _sliced(value) if callable(value) and not isinstance(value, nn.Module) else value


def single_slice(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    network: Mapping[str, Any],
    **kwargs: Any,
) -> nn.Module:
    """Build ``network`` as a 2-D network for NiftyNet's ``(h, w, 1)`` windows.

    Args:
        spatial_dims: 3 for ``(h, w, 1)`` windows (or 2 when the images are 2-D files).
        in_channels: input channels.
        out_channels: output channels.
        network: the wrapped network, ``{name: ..., **options}``.
        **kwargs: what the application passes (``image_size`` loses its trailing 1).

    Raises:
        ConfigError: an image_size whose last size is not 1 with spatial_dims 3.
    """
    from voxelflow.errors import ConfigError
    from voxelflow.networks import build_network

    size = kwargs.get("image_size")
    if size is not None and not isinstance(size, int):
        size = list(size)
        if len(size) == 3:
            if size[-1] != 1:
                raise ConfigError(f"network.image_size: expected (h, w, 1), got {size}")
            kwargs["image_size"] = size[:2]
    options = dict(network)
    name = options.pop("name")
    inner = build_network(
        name,
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        **options,
        **kwargs,
    )
    return SingleSlice(inner, slices=spatial_dims == 3)
