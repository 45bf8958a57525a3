"""The NiftyNet conversions issue #17 found silently wrong: one test per case.

The INIs are voxelflow's own (tests/config/test_niftynet_inis/), written after the key
combinations of NiftyNet's config/, demos/ and niftynet/contrib/ files.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from voxelflow.errors import ConfigError
from voxelflow.niftynet.conversion import ConversionNote, convert_niftynet, convert_niftynet_ini

INIS = Path(__file__).parent / "test_niftynet_inis"


def write(tmp_path: Path, text: str, name: str = "c.ini") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def note(notes: list[ConversionNote], section: str, key: str) -> ConversionNote:
    (found,) = [n for n in notes if n.section == section and n.key == key]
    return found


MINIMAL = """
[img]
path_to_search = .
filename_contains = T1
[lab]
path_to_search = .
filename_contains = Label
[NETWORK]
name = toynet
{network}
[TRAINING]
{training}
[SEGMENTATION]
image = img
label = lab
"""


def minimal(tmp_path: Path, *, network: str = "", training: str = "") -> Path:
    return write(tmp_path, MINIMAL.format(network=network, training=training))


# ----------------------------------------------------------------------------- normalisation
def test_normalisation_false_keeps_histogram_standardisation_off() -> None:
    experiment, notes = convert_niftynet_ini(INIS / "segmentation_default.ini")
    names = [c.name for c in experiment.preprocessing.normalization]
    assert names == ["zscore"]  # whitening only: normalisation = False wins over norm_type/cutoff
    for key in ("norm_type", "cutoff", "histogram_ref_file"):
        found = note(notes, "NETWORK", key)
        assert found.status == "ignored" and "normalisation is off" in found.detail


def test_normalisation_true_uses_norm_type_and_cutoff_in_either_order(tmp_path: Path) -> None:
    for order in ("norm_type = quartile\ncutoff = (0.05, 0.95)\nnormalisation = True",
                  "normalisation = True\ncutoff = (0.05, 0.95)\nnorm_type = quartile"):  # fmt: skip
        experiment, _ = convert_niftynet_ini(minimal(tmp_path, network=order))
        (histogram,) = experiment.preprocessing.normalization
        assert histogram.name == "histogram_standardization"
        assert histogram.kwargs == {"landmarks": "quartile", "cutoff": [5.0, 95.0]}


# ----------------------------------------------------------------------------- scaling
def test_scaling_without_isotropic_scaling_is_per_axis(tmp_path: Path) -> None:
    experiment, _ = convert_niftynet_ini(
        minimal(tmp_path, training="scaling_percentage = (-10, 10)")
    )
    (affine,) = experiment.augmentation
    assert affine.kwargs == {"scaling": [0.9, 1.1], "isotropic": False}
    experiment, _ = convert_niftynet_ini(
        minimal(tmp_path, training="isotropic_scaling = True\nscaling_percentage = (-10, 10)")
    )
    assert experiment.augmentation[0].kwargs["isotropic"] is True
    experiment, _ = convert_niftynet_ini(minimal(tmp_path, training="isotropic_scaling = True"))
    assert experiment.augmentation == []  # isotropic_scaling alone changes nothing


# ----------------------------------------------------------------------------- regularisation
def _one_step(experiment, weight: torch.Tensor) -> torch.Tensor:
    from voxelflow.config.build import build_optimizer

    parameter = torch.nn.Parameter(weight.clone())
    optimizer = build_optimizer(experiment, [parameter])
    parameter.grad = torch.zeros_like(parameter)  # only the penalty moves the weights
    optimizer.step()
    return parameter.detach()


def test_reg_type_l1_is_an_l1_penalty_not_l2(tmp_path: Path) -> None:
    experiment, notes = convert_niftynet_ini(
        minimal(
            tmp_path,
            network="decay = 0.5\nreg_type = L1",
            training="optimiser = gradientdescent\nlr = 1.0",
        )
    )
    assert experiment.optimizer.name == "voxelflow.niftynet.optim:l1_regularised"
    assert (
        experiment.optimizer.kwargs["l1"] == 0.5
        and "weight_decay" not in experiment.optimizer.kwargs
    )
    assert "Σ|w|" in note(notes, "NETWORK", "reg_type").detail
    weight = torch.tensor([2.0, -3.0, 0.0])
    # reference: the gradient of 0.5·Σ|w| (TensorFlow's l1_regularizer) is 0.5·sign(w)
    assert _one_step(experiment, weight).tolist() == [1.5, -2.5, 0.0]


def test_reg_type_l2_is_tensorflows_l2_regularizer(tmp_path: Path) -> None:
    experiment, _ = convert_niftynet_ini(
        minimal(
            tmp_path,
            network="reg_type = L2\ndecay = 0.5",
            training="optimiser = gradientdescent\nlr = 1.0",
        )
    )
    assert experiment.optimizer.kwargs["weight_decay"] == 0.5
    weight = torch.tensor([2.0, -3.0, 0.0], requires_grad=True)
    (grad,) = torch.autograd.grad(0.5 * (weight**2).sum() / 2, [weight])  # tf.nn.l2_loss·decay
    assert torch.allclose(_one_step(experiment, weight.detach()), weight.detach() - grad)


def test_l1_with_adam_trains_through_the_scheduler(tmp_path: Path) -> None:
    from voxelflow.config.build import build_optimizer, build_scheduler

    experiment, _ = convert_niftynet_ini(minimal(tmp_path, network="decay = 0.1\nreg_type = L1"))
    assert experiment.optimizer.kwargs["base"] == "adam"
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer(experiment, [parameter])
    scheduler = build_scheduler(experiment, optimizer)
    (parameter**2).sum().backward()
    optimizer.step()
    if hasattr(scheduler, "step"):
        scheduler.step()
    assert (parameter.detach() < 1.0).all()


# ----------------------------------------------------------------------------- sections
def test_lowercase_segmentation_data_section_is_an_input_section() -> None:
    experiment, notes = convert_niftynet_ini(INIS / "promise12.ini")
    assert experiment.dataset.inputs == {"image": ["promise12"], "label": ["segmentation"]}
    assert note(notes, "segmentation", "interp_order").status == "mapped"
    assert note(notes, "SEGMENTATION", "label").detail == "dataset.inputs.label = ['segmentation']"


def test_the_commands_application_section_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"requires a \[REGRESSION\] section.*net_segment"):
        convert_niftynet(INIS / "segmentation_default.ini", application="regression")
    assert convert_niftynet(INIS / "regression.ini", application="regression").experiment


def test_a_role_naming_a_missing_section_is_dropped_with_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.format(network="", training="").replace(
        "label = lab", "label = lab\nweight = nowhere"))  # fmt: skip
    converted = convert_niftynet(path)
    assert "weight" not in converted.experiment.dataset.inputs
    assert "no [nowhere] section" in note(converted.notes, "SEGMENTATION", "weight").detail


def test_evaluation_only_file_converts_but_cannot_train(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [seg]
        path_to_search = ./output
        [label]
        path_to_search = ./labels
        [NETWORK]
        name = toynet
        [SEGMENTATION]
        inferred = seg
        label = label
        """)  # fmt: skip
    converted = convert_niftynet(path, application="segmentation")
    assert converted.settings.cannot_run and "[SEGMENTATION] image" in converted.settings.cannot_run
    assert converted.settings.inferred_folders["seg"]["path"] == "./output"


