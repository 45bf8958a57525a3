"""What ``zoo pack`` writes besides the weights: a config without machine paths, the task state,
and entries of the older one-``network`` format still loading into the application."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from voxelflow.config.load import load_experiment
from voxelflow.errors import CheckpointError
from voxelflow.zoo.pack import NOT_SHIPPED, pack_run, scrub_config


def _resolved(tmp_path: Path, **sections: object) -> dict:
    """A resolved config (every default written) as a plain mapping, like a run's config.yaml."""
    from voxelflow.config.load import dump_experiment

    experiment = load_experiment({"system": {"run_dir": str(tmp_path / "run")}, **sections})
    dump_experiment(experiment, tmp_path / "resolved.yaml")
    return yaml.safe_load((tmp_path / "resolved.yaml").read_text())


def test_scrub_replaces_every_machine_path(tmp_path: Path) -> None:
    config = _resolved(
        tmp_path,
        dataset={"folders": {"t1": {"path": str(tmp_path / "images"), "glob": "*_t1.nii.gz"}}},
        split={"file": str(tmp_path / "split.csv")},
        preprocessing={"cache_dir": str(tmp_path / "cache")},
        transfer={"init_from": {"source": str(tmp_path / "old" / "best.pt")}},
    )
    scrubbed = scrub_config(config, entry_name="brain")

    text = yaml.safe_dump(scrubbed)
    assert str(tmp_path) not in text
    assert scrubbed["dataset"]["folders"]["t1"] == {
        **config["dataset"]["folders"]["t1"],
        "path": NOT_SHIPPED,
    }
    assert scrubbed["split"]["file"] == NOT_SHIPPED
    assert scrubbed["transfer"]["init_from"]["source"] == NOT_SHIPPED
    assert scrubbed["preprocessing"]["cache_dir"] is None
    assert scrubbed["system"]["run_dir"] == "runs/brain"
    assert config["system"]["run_dir"] == str(tmp_path / "run")  # the input is left untouched
    unchanged = {
        k: v
        for k, v in scrubbed.items()
        if k not in ("dataset", "split", "preprocessing", "transfer", "system")
    }
    assert unchanged == {k: config[k] for k in unchanged}
    load_experiment(scrubbed)  # still a valid experiment


def test_scrub_keeps_zoo_names_and_warns_on_other_absolute_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    atlas = str(tmp_path / "atlas.nii.gz")  # a machine path outside the dataset keys
    config = _resolved(
        tmp_path,
        dataset={"csv": str(tmp_path / "table.csv")},
        transfer={"init_from": {"source": "voxelflow-demo-tissue"}},
        task={"template": atlas},
    )
    scrubbed = scrub_config(config, entry_name="brain")
    assert scrubbed["dataset"]["csv"] == NOT_SHIPPED
    assert scrubbed["transfer"]["init_from"]["source"] == "voxelflow-demo-tissue"
    assert "task.template" in caplog.text and atlas in caplog.text


def test_packed_entry_has_scrubbed_config_and_task_state(run_dir: Path, tmp_path: Path) -> None:
    fitted = json.loads((run_dir / "preprocessing.json").read_text())
    (run_dir / "preprocessing.json").write_text(json.dumps({**fitted, "task": {"note": "kept"}}))
    entry = pack_run(run_dir, out=tmp_path / "entry", name="brain")
    assert str(tmp_path) not in (entry / "config.yaml").read_text()
    assert load_experiment(entry / "config.yaml").system.run_dir == Path("runs/brain")
    assert json.loads((entry / "preprocessing.json").read_text())["task"] == {"note": "kept"}


def test_one_network_entry_loads_and_foreign_modules_are_refused(
    run_dir: Path, tmp_path: Path
) -> None:
    from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
    from voxelflow.zoo.network import application_from_entry
    from voxelflow.zoo.store import verify_entry

    entry = pack_run(run_dir, out=tmp_path / "entry", name="brain")
    application, _, _ = application_from_entry(entry)
    best = load_checkpoint(find_checkpoint(run_dir))["modules"]["network"]
    for key, value in application.modules["network"].state_dict().items():
        torch.testing.assert_close(value, best[key])

    from voxelflow.zoo.network import load_entry_modules

    model = verify_entry(entry)
    foreign = type(model)(
        **{
            **model.__dict__,
            "weights_paths": {"network": model.weights_path, "discriminator": model.weights_path},
        }
    )
    with pytest.raises(CheckpointError, match=r"'brain'.*\['network'\].*'discriminator'"):
        load_entry_modules(application, foreign)


def test_demo_entry_names_its_tissues(run_dir: Path, tmp_path: Path) -> None:
    from voxelflow.demo.data import TISSUE_NAMES, DemoData
    from voxelflow.demo.run import QUICK, _pack_model
    from voxelflow.zoo.store import install

    (tmp_path / "train.csv").write_text("subject,image,label\na,a.nii.gz,a_seg.nii.gz\n")
    data = DemoData(tmp_path / "train.csv", tmp_path / "test.csv", "phantom", dict(TISSUE_NAMES))
    archive = _pack_model(run_dir, tmp_path, {1: 0.9, 2: 0.8}, data, QUICK, quick=True)
    card = install(archive, home=tmp_path / "home").card
    assert card.training_data.startswith("1 subjects") and "ONE anatomy" in card.training_data
    assert card.outputs.labels == {0: "other", 1: "grey_matter", 2: "white_matter"}
    assert card.metrics["test_dice_white_matter"] == pytest.approx(0.8)
