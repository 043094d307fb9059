"""Loss presets: each one lets a model fit a batch, reaches every head, ignores 255, weights heads as told."""

from __future__ import annotations

import pytest
import torch

from facelib.errors import ConfigError
from facelib.labels import IGNORE_INDEX, NUM_CLASSES
from facelib.losses import LOSS_PRESETS, CompositeLoss, LossConfig, loss_config
from facelib.models import SegOutput, build_model

CLASSES = 5


def synthetic_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 images of nested rectangles whose colour encodes the class, with an ignored border."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    for image in range(2):
        for cls in range(1, CLASSES):
            top, left = torch.randint(0, 40, (2,), generator=generator).tolist()
            target[image, top : top + 24 - 4 * cls, left : left + 24] = cls
    target[:, :2] = IGNORE_INDEX
    palette = torch.rand(CLASSES, 3, generator=generator) * 2 - 1
    image = palette[target.clamp(max=CLASSES - 1)].permute(0, 3, 1, 2)
    return image + 0.1 * torch.randn(image.shape, generator=generator), target


def class_weights() -> torch.Tensor:
    return torch.linspace(0.5, 2.0, CLASSES)


def make_loss(preset: str) -> CompositeLoss:
    config = LOSS_PRESETS[preset]
    return CompositeLoss(config, class_weights() if config.class_weighted else None)


@pytest.mark.parametrize("preset", list(LOSS_PRESETS))
def test_each_preset_lets_a_model_fit_one_batch(preset):
    torch.manual_seed(0)
    model = build_model("fastscnn", num_classes=CLASSES).train()
    loss_fn = make_loss(preset)
    image, target = synthetic_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{preset}: {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("preset", list(LOSS_PRESETS))
def test_gradients_reach_the_decode_head_and_every_auxiliary_head(preset):
    torch.manual_seed(0)
    model = build_model("bisenetv2_xs_slimaux", num_classes=CLASSES).train()
    image, target = synthetic_batch()
    make_loss(preset)(model(image), target).backward()
    for head in [model.decode_head, *model.aux_heads]:
        classifier = head[-1]
        assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("preset", list(LOSS_PRESETS))
def test_ignored_pixels_do_not_change_the_loss(preset):
    _, target = synthetic_batch()
    logits = torch.randn(2, CLASSES, 64, 64)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, CLASSES, 2, 64) * 10  # only where the target is 255
    loss_fn = make_loss(preset)
    assert torch.allclose(loss_fn(logits, target), loss_fn(changed, target))


def test_auxiliary_heads_are_weighted_by_aux_weight():
    _, target = synthetic_batch()
    main, aux1, aux2 = (torch.randn(2, CLASSES, 64, 64) for _ in range(3))
    config = LossConfig({"ce": 0.5, "lovasz": 0.3, "dice": 1.0}, aux_weight=0.8, class_weighted=True)
    loss_fn = CompositeLoss(config, class_weights())
    expected = loss_fn.head_loss(main, target) + 0.8 * (
        loss_fn.head_loss(aux1, target) + loss_fn.head_loss(aux2, target)
    )
    assert torch.allclose(loss_fn(SegOutput(main, (aux1, aux2)), target), expected)
    assert torch.allclose(loss_fn(main, target), loss_fn.head_loss(main, target))
    terms = loss_fn.head_terms(main, target)
    assert torch.allclose(loss_fn.head_loss(main, target), 0.5 * terms["ce"] + 0.3 * terms["lovasz"] + terms["dice"])


def test_class_weights_change_cross_entropy():
    _, target = synthetic_batch()
    logits = torch.randn(2, CLASSES, 64, 64)
    plain = CompositeLoss({"ce": 1.0})(logits, target)
    weighted = CompositeLoss(LossConfig({"ce": 1.0}, class_weighted=True), class_weights())(logits, target)
    reference = torch.nn.functional.cross_entropy(logits, target, weight=class_weights(), ignore_index=255)
    assert torch.allclose(weighted, reference) and not torch.allclose(plain, weighted)


def test_presets_hold_the_reference_ratios():
    assert dict(LOSS_PRESETS["wce_lovasz"].terms) == {"ce": 1.0, "lovasz": 2.0}
    assert (LOSS_PRESETS["wce_lovasz"].aux_weight, LOSS_PRESETS["wce_lovasz_aux08"].aux_weight) == (0.4, 0.8)
    assert dict(LOSS_PRESETS["wce_lovasz_dice"].terms) == {"ce": 0.5, "lovasz": 0.3, "dice": 1.0}
    assert not LOSS_PRESETS["ce"].class_weighted and all(
        LOSS_PRESETS[name].class_weighted for name in LOSS_PRESETS if name != "ce"
    )


