"""The zoo entry shipped in the repository (``zoo/voxelflow-demo-tissue``): install, infer, check.

The entry is the U-Net ``voxelflow demo --release`` trains (grey/white matter at 2 mm). The test
installs it from the repository path into a temporary zoo home, runs ``voxelflow infer --model``
on a new MNI-like subject stored in a non-RAS orientation (flipped first axis), and checks that
the prediction is written on the input's grid and that it segments the tissues (Dice > 0.5).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelflow.cli.main import main
from voxelflow.metrics import dice

ENTRY = Path(__file__).resolve().parents[2] / "zoo" / "voxelflow-demo-tissue"


def _flipped_subject(source_image: Path, source_label: Path, out_dir: Path) -> tuple[Path, Path]:
    """Rewrite a subject with its first voxel axis reversed (LAS instead of RAS), same anatomy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for source, name in ((source_image, "subject01.nii.gz"), (source_label, "label01.nii.gz")):
        loaded = nib.load(str(source))
        data = np.asanyarray(loaded.dataobj)[::-1].copy()
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1.0, data.shape[0] - 1
        target = out_dir / name
        nib.save(nib.Nifti1Image(data, loaded.affine @ flip), str(target))
        paths.append(target)
    return paths[0], paths[1]


def test_entry_files_are_complete_and_small() -> None:
    from voxelflow.zoo.store import verify_entry

    installed = verify_entry(ENTRY)  # checksums, model.yaml fields, weights without pickled code
    assert installed.name == "voxelflow-demo-tissue"
    total = sum(f.stat().st_size for f in ENTRY.rglob("*") if f.is_file())
    assert total < 5 * 2**20  # float16 weights of the 4-level planned U-Net: 2.8 MB
    assert installed.card.outputs.labels == {0: "other", 1: "grey_matter", 2: "white_matter"}
    config = installed.config_path.read_text()
    assert "/tmp" not in config and "/home" not in config  # zoo pack scrubbed machine paths


@pytest.mark.slow
def test_install_from_repository_and_infer_on_a_new_subject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxelflow.demo.data import load_template, make_demo_dataset
    from voxelflow.zoo.store import resolve_model

    if load_template() is None:
        pytest.skip("nilearn (MNI152 template) is not installed")
    data = make_demo_dataset(tmp_path / "data", num_train=0, num_test=1, spacing=3.0, seed=2024)
    image_path, label_path = _flipped_subject(
        next((data.test_csv.parent / "images").iterdir()),
        next((data.test_csv.parent / "labels").iterdir()),
        tmp_path / "input",
    )
    label_path.rename(tmp_path / label_path.name)  # only the image goes into the input folder
    home = tmp_path / "zoo-home"
    assert main(["zoo", "--home", str(home), "install", str(ENTRY)]) == 0
    assert resolve_model("voxelflow-demo-tissue", home=home).path.is_relative_to(home)
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(home))
    arguments = ["--input", str(tmp_path / "input"), "--out", str(tmp_path / "out")]
    assert main(["infer", "--model", "voxelflow-demo-tissue", *arguments]) == 0
    (prediction_path,) = sorted((tmp_path / "out").glob("*.nii*"))
    prediction, source = nib.load(str(prediction_path)), nib.load(str(image_path))
    assert prediction.shape[:3] == source.shape[:3]
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-4)
    predicted = np.asanyarray(prediction.dataobj).reshape(source.shape[:3])
    reference = np.asanyarray(nib.load(str(tmp_path / label_path.name)).dataobj)
    assert set(np.unique(predicted).tolist()) <= {0, 1, 2}
    for tissue in (1, 2):  # grey matter, white matter
        assert dice(predicted == tissue, reference == tissue) > 0.5


