"""Contract tests generated from the network registry, plus family-specific checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from voxelflow.errors import ConfigError, RegistryError, ShapeError
from voxelflow.networks import NETWORKS, build_network, count_parameters, default_parameter_count

# name → (small options, 2D size, 3D size). Tiny widths keep the whole file fast.
SMALL: dict[str, tuple[dict[str, Any], int, int]] = {
    "unet": ({"channels": [4, 8, 16]}, 16, 8),
    "vnet": ({"base_channels": 4, "down_convs": [1, 2, 2], "up_convs": [2, 1]}, 16, 8),
    "highresnet": (
        {"features": [4, 8], "dilations": [1, 2], "blocks_per_stage": 1, "final_features": 8},
        12,
        9,
    ),
    "dense_vnet": (
        {
            "initial_features": 4,
            "layers_per_stage": [1, 2, 2],
            "growth_rates": [2, 2, 4],
            "skip_features": [4, 4, 4],
            "downsample_features": [4, 4],
        },
        16,
        8,
    ),
    "deepmedic": ({"features": [4, 4, 4], "fc_features": [8]}, 21, 21),
    "scalenet": (
        {
            "backbone_features": 4,
            "backbone_blocks": 1,
            "frontend_features": [8],
            "frontend_dilations": [2],
            "blocks_per_stage": 1,
            "final_features": 8,
        },
        12,
        9,
    ),
    "holistic_net": ({"features": 6, "dilations": [1, 2], "score_features": 4}, 12, 9),
    "toynet": ({"features": 4}, 10, 7),
    "resnet": ({"features": [4, 8, 16], "blocks_per_stage": 1}, 16, 8),
    "se_resnet": ({"features": [4, 8, 16], "blocks_per_stage": 1}, 16, 8),
    "densenet": ({"initial_features": 4, "growth_rate": 2, "layers_per_block": [1, 2]}, 16, 8),
    "vae": ({"features": [4, 8], "hidden_size": 16, "latent_size": 3}, 16, 8),
    "autoencoder": ({"features": [4, 8], "hidden_size": 16, "latent_size": 3}, 16, 8),
    "generator": ({"features": [8, 4], "noise_size": 5}, 16, 8),
    "discriminator": ({"features": [4, 8]}, 16, 8),
}
FIXED_SIZE = {"vae", "autoencoder", "generator", "discriminator"}
CLASSIFIERS = {"resnet", "se_resnet", "densenet", "discriminator"}


def make(name: str, dims: int, *, in_channels: int = 2, out_channels: int = 3, seed: int = 0):
    options, size2d, size3d = SMALL[name]
    size = size2d if dims == 2 else size3d
    options = dict(options)
    if name in FIXED_SIZE:
        options["image_size"] = size
    torch.manual_seed(seed)
    net = build_network(
        name, spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, **options
    )
    generator = torch.Generator().manual_seed(seed + 1)
    if name == "generator":
        inputs = (torch.randn(2, options["noise_size"], generator=generator),)
    else:
        inputs = (torch.randn(2, in_channels, *([size] * dims), generator=generator),)
    return net, inputs, size


def flat_outputs(output: Any) -> list[torch.Tensor]:
    if isinstance(output, dict):
        return [output[key] for key in sorted(output)]
    return [output]


def test_every_registered_network_has_a_contract_config() -> None:
    assert sorted(SMALL) == NETWORKS.names()


@pytest.mark.parametrize("name", NETWORKS.names())
def test_description_is_a_one_liner(name: str) -> None:
    description = {e.name: e.description for e in NETWORKS.entries()}[name]
    assert description and "\n" not in description and len(description) < 90


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NETWORKS.names())
def test_forward_shape_matches_output_size(name: str, dims: int) -> None:
    net, inputs, size = make(name, dims)
    output = flat_outputs(net(*inputs))[0] if name != "vae" else net(*inputs)["recon"]
    if name in CLASSIFIERS:
        assert output.shape == (2, 3)
        return
    expected = net.output_size([size] * dims)
    assert output.shape == (2, 3, *expected)
    if name not in ("deepmedic", "generator"):
        assert expected == (size,) * dims


@pytest.mark.parametrize("name", NETWORKS.names())
def test_backward_reaches_every_parameter(name: str) -> None:
    net, inputs, _ = make(name, 3)
    loss = sum(output.float().square().mean() for output in flat_outputs(net(*inputs)))
    loss.backward()
    missing = [
        n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing


@pytest.mark.parametrize("name", NETWORKS.names())
def test_seeded_construction_and_forward_are_deterministic(name: str) -> None:
    outputs = []
    for _ in range(2):
        net, inputs, _ = make(name, 2, seed=7)
        torch.manual_seed(3)
        outputs.append(flat_outputs(net(*inputs)))
    for first, second in zip(*outputs):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    other, inputs, _ = make(name, 2, seed=8)
    assert not torch.equal(
        flat_outputs(other.eval()(*inputs))[0], flat_outputs(net.eval()(*inputs))[0]
    )


@pytest.mark.parametrize("name", sorted(set(SMALL) - {"generator"}))
def test_wrong_size_raises_shape_error_naming_the_constraint(name: str) -> None:
    net, inputs, _ = make(name, 3)
    with pytest.raises(ShapeError, match="expected"):
        constrained = name in FIXED_SIZE or any(m > 1 for m in net.size_multiple)
        net(inputs[0][:, :, :, :, :-1] if constrained else inputs[0][:, :, 0])
    if name != "scalenet":  # scalenet takes any number of modalities
        with pytest.raises(ShapeError, match=r"expected input \(B, 2"):
            net(inputs[0][:, :1])


def test_size_error_messages_say_what_is_needed() -> None:
    unet, _, _ = make("unet", 3)
    with pytest.raises(
        ShapeError, match=r"multiple of \[4, 4, 4\], got \[8, 8, 7\] \(try \[8, 8, 8\]"
    ):
        unet.check_input_size([8, 8, 7])
    with pytest.raises(ShapeError, match="more than one bottleneck voxel for instance norm"):
        unet.check_input_size([4, 4, 4])
    deepmedic, _, _ = make("deepmedic", 3)
    with pytest.raises(ShapeError, match=r"at least \[21, 21, 21\], got \[18, 18, 18\]"):
        deepmedic.check_input_size([18, 18, 18])
    vae, _, _ = make("vae", 3)
    with pytest.raises(
        ShapeError, match=r"expected spatial size \[8, 8, 8\] \(image_size\), got \[16, 16, 16\]"
    ):
        vae.check_input_size([16, 16, 16])


def test_build_network_accepts_components_and_rejects_bad_options() -> None:
    from voxelflow.config.schema import Component

    net = build_network(
        Component(name="toynet", features=3), spatial_dims=2, in_channels=1, out_channels=2
    )
    assert net.body[0].out_channels == 3
    with pytest.raises(RegistryError, match="Did you mean: 'unet'"):
        build_network("unte", spatial_dims=3, in_channels=1, out_channels=2)
    with pytest.raises(
        ConfigError, match=r"network\.chanels: unknown option.*Did you mean: 'channels'"
    ):
        build_network("unet", spatial_dims=3, in_channels=1, out_channels=2, chanels=[4, 8])
    with pytest.raises(ConfigError, match="given twice"):
        build_network(
            Component(name="toynet", features=3),
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            features=4,
        )
    with pytest.raises(ConfigError, match="spatial_dims: expected one of"):
        build_network("unet", spatial_dims=4, in_channels=1, out_channels=2)


def test_default_parameter_counts_are_stable() -> None:
    # Hand-counted: conv 3³·1·8 + 8 = 224; 1×1 conv 8·2 + 2 = 18.
    assert default_parameter_count("toynet") == 242
    assert (
        count_parameters(build_network("toynet", spatial_dims=2, in_channels=1, out_channels=2))
        == 9 * 8 + 8 + 18
    )


def test_unet_anisotropic_strides_kernels_and_deep_supervision() -> None:
    net = build_network(
        "unet",
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=[4, 8, 16, 16],
        strides=[1, [1, 2, 2], 2, [1, 1, 2]],
        kernel_sizes=[[1, 3, 3], 3, 3, 3],
        deep_supervision=2,
    )
    assert net.size_multiple == (2, 4, 8)
    x = torch.randn(1, 1, 6, 12, 8)
    outputs = net.forward_with_deep_supervision(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(6, 12, 8), (6, 6, 4), (3, 3, 2)]
    assert net.deep_supervision_scales() == [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    torch.testing.assert_close(outputs[0], net(x))


@pytest.mark.parametrize(
    "options", [{"residual": True}, {"upsample_mode": "linear"}, {"norm": "batch"}]
)
def test_unet_options(options: dict[str, Any]) -> None:
    net = build_network(
        "unet", spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8], **options
    )
    assert net(torch.randn(2, 1, 8, 6)).shape == (2, 2, 8, 6)


@pytest.mark.parametrize("name", ["unet", "vnet", "dense_vnet"])
def test_pad_to_multiple_crops_back_and_matches_a_padded_input(name: str) -> None:
    options = dict(SMALL[name][0], pad_to_multiple=True)
    torch.manual_seed(0)
    net = build_network(name, spatial_dims=2, in_channels=1, out_channels=2, **options).eval()
    x = torch.randn(1, 1, 13, 10)
    output = net(x)
    assert output.shape == (1, 2, 13, 10)
    multiple = net.size_multiple
    padded = torch.nn.functional.pad(x, [0, -10 % multiple[1], 0, -13 % multiple[0]])
    net.pad_to_multiple = False
    torch.testing.assert_close(output, net(padded)[:, :, :13, :10])


def test_highresnet_variants() -> None:
    for variant, dropout_layers in (("default", 0), ("small", 0), ("large", 1)):
        net = build_network(
            "highresnet", spatial_dims=2, in_channels=1, out_channels=2, variant=variant
        )
        assert net(torch.randn(1, 1, 12, 10)).shape == (1, 2, 12, 10)
        assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == dropout_layers
    with pytest.raises(ConfigError, match="variant"):
        build_network("highresnet", spatial_dims=2, in_channels=1, out_channels=2, variant="huge")


def test_deepmedic_output_size_matches_the_paper_windows() -> None:
    net = build_network("deepmedic", spatial_dims=3, in_channels=1, out_channels=2)
    assert net.output_size([57, 57, 57]) == (9, 9, 9)
    assert net.output_size([105, 105, 105]) == (57, 57, 57)
    with pytest.raises(ShapeError, match="multiple of \\[3, 3, 3\\]"):
        net.check_input_size([56, 57, 57])


def test_deepmedic_output_depends_only_on_its_receptive_field() -> None:
    net, (x,), _ = make("deepmedic", 2)
    net.eval()
    changed = x.clone()
    changed[:, :, 0, 0] += 100.0  # a corner voxel: outside the centre voxel's normal-pathway field
    before, after = net(x), net(changed)
    assert before.shape == (2, 3, 3, 3)
    assert not torch.equal(before[:, :, 0, 0], after[:, :, 0, 0])  # subsampled pathway sees it


def test_scalenet_is_invariant_to_modality_order_and_count() -> None:
    net, (x,), _ = make("scalenet", 2)
    net.eval()
    torch.testing.assert_close(net(x), net(x.flip(1)))
    # The same parameters serve any number of modalities.
    assert net(torch.randn(1, 3, 12, 12)).shape == (1, 3, 12, 12)


def test_vae_train_mode_samples_and_eval_is_deterministic() -> None:
    net, (x,), _ = make("vae", 2, in_channels=1, out_channels=1)
    out = net.eval()(x)
    torch.testing.assert_close(out["recon"], net.decode(out["mu"]))
    net.train()
    torch.manual_seed(0)
    first = net(x)["recon"]
    assert not torch.equal(first, net(x)["recon"])
    samples = net.sample(4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, net.sample(4, generator=torch.Generator().manual_seed(1)))
    assert samples.shape == (4, 1, 16, 16)


def test_conditioned_generator_uses_the_conditioning_image() -> None:
    torch.manual_seed(0)
    net = build_network(
        "generator",
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        noise_size=4,
        image_size=8,
        features=[8, 4],
        conditioning_channels=2,
    ).eval()
    noise, condition = torch.randn(2, 4), torch.randn(2, 2, 8, 8)
    out = net(noise, condition)
    assert out.shape == (2, 1, 8, 8)
    assert not torch.equal(out, net(noise, condition + 1))
    with pytest.raises(ShapeError, match="conditioning image with 2 channels"):
        net(noise)
    with pytest.raises(ShapeError, match="image_size"):
        net(noise, torch.randn(2, 2, 6, 6))


def test_unet_default_matches_monai_dynunet_architecture() -> None:
    monai_nets = pytest.importorskip("monai.networks.nets")
    strides = [1, 2, 2, 2, 2]
    reference = monai_nets.DynUNet(
        3,
        1,
        2,
        kernel_size=[3] * 5,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=[32, 64, 128, 256, 320],
        norm_name="instance",
        act_name=("leakyrelu", {"negative_slope": 0.01}),
    )
    ours = build_network("unet", spatial_dims=3, in_channels=1, out_channels=2)
    # Same convolutions; we add instance-norm affine terms (2 per channel per conv, 2 convs per
    # encoder and decoder level) and transposed-convolution biases, which DynUNet leaves out.
    norm_affine = 2 * 2 * sum([32, 64, 128, 256, 320]) + 2 * 2 * sum([32, 64, 128, 256])
    transpose_bias = sum([32, 64, 128, 256])
    assert count_parameters(ours) == count_parameters(reference) + norm_affine + transpose_bias


def test_vnet_with_monai_stage_depths_matches_monai_vnet_size() -> None:
    monai_nets = pytest.importorskip("monai.networks.nets")
    ours = build_network(
        "vnet",
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        down_convs=[1, 1, 2, 3, 2],
        up_convs=[2, 2, 1, 1],
    )
    reference = count_parameters(monai_nets.VNet(3, 1, 2))
    # Same stages; only the output block differs (MONAI: 5³ conv + norm + 1×1; here one 1×1 conv).
    assert abs(count_parameters(ours) - reference) < 0.001 * reference


def test_dense_vnet_prior_is_learned_and_added_at_full_resolution() -> None:
    options = dict(SMALL["dense_vnet"][0], use_prior=True, prior_size=4)
    net = build_network(
        "dense_vnet", spatial_dims=2, in_channels=1, out_channels=2, **options
    ).eval()
    x = torch.randn(1, 1, 16, 8)
    before = net(x)
    with torch.no_grad():
        net.prior.fill_(1.5)
    torch.testing.assert_close(net(x), before + 1.5)


def test_highresnet_small_needs_even_sizes_unless_padding() -> None:
    net = build_network(
        "highresnet", spatial_dims=2, in_channels=1, out_channels=2, variant="small"
    )
    with pytest.raises(ShapeError, match=r"multiple of \[2, 2\], got \[9, 8\]"):
        net(torch.randn(1, 1, 9, 8))
    net.pad_to_multiple = True
    assert net(torch.randn(1, 1, 9, 8)).shape == (1, 2, 9, 8)
