"""`facelib bench` runs on tiny inputs and reports what it promises (the numbers themselves are benchmarks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facelib.bench import LEVER_ROWS, bench_cpu_levers, bench_train
from facelib.cli import main
from facelib.config import TrainConfig
from facelib.errors import ConfigError
from facelib.latency import anchor_latency, bench_infer

pytestmark = pytest.mark.slow  # every test here exports or times models: seconds each


def test_bench_train_reports_data_step_loop_and_the_lovasz_share(synthetic_root, tmp_path):
    config = TrainConfig(
        data=str(synthetic_root),
        model="fastscnn",
        crop_size=64,
        batch_size=2,
        workers=0,
        loss="wce_lovasz_dice",
        device="cpu",
    )
    table = bench_train(config, steps=2, warmup=1, out=tmp_path)
    assert list(table.index) == ["data", "step", "loop", "step_without_lovasz", "step_smp_lovasz"]
    assert (table["images_per_s"] > 0).all()
    assert 0 <= table.loc["loop", "data_wait_share"] < 1
    assert 0 < table.loc["step", "lovasz_share_of_step"] < 1
    assert table["device"].iloc[0].startswith("cpu") and not table["bf16"].any()
    assert not (tmp_path / "runs").exists()  # a benchmark leaves the run cache alone


def test_cpu_lever_table_has_each_lever_on_and_off_and_ratios_to_plain_ce(synthetic_root, tmp_path):
    config = TrainConfig(data=str(synthetic_root), crop_size=64, batch_size=2)
    models = ["lraspp_mobilenetv3", "fastscnn"]
    table = bench_cpu_levers(config, steps=2, warmup=1, out=tmp_path, compile=False, models=models)
    assert len(table) == 2 * (len(LEVER_ROWS) - 1)  # no torch.compile rows
    assert list(table["model"]) == [m for m in models for _ in range(len(LEVER_ROWS) - 1)]  # in LEVER_ROWS order
    for model in models:
        rows = table[table["model"] == model]
        assert list(rows.index) == [name for name, _, _ in LEVER_ROWS if name != "torch.compile"]
        before, levered = rows[rows["loss"] == "ce"].loc[["before", "all levers"]].itertuples()
        assert (before.workers, before.channels_last, before.presize, before.keep_memory) == (1, False, False, False)
        assert (levered.workers, levered.channels_last, levered.presize) == (0, True, True)
        assert levered.loss_impl == "facelib" and levered.keep_memory
        assert levered.vs_ce == 1 and before.vs_before_ce == 1 and (rows["images_per_s"] > 0).all()
        assert set(rows["loss"]) == {"ce", "wce_lovasz_dice", "wce_lovasz_dice_coarse4"}
        assert rows.loc["all but the loss code", "loss_impl"] == "before"
        assert rows["cpu_bf16"].sum() == 1 and rows.loc["cpu_bf16", "cpu_bf16"]  # only its own row autocasts
        assert rows.loc["cpu_bf16", "loss"] == "wce_lovasz_dice_coarse4"
    assert not (tmp_path / "runs").exists()


def test_bench_infer_measures_each_backend_and_their_agreement(synthetic_root, tmp_path):
    table = bench_infer(
        "lraspp_mobilenetv3",
        size=64,
        repeats=2,
        warmup=1,
        data=synthetic_root,
        backends=("eager", "onnx_fp32", "onnx_int8", "onnx_fp32_fixed"),
        calibration_images=2,
        out=tmp_path,
        onnx_dir=tmp_path / "onnx",
    )
    assert list(table.index) == ["eager", "onnx_fp32", "onnx_int8", "onnx_fp32_fixed"]
    assert (table["status"] == "ok").all(), table["status"]
    assert (table["median_ms"] > 0).all() and (table["p90_ms"] >= table["median_ms"]).all()
    assert table.loc["onnx_fp32", "argmax_agreement"] >= 0.999
    assert table.loc["onnx_fp32_fixed", "argmax_agreement"] >= 0.999
    assert (tmp_path / "onnx" / "lraspp_mobilenetv3_64.onnx").exists()
    assert (tmp_path / "onnx" / "lraspp_mobilenetv3_64_fixed.onnx").exists()
    with pytest.raises(ConfigError, match="valid: eager, compile"):
        bench_infer("fastscnn", backends=("tensorrt",))
    with pytest.raises(ConfigError, match="checkpoint"):
        bench_infer("fastscnn", accuracy=True)


def test_bench_infer_with_a_checkpoint_adds_validation_accuracy(quick_run, synthetic_root):
    best = Path(quick_run["checkpoint_dir"]) / "best.pt"
    table = bench_infer(
        checkpoint=best,
        size=64,
        repeats=2,
        warmup=1,
        data=synthetic_root,
        backends=("eager", "onnx_fp32_fixed"),
        out=quick_run["base"] / "results",
        accuracy=True,
    )
    assert table.loc["eager", "val_mIoU"] == pytest.approx(quick_run["best"]["mIoU"], abs=1e-3)
    assert abs(table.loc["onnx_fp32_fixed", "val_mIoU_drop"]) < 0.01


def test_bench_cli_writes_a_table_with_its_provenance(synthetic_root, tmp_path):
    flags = ["--model", "fastscnn", "--size", "64", "--repeats", "2", "--backends", "eager,onnx_fp32_fixed"]
    code = main(["bench", "infer", *flags, "--data", str(synthetic_root), "--out", str(tmp_path)])
    assert code == 0
    note = (tmp_path / "bench" / "infer_fastscnn_untrained_64px_t2_b1.md").read_text()
    assert "| onnx_fp32_fixed |" in note and "commit" in note and "onnxruntime" in note and "torch" in note
    assert main(["bench", "infer", "--model", "nope", "--out", str(tmp_path)]) == 2


def test_anchor_table_times_a_model_at_its_own_input_beside_the_anchor_at_the_photo_size(monkeypatch):
    import facelib.latency

    timed_sides = []

    def fake_latency(model, size, threads, repeats):  # the timing itself is `onnx_latency_ms`'s (bench infer's)
        timed_sides.append((type(model).__name__, size))
        return float(size)

    monkeypatch.setattr(facelib.latency, "onnx_latency_ms", fake_latency)
    table = anchor_latency(["fastscnn", "fastscnn@64"], size=128, threads=1, repeats=2)
    assert timed_sides == [("_LogitsOnly", 128), ("FastSCNN", 128), ("FastSCNN", 64)]
    assert list(table.input_px) == [128, 128, 64] and list(table.vs_anchor) == [1.0, 1.0, 0.5]
    with pytest.raises(ConfigError, match="'fastscnn@70': the input side after @ must be a multiple of 32"):
        anchor_latency(["fastscnn@70"], size=128)
    assert len(timed_sides) == 3  # a bad name is refused before anything is timed