@pytest.mark.slow
def test_shipped_card_figures_match_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's held-out Dice is what the shipped weights give on the demo's (seeded) test
    subjects, regenerated here; and the card states its spacing, intensities and limits."""
    from voxelflow.demo.data import load_template, make_demo_dataset
    from voxelflow.demo.run import RELEASE
    from voxelflow.io.table import read_csv_table
    from voxelflow.zoo.store import verify_entry

    if load_template() is None:
        pytest.skip("nilearn (MNI152 template) is not installed")
    card = verify_entry(ENTRY).card
    assert card.inputs.spacing == [RELEASE.spacing] * 3 and card.inputs.intensity
    assert "ONE anatomy" in card.training_data and "skull" in card.limitations
    assert "Atropos" in card.checked_on and "--release" in card.description
    # every subject has its own seed: the release run's test subjects, without its 40 others
    data = make_demo_dataset(tmp_path / "data", num_train=RELEASE.num_train,
                             num_test=RELEASE.num_test, spacing=RELEASE.spacing,
                             splits=("test",))  # fmt: skip
    home = tmp_path / "zoo-home"
    assert main(["zoo", "--home", str(home), "install", str(ENTRY)]) == 0
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(home))
    out = tmp_path / "out"
    assert main(["infer", "--model", "voxelflow-demo-tissue", "--input", str(data.test_csv),
                 "--out", str(out)]) == 0  # fmt: skip
    scores: dict[int, list[float]] = {1: [], 2: []}
    for row in read_csv_table(data.test_csv, required=["image", "label"]):
        predicted = np.asanyarray(nib.load(str(out / f"{row.name}_seg.nii.gz")).dataobj)
        reference = np.asanyarray(nib.load(str(row.path("label"))).dataobj)
        for tissue in scores:
            scores[tissue].append(dice(predicted == tissue, reference == tissue))
    assert np.mean(scores[1]) == pytest.approx(card.metrics["test_dice_grey_matter"], abs=0.01)
    assert np.mean(scores[2]) == pytest.approx(card.metrics["test_dice_white_matter"], abs=0.01)


@pytest.mark.slow
def test_shipped_card_real_subject_figures_match_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card's figures on real heads (``real_<subject>_<input>_<grid>_*``) are what the
    shipped weights give on the cached real subjects (``benchmarks/demo_generalisation.py
    --fetch`` fills the cache once; without it the test skips: CI has no network)."""
    from voxelflow.demo import generalisation as g
    from voxelflow.zoo.store import verify_entry

    subjects, missing = g.cached_subjects(g.DEFAULT_CACHE)
    if not subjects:
        pytest.skip(f"no real subject cached in {g.DEFAULT_CACHE}: {'; '.join(missing)}")
    card = verify_entry(ENTRY).card
    shipped = {k: v for k, v in card.metrics.items() if k.startswith("real_")}
    assert shipped, "the card has no real-subject figures"
    home = tmp_path / "zoo-home"
    assert main(["zoo", "--home", str(home), "install", str(ENTRY)]) == 0
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(home))

    def predict(image: Path, out: Path) -> np.ndarray:
        arguments = ["--input", str(image.parent), "--out", str(out)]
        assert main(["infer", "--model", "voxelflow-demo-tissue", *arguments]) == 0
        (path,) = sorted(out.glob("*_seg.nii.gz"))
        return np.asarray(nib.load(str(path)).dataobj)

    # the baseline's figures are not on the card: any fitted baseline will do
    ramp = np.arange(1.0, 65.0).reshape(4, 4, 4)
    baseline = g.fit_brain_baseline([ramp], [(ramp > 32).astype(np.uint8)])
    cases = [c for c in g.make_cases(subjects, baseline) if c.spacing == 3.0]  # 3 mm: seconds each
    rows = g.run_check(cases, predict, tmp_path / "work", log=str)
    measured = g.card_metrics(rows)
    for key, value in measured.items():
        assert key in shipped, f"{key} is not on the card"
        tolerance = 2.0 if key.endswith("outside_ml") else 0.01
        assert value == pytest.approx(shipped[key], abs=tolerance), key