def test_niftynet_0_2_0_application_section_is_read_as_system(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL.format(network="", training="") + "[APPLICATION]\nmodel_dir = ./m\n"
    )
    converted = convert_niftynet(path)
    assert converted.experiment.system.run_dir == Path("m")
    assert note(converted.notes, "APPLICATION", "*").status == "mapped"


# ----------------------------------------------------------------------------- losses
def test_regression_loss_never_falls_back_to_dice_ce(tmp_path: Path) -> None:
    text = (INIS / "regression.ini").read_text()
    with pytest.raises(
        ConfigError, match=r"\[TRAINING\] loss_type = Cosine: no voxelflow regression"
    ):
        convert_niftynet(write(tmp_path, text.replace("L2Loss", "Cosine")))
    with pytest.raises(ConfigError, match=r"\[TRAINING\] loss_type: required for regression"):
        convert_niftynet(write(tmp_path, text.replace("loss_type = L2Loss\n", "")))
    experiment, _ = convert_niftynet_ini(write(tmp_path, text.replace("L2Loss", "MSE")))
    assert experiment.loss.name == "l2"


def test_unknown_segmentation_loss_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[TRAINING\] loss_type = VolEnforcement"):
        convert_niftynet(minimal(tmp_path, training="loss_type = VolEnforcement"))


