"""The evaluation report renders in a real headless browser and its pictures load.

CI installs Debian's ``chromium`` (``.ci/run``); elsewhere the browser test skips when no
chromium is installed. The page's own script counts the images that loaded
(``body[data-images-loaded]``) after the load event.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from voxelflow.io.image import Image
from voxelflow.metrics.evaluate import evaluate_images


def _evaluated(tmp_path: Path) -> Path:
    label = torch.zeros(1, 16, 16, 8, dtype=torch.int16)
    label[:, 4:12, 4:12, 2:6] = 1
    label[:, 6:9, 6:9, 3:5] = 2
    cases = {
        "good": (Image(label.clone(), kind="label"), Image(label.clone(), kind="label")),
        "shifted": (Image(label.roll(2, dims=1), kind="label"), Image(label.clone(), kind="label")),
        "empty": (
            Image(torch.zeros_like(label), kind="label"),
            Image(torch.zeros_like(label), kind="label"),
        ),
    }
    images = {name: Image(torch.rand(1, 16, 16, 8)) for name in cases}
    out = tmp_path / "evaluation"
    evaluate_images(cases, out, labels=[1, 2], images=images, metrics=["dice", "hd95", "nsd"],
                    label_names={1: "tumour", 2: "necrosis"}, provenance={"run": "runs/demo"})  # fmt: skip
    return out


def test_report_has_provenance_label_names_sorting_and_explanations(tmp_path: Path) -> None:
    out = _evaluated(tmp_path)
    with (out / "per_case.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0])[:3] == ["subject", "label", "label_name"]
    assert {(r["label"], r["label_name"]) for r in rows} == {("1", "tumour"), ("2", "necrosis")}
    page = (out / "report.html").read_text()
    for expected in ("Provenance", "runs/demo", "NSD tolerance (mm)", "surface definition",
                     "voxelflow", "Every case", "onclick='vfSort(this)'", "tumour",
                     "HD95 = 0 on", "Dice is NaN on"):  # fmt: skip
        assert expected in page, expected


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_report_renders_in_a_headless_browser_with_every_image_loaded(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium installed (CI installs it)")
    out = _evaluated(tmp_path)
    page = out / "report.html"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', result.stdout)
    total = re.search(r'data-images="(\d+)"', result.stdout)
    assert loaded and total, result.stdout[:500]
    assert int(total.group(1)) >= 3 and loaded.group(1) == total.group(1)
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
         f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[0] > 100 and float(np.std(pixels[..., :3])) > 0.01  # not a blank page
