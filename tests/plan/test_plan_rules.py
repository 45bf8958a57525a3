"""The planning rules against hand-computed values (nnU-Net's published rules, worked by hand)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from voxelflow.planning import rules


def test_median_spacing_when_not_anisotropic():
    spacing, why = rules.target_spacing(
        [[1.0, 1.0, 1.2], [1.0, 1.0, 1.0], [0.9, 0.9, 1.0]], [[160, 192, 160]] * 3
    )
    assert spacing == [1.0, 1.0, 1.0]
    assert "ratio 1 ≤ 3" in why


def test_thick_slices_with_few_voxels_take_the_10th_percentile():
    spacings = [[0.7, 0.7, 5.0], [0.7, 0.7, 5.0], [0.7, 0.7, 2.5], [0.7, 0.7, 5.0], [0.7, 0.7, 6.0]]
    spacing, why = rules.target_spacing(spacings, [[512, 512, 40]] * 5)
    # 10th percentile of [2.5, 5, 5, 5, 6] by linear interpolation: 2.5 + 0.4 * 2.5 = 3.5
    assert spacing == pytest.approx([0.7, 0.7, 3.5])
    assert "10th percentile 3.5" in why and "ratio 7.1 > 3" in why


def test_thick_slices_with_many_voxels_keep_the_median():
    spacing, why = rules.target_spacing(
        [[0.7, 0.7, 5.0], [0.7, 0.7, 2.5]] * 2, [[200, 200, 100]] * 4
    )
    assert spacing == pytest.approx([0.7, 0.7, 3.75])
    assert "enough voxels" in why


def test_percentile_never_finer_than_in_plane():
    spacings = [[1.0, 1.0, 0.5], [1.0, 1.0, 4.0], [1.0, 1.0, 4.0], [1.0, 1.0, 4.0]]
    spacing, _ = rules.target_spacing([[s[2], s[0], s[1]] for s in spacings], [[10, 300, 300]] * 4)
    assert spacing[0] == pytest.approx(1.0 + 1e-5) or spacing[0] >= 1.0


def test_topology_of_thick_slices_pools_in_plane_first():
    topo = rules.topology([0.8, 0.8, 3.4], [192, 192, 40])
    assert topo.strides == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert topo.kernel_sizes[:3] == ((3, 3, 1), (3, 3, 1), (3, 3, 3))
    assert topo.bottleneck == (6, 6, 5)
    assert topo.window == (192, 192, 40)


def test_topology_isotropic_reaches_a_4_voxel_bottleneck_and_pads_the_window():
    topo = rules.topology([1.0, 1.0, 1.0], [128, 128, 100])
    # z: 100 → 50 → 25 → 13 → 7, and 7 < 2 × 4 stops it one level early: stride 16, 100 → 112
    assert topo.strides[-1] == (2, 2, 1) and topo.levels == 6
    assert topo.window == (128, 128, 112) and topo.bottleneck == (4, 4, 7)


def test_larger_budget_gives_a_larger_window_then_a_larger_batch():
    args = {"in_channels": 1, "out_channels": 2, "dataset_voxels": 1e12, "model": rules.GPU_AMP}
    small = rules.plan_window([1, 1, 1], [256, 256, 256], budget_bytes=2e9, **args)
    large = rules.plan_window([1, 1, 1], [256, 256, 256], budget_bytes=8e9, **args)
    assert small.topology.window != large.topology.window
    assert large.estimated_bytes <= 8e9 and small.estimated_bytes <= 2e9
    whole = rules.plan_window([1, 1, 1], [64, 64, 64], budget_bytes=8e9, **args)
    assert whole.topology.window == (64, 64, 64) and whole.batch_size > 2


def test_batch_covers_at_most_5_percent_of_the_dataset():
    plan = rules.plan_window(
        [1, 1, 1],
        [32, 32, 32],
        budget_bytes=80e9,
        in_channels=1,
        out_channels=2,
        dataset_voxels=32**3 * 100,
        model=rules.GPU_AMP,
    )
    assert plan.batch_size == 5 and "5 %" in plan.reason


def test_too_small_a_budget_names_the_minimum():
    with pytest.raises(ValueError, match=r"too small for the smallest sensible window .* needs \d"):
        rules.plan_window(
            [1, 1, 1],
            [128, 128, 128],
            budget_bytes=1e6,
            in_channels=1,
            out_channels=2,
            dataset_voxels=1e9,
            model=rules.CPU_FP32,
        )


MEASURE = r"""
import json, os, sys, threading, time, torch
from voxelflow.networks.unet import UNet
from voxelflow.planning import rules
torch.set_num_threads(1)
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * PAGE
spacing, window, batch = json.loads(sys.argv[1])
topo = rules.topology(spacing, window)
net = UNet(len(window), 1, 3, channels=rules.features_per_level(topo.levels, len(window)),
           strides=[list(s) for s in topo.strides], kernel_sizes=[list(k) for k in topo.kernel_sizes])
x = torch.randn(batch, 1, *topo.window)
y = torch.randint(0, 3, (batch, *topo.window))
before, peak, done = rss(), [0], threading.Event()
def sample():  # the current RSS every millisecond: the peak of this step, whatever came before
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
sampler = threading.Thread(target=sample)
sampler.start()
torch.nn.functional.cross_entropy(net(x), y).backward()
done.set()
sampler.join()
model = rules.CPU_FP32
print(json.dumps({"measured": peak[0] - before,
                  "estimated": model.estimate(topo, batch, 1, 3) - model.fixed_bytes}))
"""


@pytest.mark.parametrize("case", [([1, 1, 1], [48, 48, 48], 2), ([0.8, 0.8, 3.0], [96, 96, 16], 2)])
def test_cpu_memory_model_within_25_percent_of_the_measured_peak(case):
    """Forward + backward of the planned U-Net in a fresh process: peak RSS growth vs the model."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(case)],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["estimated"] == pytest.approx(figures["measured"], rel=0.25), figures