# ----------------------------------------------------------------------------- autoencoder, GAN
@pytest.mark.parametrize(
    ("niftynet", "voxelflow"),
    [("sample", "sample"), ("encode", "encode"), ("encode-decode", "reconstruct"),
     ("linear_interpolation", "interpolate")],
)  # fmt: skip
def test_autoencoder_inference_type(tmp_path: Path, niftynet: str, voxelflow: str) -> None:
    text = (INIS / "autoencoder.ini").read_text().replace("= sample", f"= {niftynet}")
    converted = convert_niftynet(write(tmp_path, text))
    assert converted.experiment.inference.mode == voxelflow
    assert note(converted.notes, "AUTOENCODER", "inference_type").status == "mapped"
    assert converted.experiment.inference.steps == 4  # n_interpolations, ends included


def test_gan_noise_size_goes_where_the_gan_application_reads_it(tmp_path: Path) -> None:
    experiment, _ = convert_niftynet_ini(INIS / "gan_2d.ini")
    assert experiment.task["noise_size"] == 8 and "noise_size" not in experiment.network.kwargs
    assert experiment.task["conditioning_role"] == "conditioning"
    assert experiment.dataset.inputs == {"image": ["usimage"], "conditioning": ["coordX"]}
    text = (INIS / "gan_2d.ini").read_text().replace("noise_size = 8\n", "")
    with pytest.raises(ConfigError, match=r"\[GAN\] noise_size: required"):
        convert_niftynet(write(tmp_path, text))


def test_2d_gan_windows_build_2d_networks_on_slices() -> None:
    from voxelflow.networks import build_network

    experiment, _ = convert_niftynet_ini(INIS / "gan_2d.ini")
    assert experiment.sampling.window == [16, 16, 1]
    generator = build_network(experiment.network, spatial_dims=3, in_channels=1,
                              out_channels=1, noise_size=8, image_size=[16, 16, 1],
                              conditioning_channels=1, features=[8, 4])  # fmt: skip
    assert generator(torch.zeros(2, 8), torch.zeros(2, 1, 16, 16, 1)).shape == (2, 1, 16, 16, 1)
    task = experiment.task["discriminator"]
    assert task["network"] == {"name": "discriminator"}


def test_2d_windows_work_for_regression_and_segmentation(tmp_path: Path) -> None:
    from voxelflow.networks import build_network

    text = (INIS / "regression.ini").read_text().replace("(16, 16, 16)", "(16, 16, 1)")
    experiment, _ = convert_niftynet_ini(write(tmp_path, text))
    network = build_network(experiment.network, spatial_dims=3, in_channels=1, out_channels=1)
    assert network(torch.zeros(1, 1, 16, 16, 1)).shape == (1, 1, 16, 16, 1)
    text = (INIS / "segmentation_default.ini").read_text().replace("(16, 16, 16)", "(16, 16, 1)")
    experiment, _ = convert_niftynet_ini(write(tmp_path, text))
    assert experiment.network.name == "toynet"  # voxelflow's segmentation handles slice windows


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize(
    ("given", "expected"),
    [("niftynet.network.toynet.ToyNet", "toynet"),
     ("niftynet.network.highres3dnet.HighRes3DNet", "highresnet"),
     ("niftynet.network.unet_2d.UNet2D", "unet"), ("niftynet.network.vae.VAE", "vae"),
     ("holistic_scalenet", "holistic_net")],
)  # fmt: skip
def test_network_class_paths_map_to_voxelflow_networks(
    tmp_path: Path, given: str, expected: str
) -> None:
    path = write(tmp_path, MINIMAL.format(network="", training="").replace("toynet", given))
    experiment, notes = convert_niftynet_ini(path)
    assert experiment.network.name == expected
    if "." in given:
        assert given in note(notes, "NETWORK", "name").detail


def test_unrunnable_networks_are_refused_with_the_reason(tmp_path: Path) -> None:
    text = MINIMAL.format(network="", training="")
    with pytest.raises(
        ConfigError, match=r"\[NETWORK\] name = anisotropic_nets.wt_net.WTNet: .*TensorFlow"
    ):
        convert_niftynet(write(tmp_path, text.replace("toynet", "anisotropic_nets.wt_net.WTNet")))
    with pytest.raises(ConfigError, match=r"\[NETWORK\] name: required"):
        convert_niftynet(write(tmp_path, text.replace("name = toynet", "batch_size = 1")))


