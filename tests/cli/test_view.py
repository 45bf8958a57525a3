"""``voxelflow view`` and ``Image.plot`` / ``Subject.plot``: the rendered PNG's pixels are checked.

The image is black (all zeros), so every coloured pixel is an overlay: its colour is the label
colour blended at :data:`OVERLAY_ALPHA` over black, and where it lies inside each panel tells
whether the slices pass through the label and are turned to RAS.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from voxelflow.cli.main import main
from voxelflow.errors import GeometryError
from voxelflow.io.image import Image, Subject
from voxelflow.io.plot import (
    OVERLAY_ALPHA,
    PALETTE,
    foreground_centre,
    parse_label_names,
    plot_views,
)

SHAPE = (20, 24, 16)


def _blend(colour: str) -> np.ndarray:
    """The RGB (0..1) of an overlay over a black image."""
    return OVERLAY_ALPHA * np.asarray(to_rgb(colour))


def _mask_of(png: np.ndarray, colour: str, tolerance: float = 0.03) -> np.ndarray:
    return np.all(np.abs(png[..., :3] - _blend(colour)) < tolerance, axis=-1)


def _panels(figure) -> list[tuple[int, int, int, int]]:
    """Pixel boxes ``(row0, row1, col0, col1)`` of each axes in the saved PNG (rows top-down)."""
    height = figure.get_size_inches()[1] * figure.dpi
    boxes = []
    for axes in figure.axes:
        box = axes.get_window_extent()
        boxes.append((int(height - box.y1), int(height - box.y0), int(box.x0), int(box.x1)))
    return boxes


def _label_volume() -> np.ndarray:
    """Label 1: a block in the patient's right, anterior, superior corner (RAS grid); label 2
    a block in the left, posterior, inferior corner."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[14:18, 16:21, 10:14] = 1  # high x (right), high y (anterior), high z (superior)
    label[3:6, 3:7, 2:5] = 2
    return label


def test_overlay_colour_lies_where_the_label_is(tmp_path: Path) -> None:
    label = _label_volume()
    image = Image(torch.zeros(1, *SHAPE))
    label_image = Image(torch.from_numpy(label[None].astype(np.int16)), kind="label")
    centre = (15, 18, 11)  # inside label 1
    figure = plot_views(image, label=label_image, centre=centre, label_names={1: "lesion"})
    path = tmp_path / "view.png"
    from voxelflow.io.plot import save_figure

    save_figure(figure, path)
    png = matplotlib.image.imread(path)
    red = _mask_of(png, PALETTE[0])
    boxes = _panels(figure)
    assert len(boxes) == 3
    for (r0, r1, c0, c1), view in zip(boxes, ("sagittal", "coronal", "axial")):
        panel = red[r0:r1, c0:c1]
        assert panel.sum() > 50, view  # label 1 is visible in every view through it
        rows, cols = np.nonzero(panel)
        # sagittal: anterior to the right, superior up; coronal: right to the right, superior
        # up; axial: right to the right, anterior up. Label 1 sits at the high end of each.
        assert cols.mean() > panel.shape[1] / 2, view
        assert rows.mean() < panel.shape[0] / 2, view
    # the legend swatch names label 1 (red pixels outside every panel) and the title says where
    swatch = np.all(np.abs(png[..., :3] - np.asarray(to_rgb(PALETTE[0]))) < 0.03, axis=-1)
    for r0, r1, c0, c1 in boxes:
        assert not swatch[r0:r1, c0:c1].any()
    assert swatch.sum() > 20
    assert "voxel (15, 18, 11)" in figure.get_suptitle()
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["1 lesion", "2"]  # 2 unnamed


def test_no_label_no_overlay_colour(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image(torch.zeros(1, *SHAPE)).plot(path=path)
    png = matplotlib.image.imread(path)
    assert not any(_mask_of(png, colour).any() for colour in PALETTE[:2])


def test_orientation_is_turned_to_ras(tmp_path: Path) -> None:
    """The same anatomy stored LPS (x and y flipped) gives the same picture as RAS."""
    label = _label_volume()
    flipped = label[::-1, ::-1, :].copy()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:3, 3] = (SHAPE[0] - 1, SHAPE[1] - 1, 0)  # so both grids cover the same world box
    pictures = []
    for data, affine in ((label, np.eye(4)), (flipped, lps)):
        image = Image(torch.zeros(1, *SHAPE), affine)
        overlay = Image(torch.from_numpy(data[None].astype(np.int16)), affine, kind="label")
        path = tmp_path / f"{len(pictures)}.png"
        figure = image.plot(overlay, path=path)
        figure.suptitle("")  # the titles name different voxel indices
        from voxelflow.io.plot import save_figure

        save_figure(figure, path)
        pictures.append(matplotlib.image.imread(path))
    assert image.orientation == "LPS"
    assert np.array_equal(_mask_of(pictures[0], PALETTE[0]), _mask_of(pictures[1], PALETTE[0]))
    assert np.array_equal(_mask_of(pictures[0], PALETTE[1]), _mask_of(pictures[1], PALETTE[1]))


