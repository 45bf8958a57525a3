"""Sliding-window progress: a bar with windows, windows/s and time left, only when switched on."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch

from voxelflow.engine.inference import _named_bars
from voxelflow.sampling.grid import grid_starts, sliding_window
from voxelflow.sampling.progress import window_progress


def _windows(shape=(20, 18, 9), window=(8, 8, 8), overlap=0.5) -> int:
    starts = grid_starts(shape, window, overlap)
    return len(starts)


def test_bar_counts_every_window_with_rate_and_time_left(capsys):
    image = torch.rand(1, 1, 20, 18, 9)
    with window_progress(True, label="case7"):
        out = sliding_window(torch.nn.Identity(), image, (8, 8, 8), batch_size=2)
    torch.testing.assert_close(out, image)  # identity network: the blend gives the image back
    err = capsys.readouterr().err
    total = _windows()
    assert f"{total}/{total}" in err and "case7" in err
    assert re.search(r"window/s|s/window", err)  # rate
    assert re.search(r"<\d\d:\d\d", err)  # time left


def test_silent_by_default_and_off_the_terminal(capsys):
    image = torch.rand(1, 1, 12, 12, 8)
    sliding_window(torch.nn.Identity(), image, (8, 8, 8))
    with window_progress(None):  # standard error is captured here: not a terminal
        sliding_window(torch.nn.Identity(), image, (8, 8, 8))
    assert capsys.readouterr().err == ""


def test_each_subject_names_its_bars_and_the_label_is_restored(capsys):
    items = [SimpleNamespace(name="s1"), SimpleNamespace(name="s2")]
    image = torch.rand(1, 1, 12, 12, 8)
    with window_progress(True):
        for _ in _named_bars(items):
            sliding_window(torch.nn.Identity(), image, (8, 8, 8))
    with window_progress(True):
        sliding_window(torch.nn.Identity(), image, (8, 8, 8))
    err = capsys.readouterr().err
    assert "s1:" in err and "s2:" in err and "sliding window:" in err