# ----------------------------------------------------------------------------- refused files
def test_model_zoo_manifest_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [config]
        version = 1.0
        [weights]
        local_id = dense_vnet_abdominal_ct
        url = https://example.invalid/weights.tar.gz
        action = expand
        destination = models
        """)  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"model-zoo download manifest.*TensorFlow.*nothing is downloaded"
    ):
        convert_niftynet(path)


def test_pre_0_2_config_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [image modality 1]
        path_to_search = ./example_volumes
        [settings]
        application_type = "segmentation"
        net_name = toynet
        spatial_rank = 3
        """)  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"NiftyNet 0.1 configuration \(application_type, net_name, spatial_rank"
    ):
        convert_niftynet(path)


def test_registration_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[NETWORK]\nname = toynet\n[REGISTRATION]\nfixed_image = a\n")
    with pytest.raises(ConfigError, match="registration is out of voxelflow's scope"):
        convert_niftynet(path)


# ----------------------------------------------------------------------------- system, paths
def test_cuda_devices_is_not_a_hard_device() -> None:
    converted = convert_niftynet(INIS / "segmentation_default.ini")
    assert converted.experiment.system.device == "auto"
    assert converted.settings.cuda_devices == "0"  # the net_* commands set CUDA_VISIBLE_DEVICES


def test_paths_follow_niftynets_rules(tmp_path: Path) -> None:
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "model").mkdir()
    (config_dir / "model" / "dataset_split.csv").write_text("s1,training\n")
    # no model_dir: <config folder>/model; relative files and folders: inside model_dir
    converted = convert_niftynet(write(config_dir, MINIMAL.format(network="", training="")))
    assert converted.experiment.system.run_dir == config_dir / "model"
    assert converted.experiment.split.file == config_dir / "model" / "dataset_split.csv"
    assert converted.settings.save_seg_dir == config_dir / "model" / "output"
    assert converted.settings.save_csv_dir == config_dir / "model" / "evaluation"
    # a relative model_dir: the working folder, not the config's
    converted = convert_niftynet(INIS / "segmentation_multimodal.ini")
    assert converted.experiment.system.run_dir == Path("models/multimodal")
    assert converted.settings.save_seg_dir == Path("models/multimodal/output/multimodal")


def test_every_path_to_search_folder_is_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for index in (1, 2, 3):
        (tmp_path / f"part{index}").mkdir()
        for case in (f"Case0{index}", f"Case1{index}"):
            (tmp_path / f"part{index}" / f"{case}.mhd").write_text("")
            (tmp_path / f"part{index}" / f"{case}_segmentation.mhd").write_text("")
    experiment, notes = convert_niftynet_ini(INIS / "promise12.ini")
    assert experiment.dataset.folders is None and experiment.dataset.csv is not None
    lines = experiment.dataset.csv.read_text().splitlines()
    assert lines[0] == "subject,promise12,segmentation" and len(lines) == 7  # 6 cases, 3 folders
    assert "all 3 folders are searched" in note(notes, "promise12", "path_to_search").detail


def test_missing_folders_keep_the_first_one_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    experiment, notes = convert_niftynet_ini(INIS / "promise12.ini")
    assert experiment.dataset.folders["promise12"].path == Path("part1")
    assert note(notes, "promise12", "path_to_search").status == "approximated"


def test_command_line_overrides_go_to_their_sections() -> None:
    experiment, _ = convert_niftynet_ini(
        INIS / "segmentation_default.ini",
        overrides={"lr": "0.5", "max_iter": "7", "num_classes": "4"},
    )
    assert experiment.optimizer.kwargs["lr"] == 0.5 and experiment.training.max_iterations == 7
    assert experiment.num_classes == 4


def test_every_test_ini_converts_in_under_a_second() -> None:
    import time

    for path in sorted(INIS.glob("*.ini")):
        start = time.perf_counter()
        converted = convert_niftynet(path)
        assert time.perf_counter() - start < 1.0, path.name
        assert {n.status for n in converted.notes} <= {
            "mapped", "approximated", "ignored", "misplaced", "not supported"}  # fmt: skip


def test_unet_label_window_of_valid_convolutions_is_dropped(tmp_path: Path) -> None:
    text = MINIMAL.format(network="", training="").replace("toynet", "unet_2d")
    text = text.replace(
        "filename_contains = T1", "filename_contains = T1\nspatial_window_size = (572, 572, 1)"
    )
    text = text.replace(
        "filename_contains = Label",
        "filename_contains = Label\nspatial_window_size = (388, 388, 1)",
    )
    converted = convert_niftynet(write(tmp_path, text))
    assert converted.experiment.sampling.window == [572, 572, 1]
    assert converted.experiment.sampling.label_window is None
    found = note(converted.notes, "lab", "spatial_window_size")
    assert found.status == "approximated" and "[388, 388, 1]" in found.detail