def test_config_forms_and_errors():
    assert loss_config({"ce": 0.5, "dice": 1}) == LossConfig({"ce": 0.5, "dice": 1.0})
    assert loss_config({"terms": {"ce": 1}, "aux_weight": 0.8}).aux_weight == 0.8
    assert loss_config(LOSS_PRESETS["ce"].to_dict()) == LOSS_PRESETS["ce"]
    with pytest.raises(ConfigError, match="valid presets: ce, wce_lovasz"):
        loss_config("focal")
    with pytest.raises(ConfigError, match="valid terms: ce, lovasz, dice"):
        loss_config({"ce": 1.0, "focal": 1.0})
    with pytest.raises(ConfigError, match="positive weight"):
        loss_config({"ce": 0.0})
    with pytest.raises(ConfigError, match="pass class_weights"):
        CompositeLoss("wce_dice")
    with pytest.raises(ConfigError, match="class_weighted=False"):
        CompositeLoss("ce", class_weights())


def test_loss_is_float32_and_finite_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("fastscnn", num_classes=CLASSES).train()
    image, target = synthetic_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = make_loss("wce_lovasz_dice")(model(image), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_lovasz_has_smp_value_and_gradient(seed):
    """facelib's one-sort Lovász equals smp's per-class loop (value and gradient), with ignored pixels and
    classes absent from the target."""
    from segmentation_models_pytorch.losses import LovaszLoss

    from facelib.losses import LovaszSoftmax

    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(3, 7, 24, 20, generator=generator)).requires_grad_()  # smp needs float32
    target = torch.randint(0, 5, (3, 24, 20), generator=generator)  # classes 5 and 6 never appear
    target[torch.rand(target.shape, generator=generator) < 0.2] = IGNORE_INDEX
    ours = LovaszSoftmax(IGNORE_INDEX)(logits, target)
    (ours_grad,) = torch.autograd.grad(ours, logits)
    reference = LovaszLoss(mode="multiclass", ignore_index=IGNORE_INDEX)(logits, target)
    (reference_grad,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(ours, reference, rtol=1e-6, atol=1e-7), (ours.item(), reference.item())
    assert torch.allclose(ours_grad, reference_grad, rtol=1e-5, atol=1e-8)
    assert ours.item() > 0.1  # a real loss, not a degenerate zero


def test_batched_lovasz_on_an_all_ignored_target_is_zero_with_zero_gradient():
    from facelib.losses import LovaszSoftmax

    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = LovaszSoftmax(IGNORE_INDEX)(logits, torch.full((2, 8, 8), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0 and logits.grad.abs().max().item() == 0


def test_lovasz_cpu_shortcuts_equal_smp_at_a_size_that_uses_the_radix_sort():
    """Above 32k pixels PyTorch sorts the integer keys with its radix sort; absent classes are skipped. Value
    and gradient still equal smp's and the device-independent path's."""
    from segmentation_models_pytorch.losses import LovaszLoss

    from facelib.losses import LovaszSoftmax

    generator = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(2, 7, 160, 128, generator=generator)).requires_grad_()  # 40,960 pixels
    target = torch.randint(0, 5, (2, 160, 128), generator=generator)  # classes 5 and 6 never appear
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE_INDEX
    results = []
    for loss in (
        LovaszSoftmax(IGNORE_INDEX),
        LovaszSoftmax(IGNORE_INDEX, cpu_shortcuts=False),
        LovaszLoss(mode="multiclass", ignore_index=IGNORE_INDEX),
    ):
        value = loss(logits, target)
        results.append((value, *torch.autograd.grad(value, logits)))
    (fast, fast_grad), (plain, plain_grad), (smp, smp_grad) = results
    assert torch.allclose(fast, smp, rtol=1e-6, atol=1e-7) and torch.allclose(fast, plain, rtol=1e-6, atol=1e-7)
    assert torch.allclose(fast_grad, smp_grad, rtol=1e-5, atol=1e-8)  # float32 cumsums over 40k pixels
    assert torch.allclose(fast_grad, plain_grad, rtol=1e-5, atol=1e-8)
    assert fast_grad[:, 5:].abs().sum() > 0  # absent classes still get the softmax's share of the gradient


def test_sorting_float_bits_as_integers_orders_like_the_values():
    from facelib.losses import _sort_descending

    errors = torch.rand(50_000)
    errors[:100] = 0.0
    errors[100:200] = 1.0
    values, order = _sort_descending(errors)
    expected_values, expected_order = errors.sort(descending=True, stable=True)
    assert torch.equal(values, expected_values) and torch.equal(order, expected_order)


@pytest.mark.parametrize("shape", [(3, 7, 24, 20), (2, 19, 96, 64)])
def test_dice_has_smp_value_and_gradient(shape):
    """Compared in float64, where both are exact; in float32 smp's one-hot sums drift by up to 1e-4 on a
    training batch, and facelib's (accumulated in float64) stays within 1e-6 of the float64 value."""
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    from facelib.losses import DiceLoss

    generator = torch.Generator().manual_seed(shape[1])
    logits = (3 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, shape[1] - 2, (shape[0], *shape[2:]), generator=generator)  # two absent classes
    target[torch.rand(target.shape, generator=generator) < 0.2] = IGNORE_INDEX
    ours = DiceLoss(IGNORE_INDEX)(logits, target)
    (ours_grad,) = torch.autograd.grad(ours, logits)
    reference = SmpDice("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)(logits, target)
    (reference_grad,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(ours, reference, rtol=1e-10) and ours.item() > 0.1
    assert torch.allclose(ours_grad, reference_grad, rtol=1e-8, atol=1e-14)
    single = DiceLoss(IGNORE_INDEX)(logits.detach().float(), target)
    assert abs(single.item() - reference.item()) < 1e-6


def test_coarse_stride_keeps_the_decode_cross_entropy_at_full_resolution_and_samples_the_rest():
    from facelib.losses import coarse_grid

    _, target = synthetic_batch()
    main, aux = torch.randn(2, CLASSES, 64, 64), torch.randn(2, CLASSES, 64, 64)
    config = LossConfig({"ce": 0.5, "lovasz": 0.3, "dice": 1.0}, aux_weight=0.4, class_weighted=True, coarse_stride=4)
    coarse = CompositeLoss(config, class_weights())
    full = CompositeLoss(LossConfig(config.terms, 0.4, True), class_weights())
    grid_target = coarse_grid(target, 4)
    assert grid_target.shape == (2, 16, 16) and torch.equal(grid_target, target[:, 2::4, 2::4])
    terms = full.head_terms(main, target)
    grid_terms = full.head_terms(coarse_grid(main, 4), grid_target)
    expected = 0.5 * terms["ce"] + 0.3 * grid_terms["lovasz"] + grid_terms["dice"]
    expected = expected + 0.4 * full.head_loss(coarse_grid(aux, 4), grid_target)
    assert torch.allclose(coarse(SegOutput(main, (aux,)), target), expected)
    assert not torch.allclose(coarse(SegOutput(main, (aux,)), target), full(SegOutput(main, (aux,)), target))
    assert loss_config(config.to_dict()) == config and "coarse_stride" not in full.config.to_dict()
    with pytest.raises(ConfigError, match="coarse_stride"):
        LossConfig({"ce": 1.0}, coarse_stride=0)


def test_label_smoothing_moves_only_the_cross_entropy_to_smoothed_targets():
    torch.manual_seed(0)
    logits, target = torch.randn(2, NUM_CLASSES, 8, 8), torch.randint(0, NUM_CLASSES, (2, 8, 8))
    smoothed = CompositeLoss({"terms": {"ce": 1.0}, "label_smoothing": 0.1})
    log_p = logits.log_softmax(1)
    expected = -(0.9 * log_p.gather(1, target[:, None]).squeeze(1) + 0.1 * log_p.mean(1)).mean()
    assert torch.allclose(smoothed(logits, target), expected, atol=1e-6)
    plain = LOSS_PRESETS["wce_lovasz_dice_coarse4"]
    tuned = loss_config({**plain.to_dict(), "label_smoothing": 0.1})  # the CPU recipe's loss, smoothed
    assert tuned.to_dict() == {**plain.to_dict(), "label_smoothing": 0.1} and "label_smoothing" not in plain.to_dict()
    with pytest.raises(ConfigError, match="label_smoothing"):
        loss_config({"terms": {"ce": 1.0}, "label_smoothing": 1.0})


def test_hard_share_averages_the_cross_entropy_of_only_the_hardest_pixels():
    torch.manual_seed(1)
    logits, target = torch.randn(2, NUM_CLASSES, 8, 8), torch.randint(0, NUM_CLASSES, (2, 8, 8))
    target[0, 0, :4] = IGNORE_INDEX
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    labelled = per_pixel[target != IGNORE_INDEX]
    hardest = labelled.sort(descending=True).values[: int(0.25 * labelled.numel())]
    mined = CompositeLoss({"terms": {"ce": 1.0}, "hard_share": 0.25})
    assert torch.allclose(mined(logits, target), hardest.mean(), atol=1e-6)
    everything = CompositeLoss({"terms": {"ce": 1.0}, "hard_share": 1.0})
    assert torch.allclose(everything(logits, target), CompositeLoss("ce")(logits, target), atol=1e-6)