def test_foreground_centre_prefers_the_label_then_bright_voxels() -> None:
    data = np.zeros(SHAPE, dtype=np.float32)
    data[2:6, 2:6, 2:6] = 100.0
    image = Image(torch.from_numpy(data[None]))
    assert foreground_centre(image) == (4, 4, 4)  # mean of 2..5 is 3.5, rounded half to even
    label = np.zeros(SHAPE, dtype=np.int16)
    label[10, 12, 8] = 3
    assert foreground_centre(image, Image(torch.from_numpy(label[None]), kind="label")) == (
        10, 12, 8,
    )  # fmt: skip


def test_overlay_on_another_grid_is_refused() -> None:
    image = Image(torch.zeros(1, *SHAPE))
    other = Image(torch.zeros(1, *SHAPE, dtype=torch.int16), np.diag([2.0, 1, 1, 1]), kind="label")
    with pytest.raises(GeometryError, match="the image and its label"):
        plot_views(image, label=other)


def test_subject_plot_uses_its_roles(tmp_path: Path) -> None:
    label = _label_volume()
    subject = Subject(
        "case7",
        {
            "image": Image(torch.zeros(1, *SHAPE)),
            "label": Image(torch.from_numpy(label[None].astype(np.int16)), kind="label"),
            "pred": Image(torch.from_numpy((label[None] == 1).astype(np.int16)), kind="label"),
        },
    )
    figure = subject.plot(path=tmp_path / "s.png", label_names={1: "a", 2: "b"})
    assert len(figure.axes) == 6  # label row and prediction row
    assert figure.get_suptitle().startswith("case7 (image): slices through voxel")
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["1 a", "2 b"]
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_label_names_forms(tmp_path: Path) -> None:
    assert parse_label_names("1=grey_matter, 2=white_matter") == {
        1: "grey_matter",
        2: "white_matter",
    }
    names = tmp_path / "names.yaml"
    names.write_text("1: liver\n2: tumour\n")
    assert parse_label_names(str(names)) == {1: "liver", 2: "tumour"}


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_view_command_writes_the_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    image = _write(tmp_path / "case_t1.nii.gz", np.zeros(SHAPE, dtype=np.float32), affine)
    label = _write(tmp_path / "case_seg.nii.gz", _label_volume(), affine)
    out = tmp_path / "out" / "case.png"
    code = main(
        ["view", str(image), "--label", str(label), "--pred", str(label),
         "--label-names", "1=tumour,2=oedema", "-o", str(out)]
    )  # fmt: skip
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    png = matplotlib.image.imread(out)
    # the slices pass through one block (the other lies in the opposite corner): its overlay
    # shows in both rows; both values are in the legend
    shown = [_mask_of(png, colour).sum() for colour in PALETTE[:2]]
    assert max(shown) > 200 and min(shown) == 0
    for colour in PALETTE[:2]:
        assert np.all(np.abs(png[..., :3] - np.asarray(to_rgb(colour))) < 0.03, axis=-1).sum() > 20


def test_view_default_output_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = _write(tmp_path / "scan.nii.gz", np.random.rand(*SHAPE).astype(np.float32), np.eye(4))
    assert main(["view", str(image)]) == 0
    assert (tmp_path / "scan_view.png").is_file()
    capsys.readouterr()
    assert main(["view", str(image), "--at", "1,2"]) == 1  # two indices for a 3D image
    assert "centre: expected 3 voxel indices" in capsys.readouterr().err
    assert main(["view", str(image), "--label-names", "tumour"]) == 2
    assert "expected VALUE=NAME pairs" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing.nii.gz")]) == 1
    assert "missing.nii.gz" in capsys.readouterr().err