def test_csv_file_lists_are_used_when_they_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img.csv").write_text("s1,/data/s1_T1.nii.gz\ns2,/data/s2_T1.nii.gz\n")
    text = MINIMAL.format(network="", training="").replace(
        "[img]\npath_to_search = .", "[img]\ncsv_file = img.csv\npath_to_search = ."
    )
    (tmp_path / "s1_Label.nii.gz").write_text("")
    converted = convert_niftynet(write(tmp_path, text))
    table = converted.experiment.dataset.csv.read_text().splitlines()
    assert table[0] == "subject,img,lab" and table[1] == "s1,/data/s1_T1.nii.gz," + str(
        (tmp_path / "s1_Label.nii.gz").resolve()
    )
    assert note(converted.notes, "img", "csv_file").status == "mapped"
    # a csv_file that does not exist: NiftyNet searched the folder (and wrote the list there)
    converted = convert_niftynet(write(tmp_path, text.replace("img.csv", "missing.csv")))
    assert converted.experiment.dataset.folders["img"].contains == ["T1"]
    assert note(converted.notes, "img", "csv_file").status == "ignored"


def test_sections_without_files_are_refused_naming_the_key(tmp_path: Path) -> None:
    text = MINIMAL.format(network="", training="")
    with pytest.raises(
        ConfigError, match=r"\[lab\] csv_data_file = labels.csv: NiftyNet's contrib"
    ):
        convert_niftynet(
            write(
                tmp_path,
                text.replace("[lab]\npath_to_search = .", "[lab]\ncsv_data_file = labels.csv"),
            )
        )
    with pytest.raises(ConfigError, match=r"\[lab\] path_to_search: required for the label role"):
        convert_niftynet(write(tmp_path, text.replace("[lab]\npath_to_search = .", "[lab]")))


def test_filename_removefromid_is_niftynets_id_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for case in ("p01", "p02"):
        (tmp_path / f"{case}_T1_brain.nii.gz").write_text("")
        (tmp_path / f"{case}_Label.nii.gz").write_text("")
    text = MINIMAL.format(network="", training="").replace(
        "filename_contains = T1", "filename_contains = T1\nfilename_removefromid = _T1.*"
    )
    converted = convert_niftynet(write(tmp_path, text))
    lines = converted.experiment.dataset.csv.read_text().splitlines()
    # re.sub("_T1.*", "", "p01_T1_brain") == "p01", the label's id by filename_contains: "p01"
    assert [line.split(",")[0] for line in lines] == ["subject", "p01", "p02"]
    assert all(line.count(",") == 2 and not line.endswith(",") for line in lines[1:])
    assert note(converted.notes, "img", "filename_removefromid").status == "mapped"


def test_an_existing_histogram_reference_file_is_flagged(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "hist.txt").write_text("T1 0 1 2\n")
    network = "normalisation = True\nhistogram_ref_file = hist.txt"
    converted = convert_niftynet(minimal(tmp_path, network=network))
    found = note(converted.notes, "NETWORK", "histogram_ref_file")
    assert found.status == "approximated" and "NiftyNet reused its landmarks" in found.detail
    (tmp_path / "model" / "hist.txt").unlink()  # absent: NiftyNet fitted them too
    converted = convert_niftynet(minimal(tmp_path, network=network))
    assert note(converted.notes, "NETWORK", "histogram_ref_file").status == "mapped"


def test_converting_imports_no_torch_and_is_fast_in_a_fresh_process() -> None:
    import subprocess
    import sys

    from voxelflow.niftynet.assembly import SLICE_PLUGIN
    from voxelflow.niftynet.slices import PLUGIN

    assert SLICE_PLUGIN == PLUGIN
    code = (
        "import sys, time; start = time.perf_counter()\n"
        "from voxelflow.niftynet.conversion import convert_niftynet\n"
        f"convert_niftynet({str(INIS / 'gan_2d.ini')!r})\n"
        "print('torch' in sys.modules, time.perf_counter() - start)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, seconds = done.stdout.split()
    assert imported == "False"  # a conversion (import included) does not pay for torch
    assert float(seconds) < 5.0  # generous: shared CI machines; the benchmark measures < 1 s
