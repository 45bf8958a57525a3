"""Grid sampling, aggregation and sliding_window (reference: MONAI sliding_window_inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sampling_fixtures import make_subject

from voxelflow.errors import ConfigError, ShapeError
from voxelflow.sampling.grid import (
    GridAggregator,
    GridSampler,
    grid_starts,
    importance_map,
    sliding_window,
)
from voxelflow.sampling.resize import ResizeAggregator

IMAGE = torch.rand(2, 2, 21, 17, 9, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("blend", ["gaussian", "mean", "crop"])
@pytest.mark.parametrize("overlap", [0.5, 0.25, 3])
def test_identity_network_reproduces_input(blend, overlap):
    out = sliding_window(
        torch.nn.Identity(), IMAGE, (8, 6, 0), overlap=overlap, blend=blend, batch_size=3
    )
    assert out.shape == IMAGE.shape and out.dtype == torch.float32
    tolerance = 0.0 if blend == "crop" else 1e-6
    torch.testing.assert_close(out, IMAGE, atol=tolerance, rtol=tolerance)


def test_window_larger_than_image_and_2d():
    image = torch.rand(1, 1, 5, 7)
    torch.testing.assert_close(sliding_window(torch.nn.Identity(), image, (8, 8)), image)


def test_wrong_dimensionality_and_bad_options():
    with pytest.raises(ShapeError, match="expected a sliding window of 3 sizes"):
        sliding_window(torch.nn.Identity(), IMAGE, (8, 8))
    with pytest.raises(ConfigError, match="blend"):
        sliding_window(torch.nn.Identity(), IMAGE, (8, 8, 8), blend="max")
    with pytest.raises(ConfigError, match="overlap"):
        grid_starts((10,), (4,), 1.5)


def test_grid_starts_match_monai():
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for shape, window, overlap in [
        ((160, 160, 128), (96, 96, 96), 0.5),
        ((21, 17, 9), (8, 6, 9), 0.25),
    ]:
        interval = _get_scan_interval(shape, window, 3, (overlap,) * 3)
        expected = sorted(
            tuple(s.start for s in sl) for sl in dense_patch_slices(shape, window, interval)
        )
        assert sorted(map(tuple, grid_starts(shape, window, overlap).tolist())) == expected


@pytest.mark.parametrize("overlap", [0.5, 0.25])
def test_gaussian_blend_equals_monai(overlap):
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.Tanh()).eval()
    ours = sliding_window(
        network, IMAGE, (8, 6, 6), overlap=overlap, blend="gaussian", batch_size=4
    )
    with torch.no_grad():
        theirs = sliding_window_inference(
            IMAGE, (8, 6, 6), 4, network, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (importance_map((8, 6, 6)) > 0).all()


def test_batch_size_and_float16_accumulation():
    network = torch.nn.Conv3d(2, 1, 3, padding=1)
    base = sliding_window(network, IMAGE, (8, 8, 8), batch_size=1)
    torch.testing.assert_close(sliding_window(network, IMAGE, (8, 8, 8), batch_size=7), base)
    half = sliding_window(network, IMAGE, (8, 8, 8), accumulate_dtype=torch.float16)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), base, atol=5e-3, rtol=5e-3)


class ValidConv(torch.nn.Module):
    """A network with valid convolutions: its output window is smaller than its input."""

    def forward(self, x):
        return x[:, :, 2:-2, 2:-2, 2:-2]

    def output_size(self, size):
        return tuple(s - 4 for s in size)


@pytest.mark.parametrize("blend", ["gaussian", "mean", "crop"])
def test_smaller_output_window_is_centred(blend):
    out = sliding_window(ValidConv(), IMAGE, (10, 10, 8), overlap=0.25, blend=blend)
    torch.testing.assert_close(out, IMAGE, atol=1e-6, rtol=0)


def test_flip_tta_averages_flipped_predictions():
    weights = torch.arange(21.0).view(1, 1, 21, 1, 1)
    network = lambda x: x * 2  # noqa: E731
    torch.testing.assert_close(sliding_window(network, IMAGE, (8, 6, 9), flip_tta=True), IMAGE * 2)

    def position_dependent(x):
        return x + torch.linspace(0, 1, x.shape[2]).view(1, 1, -1, 1, 1)

    out = sliding_window(
        position_dependent, weights.expand(1, 1, 21, 4, 4).contiguous(), (21, 4, 4), flip_tta=True
    )
    torch.testing.assert_close(out, weights.expand(1, 1, 21, 4, 4) + 0.5)


def test_uncovered_voxels_get_fill_value():
    aggregator = GridAggregator((6, 6), window=(3, 3), blend="mean", fill_value=-1.0)
    aggregator.add(torch.ones(1, 1, 3, 3), np.array([[0, 0]]))
    out = aggregator.result()
    assert (out[0, :3, :3] == 1).all() and (out[0, 3:, :] == -1).all()
    with pytest.raises(ShapeError, match="window"):
        aggregator.add(torch.ones(1, 1, 4, 4), np.array([[0, 0]]))


def test_grid_sampler_and_aggregator_round_trip(memmap_subject):
    sampler = GridSampler((8, 8, 8), overlap=0.25)
    windows = sampler.sample(memmap_subject)
    aggregator = GridAggregator(
        memmap_subject.spatial_shape, window=(8, 8, 8), blend="gaussian", overlap=0.25
    )
    aggregator.add(
        torch.stack([w["image"] for w in windows]), torch.stack([w["location"] for w in windows])
    )
    torch.testing.assert_close(
        aggregator.result().numpy(), np.array(memmap_subject.arrays["image"]), atol=1e-6, rtol=0
    )


def test_resize_aggregator_maps_back():
    subject = make_subject(shape=(20, 22, 16))
    label = torch.from_numpy(np.asarray(subject.arrays["label"]))
    small = label[:, 1::2, 1::2, 1::2]
    back = ResizeAggregator((20, 22, 16), kind="label")(small[None])[0]
    assert back.shape == label.shape and back.dtype == torch.uint8
    np.testing.assert_array_equal(back[:, 1::2, 1::2, 1::2].numpy(), small.numpy())
    assert ResizeAggregator((20, 22, 16))(torch.rand(2, 5)).shape == (2, 5)


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
@pytest.mark.parametrize("overlap", [0.5, 0.25, 0.0])
def test_known_grid_equals_window_by_window(blend, overlap):
    """A grid given up front (weights summed slab by slab, no zeroing) blends like add-only."""
    shape, window = (21, 17, 9), (8, 6, 5)
    starts = grid_starts(shape, window, overlap)
    outputs = torch.rand(len(starts), 2, *window, generator=torch.Generator().manual_seed(1))
    known = GridAggregator(shape, window=window, blend=blend, overlap=overlap, starts=starts)
    plain = GridAggregator(shape, window=window, blend=blend, overlap=overlap)
    assert known.grid is not None and known.count is None
    for first in range(0, len(starts), 3):
        known.add(outputs[first : first + 3], starts[first : first + 3])
        plain.add(outputs[first : first + 3], starts[first : first + 3])
    torch.testing.assert_close(known.result(), plain.result(), atol=1e-6, rtol=1e-6)


def test_known_grid_refuses_windows_out_of_order():
    starts = grid_starts((12, 12), (8, 8), 0.5)
    aggregator = GridAggregator((12, 12), window=(8, 8), starts=starts)
    with pytest.raises(ShapeError, match="in the order given"):
        aggregator.add(torch.ones(1, 1, 8, 8), starts[1:2])


def test_known_grid_refuses_a_result_before_its_last_window():
    starts = grid_starts((12, 12), (8, 8), 0.5)
    aggregator = GridAggregator((12, 12), window=(8, 8), starts=starts)
    aggregator.add(torch.ones(2, 1, 8, 8), starts[:2])
    with pytest.raises(ShapeError, match=f"all {len(starts)} windows added before result"):
        aggregator.result()


def test_partial_grid_falls_back_to_window_sums():
    starts = grid_starts((12, 12), (8, 8), 0.5)[:2]  # does not cover the image
    aggregator = GridAggregator((12, 12), window=(8, 8), starts=starts, fill_value=-1.0)
    assert aggregator.grid is None
    aggregator.add(torch.ones(2, 1, 8, 8), starts)
    assert (aggregator.result()[0, 10:, :] == -1.0).all()


def test_float16_accumulation_agrees_with_float32():
    """inference.accumulate: float16 (accepted on the CPU): argmax ≥ 99.9 %, |Δprob| ≤ 2e-3."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1)
    ).eval()
    image = torch.rand(1, 1, 40, 36, 24, generator=torch.Generator().manual_seed(2))
    full, half = (
        sliding_window(network, image, (16, 16, 16), accumulate_dtype=dtype)
        for dtype in (torch.float32, torch.float16)
    )
    assert half.dtype == torch.float16
    agreement = (full.argmax(1) == half.float().argmax(1)).float().mean().item()
    difference = (full.softmax(1) - half.float().softmax(1)).abs().max().item()
    assert agreement >= 0.999 and difference <= 2e-3
