"""init_from (renames, include/exclude, shape mismatches, strict) and freeze."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from voxelflow.config.load import load_experiment
from voxelflow.engine.checkpoint import find_checkpoint, load_checkpoint
from voxelflow.errors import CheckpointError, ConfigError
from voxelflow.networks import build_network
from voxelflow.zoo import apply_transfer, freeze, install, load_pretrained
from voxelflow.zoo.pack import pack_run
from voxelflow.zoo.transfer import rename_keys, trainable_parameters

from .conftest import make_run


class Source(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Conv3d(4, 4, 3))
        self.head = nn.Conv3d(4, classes, 1)


class Target(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Conv3d(4, 4, 3))
        self.head = nn.Conv3d(4, classes, 1)
        self.extra = nn.Linear(2, 2)


def test_prefix_rename_loads_and_reports_each_tensor() -> None:
    torch.manual_seed(0)
    source, target = Source(), Target()
    report = load_pretrained(target, source.state_dict(), mapping={"encoder.": "backbone."})
    assert sorted(report.loaded) == sorted(
        [f"backbone.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
        + ["head.weight", "head.bias"]
    )
    assert report.missing_in_source == ["extra.weight", "extra.bias"]
    assert report.skipped_shape == [] and report.unused_in_source == []
    assert torch.equal(target.backbone[1].weight, source.encoder[1].weight)


def test_without_mapping_nothing_matches_and_source_keys_are_unused() -> None:
    report = load_pretrained(Target(), Source().state_dict())
    assert "encoder.0.weight" in report.unused_in_source
    assert report.loaded == ["head.weight", "head.bias"]


def test_regex_rename() -> None:
    state = {"down1.conv.weight": 1, "down2.conv.weight": 2, "up.weight": 3}
    renamed = rename_keys(state, {r"re:^down(\d)\.": r"encoder.\1."})
    assert renamed == {"encoder.1.conv.weight": 1, "encoder.2.conv.weight": 2, "up.weight": 3}
    with pytest.raises(ConfigError, match=r"regex"):
        rename_keys(state, {"re:(": "x"})
    with pytest.raises(ConfigError, match=r"same name"):
        rename_keys(state, {"re:^down\\d": "down"})


def test_different_class_count_reinitialises_the_head() -> None:
    torch.manual_seed(0)
    source, target = Source(classes=3), Target(classes=5)
    head_before = target.head.weight.clone()
    report = load_pretrained(target, source.state_dict(), mapping={"encoder.": "backbone."})
    assert [name for name, _, _ in report.skipped_shape] == ["head.weight", "head.bias"]
    assert report.skipped_shape[0][1:] == ((5, 4, 1, 1, 1), (3, 4, 1, 1, 1))
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.backbone[0].weight, source.encoder[0].weight)
    with pytest.raises(CheckpointError, match=r"strict transfer failed.*head.weight"):
        load_pretrained(
            Target(classes=5), source.state_dict(), mapping={"encoder.": "backbone."}, strict=True
        )


def test_include_exclude_patterns() -> None:
    source, target = Source(), Target()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_pretrained(
        target, source.state_dict(), mapping={"encoder.": "backbone."},
        include=["backbone.*"], exclude=["backbone.1.*"],
    )  # fmt: skip
    assert sorted(report.loaded) == ["backbone.0.bias", "backbone.0.weight"]
    assert "head.weight" in report.excluded and "backbone.1.weight" in report.excluded
    assert torch.equal(target.backbone[1].weight, before["backbone.1.weight"])
    assert torch.equal(target.head.weight, before["head.weight"])


def test_from_run_folder_checkpoint_file_and_zoo_entry(
    run_dir: Path, zoo_home: Path, tmp_path: Path
) -> None:
    best = load_checkpoint(find_checkpoint(run_dir))["modules"]["network"]
    install(pack_run(run_dir, out=tmp_path / "brain.zip"))
    for source in (run_dir, find_checkpoint(run_dir), "brain"):
        net = build_network("toynet", spatial_dims=3, in_channels=1, out_channels=3, features=4)
        report = load_pretrained(net, source, strict=True)
        assert sorted(report.loaded) == sorted(best)
        assert all(torch.equal(net.state_dict()[k], best[k]) for k in best)
    # "brain" was found through the zoo's voxelflow.weight_sources entry point (the engine does
    # not import the zoo); an unknown name says which sources were asked
    with pytest.raises(CheckpointError, match=r"run folder or zoo entry.*tried: zoo\)"):
        load_pretrained(net, "no_such_entry")


def test_fine_tune_with_more_classes_from_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run3", num_classes=3)
    net = build_network("toynet", spatial_dims=3, in_channels=1, out_channels=5, features=4)
    report = load_pretrained(net, run)
    assert report.skipped_shape and report.loaded and not report.missing_in_source
    output = net(torch.randn(1, 1, 8, 8, 6))
    assert output.shape[1] == 5


def test_freeze_keeps_parameters_fixed_and_out_of_the_optimiser() -> None:
    torch.manual_seed(0)
    net = Target()
    frozen = freeze(net, ["backbone.0.*", "head.bias"])
    assert frozen == ["backbone.0.weight", "backbone.0.bias", "head.bias"]
    trainable = trainable_parameters(net)
    assert all(p.requires_grad for p in trainable) and len(trainable) == 5
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimiser = torch.optim.SGD(trainable, lr=0.1)
    net.head(net.backbone(torch.randn(1, 1, 6, 6, 6))).sum().backward()
    optimiser.step()
    after = net.state_dict()
    assert torch.equal(after["backbone.0.weight"], before["backbone.0.weight"])
    assert torch.equal(after["head.bias"], before["head.bias"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    with pytest.raises(ConfigError, match=r"matches no parameter"):
        freeze(net, ["encoder.*"])


def test_apply_transfer_from_config(run_dir: Path) -> None:
    experiment = load_experiment({
        "transfer": {"init_from": {"source": str(run_dir), "exclude": ["head.*"]}, "freeze": ["body.*"]}
    })  # fmt: skip
    net = build_network("toynet", spatial_dims=3, in_channels=1, out_channels=3, features=4)
    report, frozen = apply_transfer(net, experiment.transfer)
    assert (
        report is not None and report.loaded and all(n.startswith("body.") for n in report.loaded)
    )
    assert frozen and all(not p.requires_grad for n, p in net.named_parameters() if n in frozen)
    assert apply_transfer(net, load_experiment({}).transfer) == (None, [])
