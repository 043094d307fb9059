"""One tester for every registered model: shapes, the output convention, gradients, the parameter cap."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from facelib.cli import main
from facelib.errors import ConfigError
from facelib.models import MODELS, PARAMETER_CAP, SegOutput, build_model, candidates, fits_cap, parameter_breakdown
from facelib.models.cost import inference_flops
from facelib.models.library import SmpModel

AUX_HEADS = {"fastscnn": 2, "bisenetv2": 4, "bisenetv2_xs": 4, "bisenetv2_xs_slimaux": 4, "bisenetv2_fast": 4}


@pytest.fixture(scope="module", params=list(MODELS))
def built(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    return request.param, build_model(request.param, num_classes=7)


class TestEveryModel:
    @pytest.mark.parametrize("size", [(64, 64), (96, 128)])
    def test_training_mode_returns_main_and_auxiliary_logits_at_input_size(self, built, size):
        name, model = built
        model.train()
        output = model(torch.randn(2, 3, *size))
        assert isinstance(output, SegOutput)
        assert output.out.shape == (2, 7, *size)
        assert len(output.aux) == AUX_HEADS.get(name, 0)
        assert all(a.shape == (2, 7, *size) for a in output.aux)

    @pytest.mark.parametrize("size", [(64, 64), (96, 128)])
    def test_eval_mode_returns_only_the_main_logits(self, built, size):
        _, model = built
        model.eval()
        with torch.no_grad():
            output = model(torch.randn(1, 3, *size))
        assert isinstance(output, torch.Tensor) and not isinstance(output, SegOutput)
        assert output.shape == (1, 7, *size)
        assert torch.isfinite(output).all()

    def test_backward_reaches_every_parameter(self, built):
        name, model = built
        model.train()
        model.zero_grad(set_to_none=True)
        output = model(torch.randn(2, 3, 64, 96))
        loss = output.out.logsumexp(1).mean() + sum(a.logsumexp(1).mean() for a in output.aux)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"{name}: no gradient reaches {missing[:5]}"
        # Nonzero everywhere except where the maths makes it zero: a BatchNorm bias that feeds a bias-free
        # conv and then another BatchNorm in training mode (BiSeNetV2's context-embedding pooling).
        zero = [n for n, p in model.named_parameters() if p.requires_grad and not p.grad.any()]
        assert zero in ([], ["backbone.semantic.context.pool.1.bias"]), f"{name}: zero gradient at {zero}"

    def test_logits_are_upsampled_in_float32_under_bf16_autocast(self, built):
        """bf16 upsampling has a slow CUDA backward (facelib.models.common.upsample_logits); CPU autocast
        shows the dtype the same way."""
        _, model = built
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(torch.randn(2, 3, 64, 64))
        assert all(t.dtype == torch.float32 for t in (output.out, *output.aux))

    def test_parts_cover_every_parameter_once(self, built):
        name, model = built
        counts = parameter_breakdown(model)
        assert counts["total"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert counts["deployed"] + counts["aux_heads"] == counts["total"]
        assert (counts["aux_heads"] > 0) == (name in AUX_HEADS)

    def test_rejects_sides_that_are_not_multiples_of_32(self, built):
        _, model = built
        model.eval()
        with pytest.raises(ValueError, match="multiples of 32"):
            model(torch.randn(1, 3, 100, 64))


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_cap_by_role(name):
    counts = parameter_breakdown(build_model(name))
    role = MODELS[name].role
    if role == "candidate":  # facelib's rule: everything trained counts
        assert fits_cap(counts), f"{name}: {counts['total']:,} >= {PARAMETER_CAP:,}"
    elif role == "reference":  # the reference's own model, counted as the reference counted it
        assert fits_cap(counts, "deployed") and not fits_cap(counts)
    else:
        assert not fits_cap(counts, "deployed")


def test_reference_builds_match_the_reference_counts():
    """The reference (mmsegmentation, auxiliary heads removed before counting) reported about 1.4M for
    Fast-SCNN and 1.79M for BiSeNetV2-XS; our builds of the same widths must agree."""
    assert round(parameter_breakdown(build_model("fastscnn"))["deployed"] / 1e6, 2) == 1.40
    assert round(parameter_breakdown(build_model("bisenetv2_xs"))["deployed"] / 1e6, 2) == 1.79
    assert 1.08 <= round(parameter_breakdown(build_model("lraspp_mobilenetv3"))["total"] / 1e6, 2) <= 1.14


def test_candidates_cover_the_required_models():
    required = {"fastscnn", "lraspp_mobilenetv3", "bisenetv2_xs_slimaux"}
    assert required <= set(candidates())
    smp_builds = [name for name in candidates() if getattr(MODELS[name].builder, "func", None) is SmpModel]
    assert len(smp_builds) >= 2


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid names: fastscnn, lraspp_mobilenetv3"):
        build_model("unet")


def test_overrides_are_checked_and_applied():
    with pytest.raises(ConfigError, match=r"does not accept widths; it accepts: .*aux_channels"):
        build_model("fastscnn", widths=3)
    with pytest.raises(ConfigError, match="must both equal the aggregation width"):
        build_model("bisenetv2_xs", bga_channels=64)
    slim = build_model("bisenetv2_xs", aux_channels=(8, 8, 8, 8))
    assert parameter_breakdown(slim) == parameter_breakdown(build_model("bisenetv2_xs_slimaux"))


def test_flops_are_counted_and_scale_with_area():
    model = build_model("lraspp_mobilenetv3")
    small, large = inference_flops(model, 64), inference_flops(model, 128)
    assert small > 0 and 3.5 < large / small < 4.5


@pytest.mark.slow
def test_models_command_writes_the_table(tmp_path, capsys):
    flags = ["--only", "fastscnn,lraspp_mobilenetv3", "--size", "64", "--repeats", "1"]
    assert main(["models", *flags, "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "tables" / "models_64px_subset.csv", index_col="model")
    assert list(table.index) == ["fastscnn", "lraspp_mobilenetv3"]
    assert table.loc["fastscnn", "params"] == parameter_breakdown(build_model("fastscnn"))["total"]
    assert (table["cpu_ms"] > 0).all() and table["fits_cap"].all()
    assert "cap: fewer than 1,821,085" in capsys.readouterr().out
    assert main(["models", "--only", "nope", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("name", ["fastscnn", "bisenetv2_xs"])
def test_hand_written_models_start_near_uniform_predictions(name):
    """init_weights puts the classifiers at N(0, 0.01): the first loss is close to log(C)."""
    torch.manual_seed(0)
    model = build_model(name).train()
    output = model(torch.randn(2, 3, 64, 64))
    target = torch.randint(0, 19, (2, 64, 64))
    for logits in [output.out, *output.aux]:
        loss = torch.nn.functional.cross_entropy(logits, target)
        assert abs(loss.item() - math.log(19)) < 0.02  # default PyTorch init gives 0.04-0.08 here


@pytest.mark.parametrize("name", ["fpn_mobilenetv4", "deeplabv3plus_mobilenetv4", "unet_mobilenetv3"])
def test_smp_builds_compute_what_smp_computes(name):
    """The float32 upsampling swapped into smp's segmentation head changes no value in float32."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    import segmentation_models_pytorch as smp

    arch, encoder = MODELS[name].builder.args
    plain = smp.create_model(
        arch, encoder_name=encoder, encoder_weights=None, classes=19, **MODELS[name].builder.keywords
    )
    plain.eval()
    plain.load_state_dict(model.net.state_dict())
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
