"""Export to ONNX (run with onnxruntime) and torch.export; outputs match PyTorch on a window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.networks import build_network
from voxelflow.zoo import install
from voxelflow.zoo.export import export_network, export_source, preprocessing_json_path
from voxelflow.zoo.pack import pack_run

onnxruntime = pytest.importorskip("onnxruntime")


def _onnx_run(path: Path, image: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "image"
    return session.run(None, {"image": image.numpy()})[0]


def _toynet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("toynet", spatial_dims=3, in_channels=2, out_channels=3, features=4).eval()


@pytest.mark.slow
def test_onnx_softmax_matches_torch_with_dynamic_sizes(tmp_path: Path) -> None:
    net = _toynet()
    out = export_network(
        net, example_shape=(1, 2, 12, 10, 8), format="onnx", out=tmp_path / "net.onnx", head="softmax",
        preprocessing={"preprocessing": {"spacing": [1, 1, 2.5]}},
    )  # fmt: skip
    for shape in [(1, 2, 12, 10, 8), (3, 2, 9, 14, 5)]:  # other batch and spatial sizes
        image = torch.randn(*shape)
        with torch.no_grad():
            expected = torch.softmax(net(image), dim=1).numpy()
        np.testing.assert_allclose(_onnx_run(out, image), expected, atol=1e-5, rtol=1e-4)
    description = json.loads(preprocessing_json_path(out).read_text())
    assert description["head"] == "softmax" and description["preprocessing"]["spacing"] == [
        1,
        1,
        2.5,
    ]
    assert description["input_shape"][1] == 2 and isinstance(description["input_shape"][2], str)


def test_torch_export_argmax_and_logits(tmp_path: Path) -> None:
    net = _toynet()
    image = torch.randn(2, 2, 11, 7, 6)
    with torch.no_grad():
        logits = net(image)
    for head, expected in (("logits", logits), ("argmax", logits.argmax(1, keepdim=True))):
        out = export_network(
            net,
            example_shape=(1, 2, 12, 10, 8),
            format="torch-export",
            out=tmp_path / f"{head}.pt2",
            head=head,
        )
        program = torch.export.load(out)
        with torch.no_grad():
            result = program.module()(image)
        assert result.shape == expected.shape
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)


def test_static_export_fixes_sizes(tmp_path: Path) -> None:
    out = export_network(
        _toynet(),
        example_shape=(1, 2, 8, 8, 6),
        format="torch-export",
        out=tmp_path / "s.pt2",
        dynamic=False,
    )
    assert json.loads(preprocessing_json_path(out).read_text())["input_shape"] == [1, 2, 8, 8, 6]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"format"):
        export_network(_toynet(), example_shape=(1, 2, 8, 8, 8), format="torchscript", out="x")
    with pytest.raises(ConfigError, match=r"head"):
        export_network(
            _toynet(), example_shape=(1, 2, 8, 8, 8), format="onnx", out="x", head="sigmoid"
        )
    with pytest.raises(ShapeError, match=r"expected \(B, C, \*spatial\)"):
        export_network(_toynet(), example_shape=(8, 8, 8), format="onnx", out="x")


@pytest.mark.slow
def test_unet_onnx_from_run_and_zoo_entry(tmp_path: Path, zoo_home: Path) -> None:
    from .conftest import make_run

    run = make_run(tmp_path / "unet_run", network={"name": "unet", "channels": [4, 8]})
    onnx_file = export_source(run, format="onnx", out=tmp_path / "unet.onnx", window=[16, 16, 8])
    from voxelflow.zoo.network import network_from_run

    net, _, _ = network_from_run(run)
    image = torch.randn(2, 1, 16, 24, 16)
    with torch.no_grad():
        expected = net(image)
    expected = (expected[0] if isinstance(expected, list | tuple) else expected).numpy()
    np.testing.assert_allclose(_onnx_run(onnx_file, image), expected, atol=1e-4, rtol=1e-3)
    description = json.loads(preprocessing_json_path(onnx_file).read_text())
    assert description["fitted_state"]["label_values"] == [0, 1, 4]
    install(pack_run(run, out=tmp_path / "unet.zip", name="unet-toy"))
    program_file = export_source("unet-toy", format="torch-export", out=tmp_path / "unet.pt2")
    with torch.no_grad():
        result = torch.export.load(program_file).module()(image)
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-4, rtol=1e-3)
