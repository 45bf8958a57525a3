"""torch.export for every registered network (default options), ONNX for unet/highresnet/resnet."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from voxelflow.networks import NETWORKS, build_network

# Smallest valid input size per network at its default options (3D).
DEFAULT_SIZE = {
    "unet": 32,
    "vnet": 16,
    "dense_vnet": 8,
    "deepmedic": 51,
    "highresnet": 8,
    "vae": 32,
    "autoencoder": 32,
    "generator": 32,
    "discriminator": 32,
}


def default_network_and_inputs(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    net = build_network(name, spatial_dims=3, in_channels=1, out_channels=2).eval()
    if name == "generator":
        return net, (torch.randn(2, net.noise_size),)
    size = DEFAULT_SIZE.get(name, 8)
    return net, (torch.randn(2, 1, size, size, size),)


def as_list(output: Any) -> list[torch.Tensor]:
    return [output[k] for k in sorted(output)] if isinstance(output, dict) else [output]


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORKS.names())
def test_torch_export_matches_eager(name: str) -> None:
    net, inputs = default_network_and_inputs(name)
    exported = torch.export.export(net, inputs)
    with torch.no_grad():
        expected, got = as_list(net(*inputs)), as_list(exported.module()(*inputs))
    for reference, value in zip(expected, got, strict=True):
        torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-5)


def test_unet_deep_supervision_heads_export() -> None:
    net = build_network(
        "unet",
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        channels=[4, 8, 16],
        deep_supervision=1,
    ).eval()

    class DeepSupervision(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return self.inner.forward_with_deep_supervision(x)

    x = torch.randn(1, 1, 16, 12)
    outputs = torch.export.export(DeepSupervision(net), (x,)).module()(x)
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 16, 12), (1, 2, 8, 6)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options, size",
    [
        ("unet", {"channels": [8, 16, 32]}, 16),
        ("highresnet", {}, 12),
        ("resnet", {}, 16),
        ("unet", {"channels": [8, 16], "residual": True, "pad_to_multiple": True}, 15),
    ],
)
def test_onnx_export_runs_in_onnxruntime(
    name: str, options: dict[str, Any], size: int, tmp_path
) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = build_network(name, spatial_dims=3, in_channels=2, out_channels=3, **options).eval()
    x = torch.randn(1, 2, size, size, size)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        net, (x,), str(path), dynamo=True, input_names=["image"], output_names=["logits"]
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    assert result.shape == expected.shape
    torch.testing.assert_close(
        torch.from_numpy(result), torch.from_numpy(expected), rtol=1e-3, atol=1e-4
    )


@pytest.mark.parametrize(
    "name, options, multiple",
    [
        ("unet", {"channels": [4, 8, 16]}, 4),
        ("highresnet", {"features": [4, 8], "dilations": [1, 2]}, 1),
    ],
)
def test_export_with_dynamic_spatial_sizes(
    name: str, options: dict[str, Any], multiple: int
) -> None:
    net = build_network(name, spatial_dims=3, in_channels=1, out_channels=2, **options).eval()
    dims = [torch.export.Dim(f"d{axis}", min=2, max=64) for axis in range(3)]
    shapes = {"x": {2 + axis: multiple * dim for axis, dim in enumerate(dims)}}
    exported = torch.export.export(net, (torch.randn(1, 1, 16, 16, 16),), dynamic_shapes=shapes)
    x = torch.randn(1, 1, 2 * multiple, 3 * multiple, 5 * multiple)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), net(x), rtol=1e-4, atol=1e-5)
