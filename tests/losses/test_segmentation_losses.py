"""Segmentation losses: hand-computed values, agreement with MONAI, edge cases, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from voxelflow.errors import ConfigError, DataError, ShapeError
from voxelflow.losses import LOSSES, build_loss
from voxelflow.losses.deep_supervision import DeepSupervisionLoss

monai_losses = pytest.importorskip("monai.losses")

SEGMENTATION_LOSSES = [
    "dice",
    "generalized_dice",
    "tversky",
    "sensitivity_specificity",
    "wasserstein_dice",
    "cross_entropy",
    "focal",
    "dice_ce",
    "deep_supervision",
]

# Two classes, one sample, four voxels: foreground probabilities and labels written out by hand.
FOREGROUND = [0.9, 0.2, 0.6, 0.1]
LABELS = [1, 0, 1, 0]


def hand_probabilities() -> torch.Tensor:
    """(1, 2, 4) probabilities: channel 0 = 1 - foreground."""
    foreground = torch.tensor(FOREGROUND, dtype=torch.float64)
    return torch.stack([1 - foreground, foreground]).unsqueeze(0)


def hand_labels() -> torch.Tensor:
    return torch.tensor(LABELS).view(1, 1, 4)


def random_case(batch: int = 2, classes: int = 3, shape=(6, 5, 4), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *shape, generator=generator)
    labels = torch.randint(0, classes, (batch, 1, *shape), generator=generator)
    return logits, labels


# ------------------------------------------------------------------------- hand-computed values
def test_dice_hand_computed_plain_and_squared():
    p, g = hand_probabilities(), hand_labels()
    # class 1: Σpg = 0.9 + 0.6 = 1.5, Σp = 1.8, Σg = 2; class 0: Σpg = 0.8 + 0.9 = 1.7, Σp = 2.2, Σg = 2
    plain = 1 - (3.0 / 3.8 + 3.4 / 4.2) / 2
    # squared: Σp² class 1 = .81 + .04 + .36 + .01 = 1.22; class 0 = .01 + .64 + .16 + .81 = 1.62
    squared = 1 - (3.0 / 3.22 + 3.4 / 3.62) / 2
    assert build_loss("dice", activation="none", smooth=0.0)(p, g).item() == pytest.approx(
        plain, rel=1e-12
    )
    loss = build_loss("dice", activation="none", smooth=0.0, squared=True)
    assert loss(p, g).item() == pytest.approx(squared, rel=1e-12)
    no_background = build_loss("dice", activation="none", smooth=0.0, include_background=False)
    assert no_background(p, g).item() == pytest.approx(1 - 3.0 / 3.8, rel=1e-12)


def test_tversky_hand_computed():
    p, g = hand_probabilities(), hand_labels()
    # class 1: TP 1.5, FP 0.2 + 0.1 = 0.3, FN 0.1 + 0.4 = 0.5; class 0: TP 1.7, FP 0.1 + 0.4 = 0.5, FN 0.2 + 0.1 = 0.3
    t1 = 1.5 / (1.5 + 0.3 * 0.3 + 0.7 * 0.5)
    t0 = 1.7 / (1.7 + 0.3 * 0.5 + 0.7 * 0.3)
    loss = build_loss("tversky", activation="none", smooth=0.0, alpha=0.3, beta=0.7)
    assert loss(p, g).item() == pytest.approx(1 - (t0 + t1) / 2, rel=1e-12)


def test_sensitivity_specificity_hand_computed():
    p, g = hand_probabilities(), hand_labels()
    # e = (g - p)² = [.01, .04, .16, .01] for both classes
    # class 1: A = (.01 + .16)/2 = .085, B = (.04 + .01)/2 = .025; class 0: A = .025, B = .085
    expected = (0.05 * 0.085 + 0.95 * 0.025) + (0.05 * 0.025 + 0.95 * 0.085)
    loss = build_loss("sensitivity_specificity", activation="none", epsilon=0.0)
    assert loss(p, g).item() == pytest.approx(expected, rel=1e-12)


def test_wasserstein_dice_hand_computed():
    logits = torch.log(hand_probabilities())
    # default matrix, 2 classes: δ = probability of the wrong class = [.1, .2, .4, .1]
    # α = M[0, g] = [1, 0, 1, 0]; TP = .9 + .6 = 1.5; Σδ = .8
    expected = 1 - 3.0 / (3.0 + 0.8)
    assert build_loss("wasserstein_dice", smooth=0.0)(
        logits, hand_labels()
    ).item() == pytest.approx(expected)


def test_cross_entropy_and_focal_hand_computed():
    logits = torch.log(hand_probabilities())
    true_probabilities = [0.9, 0.8, 0.6, 0.9]
    ce = -sum(math.log(q) for q in true_probabilities) / 4
    focal = -sum((1 - q) ** 2 * math.log(q) for q in true_probabilities) / 4
    assert build_loss("cross_entropy")(logits, hand_labels()).item() == pytest.approx(ce, rel=1e-12)
    assert build_loss("focal", gamma=2.0)(logits, hand_labels()).item() == pytest.approx(
        focal, rel=1e-12
    )
    assert build_loss("focal", gamma=0.0)(logits, hand_labels()).item() == pytest.approx(
        ce, rel=1e-12
    )


def test_generalized_dice_hand_computed_simple_weights():
    p, g = hand_probabilities(), hand_labels()
    # V0 = V1 = 2 → weights 1/2 each; numerator 2(1.7 + 1.5)/2, denominator (4.2 + 3.8)/2
    loss = build_loss("generalized_dice", activation="none", smooth=0.0, weight_type="simple")
    assert loss(p, g).item() == pytest.approx(1 - 6.4 / 8.0, rel=1e-12)


# ------------------------------------------------------------------------- agreement with MONAI
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_matches_monai(squared, include_background, batch):
    logits, labels = random_case()
    ours = build_loss("dice", squared=squared, include_background=include_background, batch=batch)
    reference = monai_losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        squared_pred=squared,
        include_background=include_background,
        batch=batch,
    )
    assert ours(logits, labels).item() == pytest.approx(reference(logits, labels).item(), rel=1e-5)


def test_dice_sigmoid_single_channel_matches_monai():
    logits, labels = random_case(classes=2)
    logits = logits[:, :1]
    ours = build_loss("dice", activation="sigmoid")
    reference = monai_losses.DiceLoss(sigmoid=True)
    assert ours(logits, labels).item() == pytest.approx(
        reference(logits, labels.float()).item(), rel=1e-5
    )


@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
def test_generalized_dice_matches_monai(weight_type, batch, include_background):
    logits, labels = random_case(classes=4, seed=1)
    labels[0][labels[0] == 3] = 1  # class 3 absent from sample 0: infinite weight replaced
    ours = build_loss(
        "generalized_dice",
        weight_type=weight_type,
        batch=batch,
        include_background=include_background,
    )
    reference = monai_losses.GeneralizedDiceLoss(
        softmax=True,
        to_onehot_y=True,
        w_type=weight_type,
        batch=batch,
        include_background=include_background,
    )
    assert ours(logits, labels).item() == pytest.approx(reference(logits, labels).item(), rel=1e-5)


@pytest.mark.parametrize("include_background", [False, True])
def test_dice_ce_matches_monai(include_background):
    logits, labels = random_case(seed=2)
    ours = build_loss(
        "dice_ce", include_background=include_background, lambda_dice=0.7, lambda_ce=1.3
    )
    reference = monai_losses.DiceCELoss(
        softmax=True,
        to_onehot_y=True,
        include_background=include_background,
        lambda_dice=0.7,
        lambda_ce=1.3,
    )
    assert ours(logits, labels).item() == pytest.approx(reference(logits, labels).item(), rel=1e-5)


def test_dice_ce_is_sum_of_dice_and_cross_entropy():
    logits, labels = random_case(seed=3)
    expected = build_loss("dice")(logits, labels) + 2 * build_loss("cross_entropy")(logits, labels)
    assert build_loss("dice_ce", lambda_ce=2.0)(logits, labels).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


@pytest.mark.parametrize("alpha", [None, 0.25, [0.2, 0.3, 0.5]])
def test_focal_softmax_matches_monai_times_classes(alpha):
    """MONAI averages the softmax focal loss over the class axis too: ours = MONAI × C."""
    logits, labels = random_case(seed=4)
    ours = build_loss("focal", gamma=2.0, alpha=alpha)(logits, labels)
    monai_alpha = torch.tensor(alpha) if isinstance(alpha, list) else alpha
    reference = monai_losses.FocalLoss(
        to_onehot_y=True, use_softmax=True, gamma=2.0, alpha=monai_alpha
    )
    assert ours.item() == pytest.approx(3 * reference(logits, labels).item(), rel=1e-5)


def test_focal_sigmoid_matches_monai():
    logits, labels = random_case(seed=5)
    one_hot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    ours = build_loss("focal", activation="sigmoid", gamma=1.5, alpha=0.25)(logits, one_hot)
    reference = monai_losses.FocalLoss(gamma=1.5, alpha=0.25)(logits, one_hot)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_tversky_matches_monai(include_background, batch):
    logits, labels = random_case(seed=6)
    ours = build_loss(
        "tversky", alpha=0.3, beta=0.7, include_background=include_background, batch=batch
    )
    reference = monai_losses.TverskyLoss(
        softmax=True,
        to_onehot_y=True,
        alpha=0.3,
        beta=0.7,
        include_background=include_background,
        batch=batch,
    )
    assert ours(logits, labels).item() == pytest.approx(reference(logits, labels).item(), rel=1e-5)


BRATS_TREE = [
    [0.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 0.0, 0.6, 0.2, 0.5],
    [1.0, 0.6, 0.0, 0.6, 0.7],
    [1.0, 0.2, 0.6, 0.0, 0.5],
    [1.0, 0.5, 0.7, 0.5, 0.0],
]


@pytest.mark.parametrize("matrix", [None, BRATS_TREE])
def test_wasserstein_dice_matches_monai(matrix):
    logits, labels = random_case(classes=5, seed=7)
    monai_matrix = torch.tensor(BRATS_TREE) if matrix is not None else 1 - torch.eye(5)
    ours = build_loss("wasserstein_dice", distance_matrix=matrix)(logits, labels)
    reference = monai_losses.GeneralizedWassersteinDiceLoss(dist_matrix=monai_matrix)(
        logits, labels
    )
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def test_wasserstein_brats_tree_preset_and_niftynet_hand_value():
    logits, labels = random_case(classes=5, seed=20)
    preset = build_loss("wasserstein_dice", distance_matrix="brats_tree")(logits, labels)
    explicit = build_loss("wasserstein_dice", distance_matrix=BRATS_TREE)(logits, labels)
    assert preset.item() == explicit.item()
    # one voxel of class 1 predicted as 40% class 1, 60% class 3: δ = 0.6·M[3,1] = 0.12
    probabilities = torch.tensor([0.0, 0.4, 0.0, 0.6, 0.0], dtype=torch.float64).clamp_min(1e-30)
    logits = probabilities.log().view(1, 5, 1)
    value = build_loss("wasserstein_dice", distance_matrix="brats_tree", smooth=0.0)(
        logits, torch.ones(1, 1, 1)
    )
    true_positive = 1.0 * (1 - 0.12)  # α = M[0, 1] = 1
    assert value.item() == pytest.approx(
        1 - 2 * true_positive / (2 * true_positive + 0.12), rel=1e-9
    )
    with pytest.raises(ConfigError, match="Did you mean: 'brats_tree'"):
        build_loss("wasserstein_dice", distance_matrix="brats_tre")


def test_wasserstein_dice_one_hot_target_equals_index_target():
    logits, labels = random_case(classes=4, seed=8)
    one_hot = F.one_hot(labels[:, 0], 4).movedim(-1, 1)
    loss = build_loss("wasserstein_dice")
    assert loss(logits, one_hot).item() == pytest.approx(loss(logits, labels).item(), rel=1e-6)


def test_cross_entropy_matches_torch_with_class_weights_and_ignore():
    logits, labels = random_case(seed=9)
    labels[0, 0, :2] = 255
    weights = [0.2, 1.0, 3.0]
    ours = build_loss("cross_entropy", class_weights=weights, ignore_index=255)(logits, labels)
    reference = F.cross_entropy(
        logits, labels[:, 0], weight=torch.tensor(weights), ignore_index=255
    )
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


# ------------------------------------------------------------------------- weights and ignoring
@pytest.mark.parametrize(
    "name", ["dice", "generalized_dice", "tversky", "cross_entropy", "focal", "dice_ce"]
)
def test_binary_weight_map_equals_loss_on_selected_voxels(name):
    logits, labels = random_case(batch=1, seed=10)
    keep = torch.zeros(1, 1, 6, 5, 4, dtype=torch.bool)
    keep[..., :3, :, :] = True
    loss = build_loss(name)
    weighted = loss(logits, labels, keep.float())
    selected = loss(logits[:, :, :3], labels[:, :, :3])
    assert weighted.item() == pytest.approx(selected.item(), rel=1e-5)


@pytest.mark.parametrize(
    "name", ["dice", "tversky", "cross_entropy", "focal", "sensitivity_specificity"]
)
def test_ignore_index_equals_weight_map_of_valid_voxels(name):
    logits, labels = random_case(seed=11)
    labels[:, :, 0] = 7
    valid = (labels != 7).float()
    ignored = build_loss(name, ignore_index=7)(logits, labels)
    reference = build_loss(name)(logits, labels.clamp_max(2), valid)
    assert ignored.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_all_voxels_ignored_gives_finite_zero(name):
    logits, labels = random_case(seed=12)
    labels.fill_(9)
    kwargs = (
        {"loss": {"name": "dice_ce", "ignore_index": 9}}
        if name == "deep_supervision"
        else {"ignore_index": 9}
    )
    value = build_loss(name, **kwargs)(logits, labels)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("name", ["dice", "generalized_dice", "tversky"])
def test_empty_prediction_and_empty_reference_is_perfect(name):
    prediction = torch.zeros(1, 1, 4, 4, 3)  # probabilities: nothing predicted
    target = torch.zeros(1, 1, 4, 4, 3)  # nothing in the reference
    value = build_loss(name, activation="none")(prediction, target)
    assert value.item() == pytest.approx(0.0, abs=1e-9)


def test_empty_reference_with_prediction_is_penalised():
    prediction = torch.full((1, 1, 4, 4, 3), 0.5)
    value = build_loss("dice", activation="none")(prediction, torch.zeros(1, 1, 4, 4, 3))
    assert value.item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "name", ["dice", "generalized_dice", "tversky", "cross_entropy", "focal", "dice_ce"]
)
def test_single_sigmoid_channel(name):
    logits, labels = random_case(classes=2, seed=13)
    value = build_loss(name, activation="sigmoid")(logits[:, :1], labels.float())
    assert torch.isfinite(value) and value.item() > 0


def test_softmax_over_single_channel_is_refused():
    with pytest.raises(ShapeError, match="at least 2 channels"):
        build_loss("dice")(torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_float16_inputs_give_finite_float32_loss(name):
    logits, labels = random_case(seed=14)
    value = build_loss(name)((logits * 30).half(), labels)
    assert torch.isfinite(value) and value.dtype == torch.float32


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_gradcheck_float64(name):
    generator = torch.Generator().manual_seed(15)
    logits = torch.randn(
        1, 3, 3, 2, 2, dtype=torch.float64, generator=generator, requires_grad=True
    )
    labels = torch.randint(0, 3, (1, 1, 3, 2, 2), generator=generator)
    weight = torch.rand(1, 1, 3, 2, 2, dtype=torch.float64, generator=generator)
    loss = build_loss(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, weight), (logits,))


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_gradients_finite_and_loss_decreases_with_better_prediction(name):
    logits, labels = random_case(seed=16)
    logits.requires_grad_(True)
    loss = build_loss(name)
    value = loss(logits, labels)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    confident = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float() * 8
    assert loss(confident, labels).item() < value.item()


def test_dense_targets_one_hot_equals_indices_and_soft_is_finite():
    logits, labels = random_case(seed=17)
    one_hot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    soft = torch.softmax(torch.randn(logits.shape), dim=1)
    for name in ("dice", "cross_entropy", "generalized_dice", "tversky", "focal", "dice_ce"):
        loss = build_loss(name)
        assert loss(logits, one_hot).item() == pytest.approx(loss(logits, labels).item(), rel=1e-6)
        assert torch.isfinite(loss(logits, soft))


# ------------------------------------------------------------------------- input errors
def test_shape_errors_say_expected_and_got():
    loss = build_loss("dice")
    with pytest.raises(ShapeError, match=r"expected target of shape .* got \(2, 1, 6, 5, 3\)"):
        loss(torch.randn(2, 3, 6, 5, 4), torch.zeros(2, 1, 6, 5, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match="expected weight"):
        loss(
            torch.randn(2, 3, 6, 5, 4),
            torch.zeros(2, 1, 6, 5, 4, dtype=torch.long),
            torch.ones(2, 3, 6, 5, 4),
        )
    with pytest.raises(ShapeError, match="expected prediction"):
        loss(torch.randn(6, 5), torch.zeros(6, 5))


def test_label_out_of_range_is_a_data_error():
    labels = torch.full((1, 1, 4, 4), 3)
    with pytest.raises(DataError, match=r"expected class indices in \[0, 2\]"):
        build_loss("cross_entropy")(torch.randn(1, 3, 4, 4), labels)


def test_option_errors():
    with pytest.raises(ConfigError, match="activation"):
        build_loss("dice", activation="relu")
    with pytest.raises(ConfigError, match="Did you mean"):
        build_loss("dice", include_backgroud=False)
    with pytest.raises(ConfigError, match="zero diagonal"):
        build_loss("wasserstein_dice", distance_matrix=[[1, 1], [1, 0]])
    with pytest.raises(ConfigError, match="weight_type"):
        build_loss("generalized_dice", weight_type="cube")


def test_wasserstein_matrix_size_must_match_channels():
    with pytest.raises(ShapeError, match="5 channels"):
        build_loss("wasserstein_dice", distance_matrix=BRATS_TREE)(*random_case(classes=3))


# ------------------------------------------------------------------------- deep supervision
def test_deep_supervision_nearest_weights_halving():
    logits, labels = random_case(batch=1, shape=(8, 6, 4), seed=18)
    coarse = torch.randn(1, 3, 4, 3, 2)
    inner = build_loss("dice_ce")
    expected = (2 / 3) * inner(logits, labels) + (1 / 3) * inner(coarse, labels[..., ::2, ::2, ::2])
    value = DeepSupervisionLoss(loss="dice_ce")([logits, coarse], labels)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_deep_supervision_max_pooling_and_custom_weights():
    logits, labels = random_case(batch=1, shape=(4, 4, 2), seed=19)
    one_hot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    coarse = torch.randn(1, 3, 2, 2, 1)
    pooled = one_hot.reshape(1, 3, 2, 2, 2, 2, 1, 2).amax(dim=(3, 5, 7))
    inner = build_loss("dice")
    expected = 0.25 * inner(logits, one_hot) + 0.75 * inner(coarse, pooled)
    loss = build_loss("deep_supervision", loss="dice", downsample="max", weights=[1, 3])
    assert loss([logits, coarse], one_hot).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ShapeError, match="expected 2 predictions"):
        loss([logits], one_hot)


def test_every_segmentation_loss_is_registered():
    assert set(SEGMENTATION_LOSSES) <= set(LOSSES.names())
