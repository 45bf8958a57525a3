"""The committed NiftyNet defaults table against NiftyNet's source, and the importer using it."""

from __future__ import annotations

import textwrap

import pytest

from voxelflow.niftynet import conversion as niftynet
from voxelflow.niftynet.defaults import NIFTYNET_DEFAULTS as TABLE
from voxelflow.niftynet.wheel import extract_source, find_cached_wheel, render_module

SOURCE = {
    "niftynet/utilities/user_parameters_default.py": textwrap.dedent(
        """
        import os
        DEFAULT_OUT = os.path.join('.', 'output')
        def add_inference_args(parser):
            parser.add_argument("--save_seg_dir", default=DEFAULT_OUT)
            parser.add_argument("--border", type=spatialnumarray, default=(0, 0, 0))
            parser.add_argument("--inference_iter", type=int, default=-1)
        def add_network_args(parser):
            parser.add_argument("--name", help="no default")
        """
    ),
    "niftynet/utilities/user_parameters_custom.py": textwrap.dedent(
        """
        def __add_gan_args(parser):
            parser.add_argument("--noise_size", type=int, default=-1)
        """
    ),
}


def test_extraction_reads_literals_constants_and_missing_defaults() -> None:
    table = extract_source(SOURCE)
    assert table == {
        "INFERENCE": {"save_seg_dir": "./output", "border": (0, 0, 0), "inference_iter": -1},
        "NETWORK": {"name": None},
        "GAN": {"noise_size": -1},
    }
    namespace: dict[str, object] = {}
    exec(render_module(table, origin="test"), namespace)  # the generated module round-trips
    assert namespace["NIFTYNET_DEFAULTS"] == table


def test_committed_table_holds_niftynets_documented_defaults() -> None:
    # hand-checked against NiftyNet 0.6.0's user_parameters_default.py / _custom.py
    assert TABLE["TRAINING"]["lr"] == 0.01 and TABLE["TRAINING"]["max_iter"] == 10000
    assert TABLE["TRAINING"]["isotropic_scaling"] is False
    assert TABLE["NETWORK"]["normalisation"] is False and TABLE["NETWORK"]["reg_type"] == "L2"
    assert TABLE["NETWORK"]["cutoff"] == (0.01, 0.99) and TABLE["NETWORK"]["queue_length"] == 5
    assert TABLE["SYSTEM"]["model_dir"] is None and TABLE["INFERENCE"]["inference_iter"] == -1
    assert TABLE["SEGMENTATION"]["label_normalisation"] is False
    assert TABLE["GAN"]["noise_size"] == -1


def test_importer_defaults_come_from_the_table() -> None:
    defaults = niftynet.NIFTYNET_DEFAULTS
    assert defaults["optimizer"]["lr"] == TABLE["TRAINING"]["lr"]
    assert defaults["training.max_iterations"] == TABLE["TRAINING"]["max_iter"]
    assert defaults["training.batch_size"] == TABLE["NETWORK"]["batch_size"]
    assert defaults["training.keep_last"] == TABLE["TRAINING"]["max_checkpoints"]
    assert defaults["sampling.windows_per_subject"] == TABLE["TRAINING"]["sample_per_volume"]
    assert defaults["sampling.queue_length"] == TABLE["NETWORK"]["queue_length"]


def test_every_niftynet_key_has_a_handler() -> None:
    handled = {k for table in niftynet.SYSTEM_SECTIONS.values() for k in table}
    for section in ("SYSTEM", "NETWORK", "TRAINING", "INFERENCE", "EVALUATION"):
        missing = set(TABLE[section]) - handled
        assert not missing, (section, missing)
    for section in ("SEGMENTATION", "REGRESSION", "CLASSIFICATION", "AUTOENCODER", "GAN"):
        assert set(TABLE[section]) <= niftynet.APPLICATION_KEYS, section


def test_table_matches_the_niftynet_wheel_when_cached() -> None:
    wheel = find_cached_wheel()  # never downloads
    if wheel is None:
        pytest.skip("no NiftyNet 0.6.0 wheel in a local cache (pip download niftynet==0.6.0)")
    from voxelflow.niftynet.wheel import extract_defaults

    assert extract_defaults(wheel) == TABLE
