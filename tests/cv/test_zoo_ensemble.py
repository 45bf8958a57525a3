"""A zoo entry packs an ensemble of fold runs; ``infer --model`` runs it as ``infer --folds all``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from cv_data import segmentation_config, write_config, write_phantoms

from voxelflow.cli.main import main
from voxelflow.config.load import load_experiment
from voxelflow.errors import ConfigError, SecurityError
from voxelflow.zoo.entry import ModelCard, load_card
from voxelflow.zoo.pack import pack_run
from voxelflow.zoo.store import install, resolve_model

PROB = ["--set", "inference.save_probabilities=true"]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two folds trained for 2 iterations and ``voxelflow cv`` run; (config, root, test table)."""
    tmp = tmp_path_factory.mktemp("ens")
    table = write_phantoms(tmp / "data", 6)
    config = segmentation_config(
        table,
        tmp / "run",
        split={"folds": 2, "test": 0.0},
        training={"max_iterations": 2, "validate_every": 2, "checkpoint_every": 2},
    )
    path = write_config(tmp / "exp.yaml", config)
    assert main(["train", "-c", str(path), "--fold", "all"]) == 0
    assert main(["cv", "-c", str(path)]) == 0
    root = Path(load_experiment(path).system.run_dir)
    inputs = tmp / "inputs.csv"  # two subjects, images only (new data)
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))[:2]
    inputs.write_text(
        "subject,image\n" + "".join(f"{r['subject']},{table.parent / r['image']}\n" for r in rows)
    )
    return path, root, inputs


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_installed_ensemble_predicts_as_infer_folds_all(
    cv_run: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, root, inputs = cv_run
    monkeypatch.setenv("VOXELFLOW_ZOO_HOME", str(tmp_path / "zoo"))
    archive = tmp_path / "ens.zip"
    assert main(["zoo", "pack", str(root), "--folds", "all", "--name", "ens",
                 "--weights-format", "safetensors", "--out", str(archive)]) == 0  # fmt: skip
    assert main(["zoo", "install", str(archive)]) == 0
    card = resolve_model("ens").card
    assert [m.name for m in card.files.members] == ["fold_0", "fold_1"]
    assert all(f.endswith(".safetensors") for m in card.files.members for f in m.weights.values())
    assert set(card.listed_files()) <= set(card.sha256)
    assert any(key.startswith("cv_dice") for key in card.metrics), card.metrics
    assert (root / "cv/postprocessing.json").is_file() and card.files.postprocessing

    folds_out, model_out = tmp_path / "folds", tmp_path / "model"
    assert main(["infer", "-c", str(config), "--folds", "all", "--input", str(inputs),
                 "--out", str(folds_out), *PROB]) == 0  # fmt: skip
    assert main(["infer", "--model", "ens", "--input", str(inputs),
                 "--out", str(model_out), *PROB]) == 0  # fmt: skip
    names = sorted(p.name for p in folds_out.iterdir())
    assert names == sorted(p.name for p in model_out.iterdir())  # same output naming
    for name in names:
        if name.endswith("_seg.nii.gz"):
            np.testing.assert_array_equal(_load(folds_out / name), _load(model_out / name))
        elif name.endswith("_prob.nii.gz"):
            np.testing.assert_allclose(_load(folds_out / name), _load(model_out / name), atol=1e-6)
    assert any(n.endswith("_prob.nii.gz") for n in names)

    from voxelflow import Experiment

    image = nib.load(next(folds_out.glob("*_seg.nii.gz")))  # any image grid will do
    subject = (np.random.default_rng(0).random(image.shape, dtype=np.float32), image.affine)
    by_model = Experiment.from_model("ens").infer([subject])
    by_folds = Experiment.from_yaml(config).infer([subject], folds="all")
    np.testing.assert_array_equal(by_model[0].images["seg"].data, by_folds[0].images["seg"].data)


def test_tampered_member_weights_are_refused(
    cv_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, root, _ = cv_run
    entry = pack_run(root, folds="0,1", out=tmp_path / "ens_folder")
    target = entry / "members" / "fold_1" / "weights" / "network.pt"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(
        SecurityError, match=r"checksum mismatch for 'members/fold_1/weights/network.pt'"
    ):
        install(entry, home=tmp_path / "zoo")
    assert not (tmp_path / "zoo" / "entries" / "ens_folder").exists()


def test_single_entry_card_keeps_the_old_schema(
    cv_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, root, _ = cv_run
    entry = pack_run(root / "fold_0", out=tmp_path / "single")
    raw = yaml.safe_load((entry / "model.yaml").read_text())
    assert "members" not in raw["files"] and "postprocessing" not in raw["files"]
    # a card written before ensembles (no members key) loads, installs and infers as one model
    card = load_card(entry)
    assert not card.is_ensemble
    assert ModelCard.model_validate(raw).files.members == []
    model = install(entry, home=tmp_path / "zoo")
    assert model.weights_paths == {"network": model.path / "weights" / "network.pt"}


def test_pack_folds_refusals(cv_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, root, _ = cv_run
    with pytest.raises(ConfigError, match=r"expected a fold in 0\.\.1"):
        pack_run(root, folds="7", out=tmp_path / "x.zip")
    with pytest.raises(ConfigError, match="expected fold runs"):
        pack_run(tmp_path, folds="all", out=tmp_path / "y.zip")
    unfinished = tmp_path / "partial"
    shutil.copytree(root / "fold_0", unfinished / "fold_0")
    (unfinished / "fold_0" / "fold_done.json").unlink()
    with pytest.raises(ConfigError, match=r"fold 0 is not ready to pack.*--fold 0"):
        pack_run(unfinished, folds="0", out=tmp_path / "z.zip")


def test_ensemble_card_refuses_duplicate_members(tmp_path: Path) -> None:
    member = {"name": "fold_0", "weights": {"network": "members/fold_0/weights/network.pt"}}
    with pytest.raises(ValueError, match="distinct member names"):
        ModelCard.model_validate(
            {"name": "e", "version": "1", "application": "segmentation",
             "files": {"weights": member["weights"], "members": [member, member]}}
        )  # fmt: skip


def test_ensemble_entry_with_different_label_sets_is_refused(
    cv_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from voxelflow.zoo.entry import dump_card, sha256_of

    _, root, inputs = cv_run
    entry = pack_run(root, folds="all", out=tmp_path / "mixed")
    state_file = entry / "members" / "fold_1" / "preprocessing.json"
    state = json.loads(state_file.read_text())
    state["label_values"] = [0, 1, 2]  # as many classes (the weights fit), other label values
    state_file.write_text(json.dumps(state))
    card = load_card(entry)
    digests = {**card.sha256, "members/fold_1/preprocessing.json": sha256_of(state_file)}
    dump_card(card.model_copy(update={"sha256": digests}), entry / "model.yaml")
    args = ["infer", "--model", str(entry), "--input", str(inputs), "--out", str(tmp_path / "o")]
    assert main(args) != 0
    message = capsys.readouterr().err
    assert "one label set expected" in message and "(fold_0)" in message and "(fold_1)" in message
