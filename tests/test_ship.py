"""Shipping a model (fp16 weights, evaluated as shipped, model card), the default model of `facelib predict`,
and `facelib runs` (a report table's runs, trained as its notebook would, with TTA scores beside them)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facelib import ship as ship_module
from facelib.checkpoint import load_checkpoint, model_from_checkpoint
from facelib.cli import main
from facelib.config import TrainConfig
from facelib.errors import ConfigError, DataError, ReportError
from facelib.outputs import shown_path
from facelib.profiles import PROFILES, TABLES, table_rows
from facelib.report_rows import TableRows
from facelib.runcache import Run
from facelib.selection import inference_model, longer_runs
from facelib.ship import DEFAULT_MODEL, FAST_MODEL, default_model, half_checkpoint, ship, starting_point
from facelib.tables import Noise, best_run, choice
from facelib.train import train


@pytest.fixture(scope="module")
def shipped(quick_run, synthetic_root, tmp_path_factory) -> dict[str, Path]:
    """The quick run's best checkpoint shipped by the CLI to a temporary folder."""
    target = tmp_path_factory.mktemp("shipped") / "model.pt"
    results = quick_run["base"] / "results"
    best = Path(quick_run["checkpoint_dir"]) / "best.pt"
    flags = ["--onnx", "--speed", "--data", str(synthetic_root), "--out", str(results), "--device", "cpu"]
    code = main(["ship", str(best), "--to", str(target), *flags])
    assert code == 0
    return {"target": target, "results": results, "run_dir": Path(quick_run["run_dir"])}


def test_shipped_file_is_fp16_and_predicts_like_the_checkpoint(shipped, quick_run):
    original = load_checkpoint(Path(quick_run["checkpoint_dir"]) / "best.pt")
    content = load_checkpoint(shipped["target"])
    assert content["weights_dtype"] == "float16" and content["run_key"] == quick_run["key"]
    floats = [t for t in content["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    integers = [name for name, t in original["state_dict"].items() if not t.is_floating_point()]
    assert all(content["state_dict"][name].dtype == original["state_dict"][name].dtype for name in integers)
    assert shipped["target"].stat().st_size < 0.6 * (Path(quick_run["checkpoint_dir"]) / "best.pt").stat().st_size
    model = model_from_checkpoint(content)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored in fp16, run in fp32
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        same = model(x).argmax(1) == model_from_checkpoint(original).eval()(x).argmax(1)
    assert same.float().mean() >= 0.999


def test_shipped_file_is_evaluated_as_shipped_and_its_card_states_those_scores(shipped, quick_run):
    for variant in ("tta_none", "tta_flip", "tta_none-corrected"):
        record = json.loads((shipped["run_dir"] / f"eval-val-{variant}-fp16.json").read_text())
        assert record["checkpoint"] == shown_path(shipped["target"])  # records: no machine path
    plain = json.loads((shipped["run_dir"] / "eval-val-tta_none-fp16.json").read_text())
    card = shipped["target"].with_suffix(".md").read_text()
    assert f"| `model.pt` | TTA none, original labels | {plain['mIoU']:.2f} | {plain['mF1']:.2f} |" in card
    int8 = json.loads((shipped["run_dir"] / "eval-val-tta_none-onnx_int8.json").read_text())
    assert f"| `model_int8.onnx` | TTA none, original labels | {int8['mIoU']:.2f} |" in card
    assert "TTA flip, original labels" in card and "audit-corrected labels" in card
    assert "`fastscnn`" in card and "trained, " in card and "under)" in card
    assert f"{quick_run['config']['iterations']} iterations of batch {quick_run['config']['batch_size']}" in card
    assert "71.61" in card and "not above the reference" in card  # a 60-iteration synthetic run is not
    assert "synthetic faces" in card and f"--checkpoint {shown_path(shipped['target'])}" in card
    assert not list(shipped["target"].parent.glob(".*tmp*"))  # nothing half-written left behind


def test_a_card_shipped_with_speed_states_its_time_against_the_anchors_from_one_call(shipped):
    card = shipped["target"].with_suffix(".md").read_text()
    found = re.search(
        r"- speed: ([\d.]+) ms per photo at 64 px in ONNX Runtime float32 \(2 threads\), ([\d.]+)x the time of "
        r"torchvision lraspp_mobilenet_v3_large at 512 px \(([\d.]+) ms\), both measured in one call on .+ cores",
        card,
    )
    assert found, card
    model_ms, ratio, anchor_ms = map(float, found.groups())
    assert 0 < model_ms < anchor_ms and abs(ratio - model_ms / anchor_ms) < 0.01  # a 64 px model is the quicker


def test_shipped_onnx_files_are_what_predict_uses_with_the_onnx_backend(shipped, synthetic_root, tmp_path, monkeypatch):
    fp32, int8 = shipped["target"].with_suffix(".onnx"), shipped["target"].with_name("model_int8.onnx")
    assert fp32.exists() and int8.exists() and int8.stat().st_size < fp32.stat().st_size
    monkeypatch.delenv("FACELIB_MODEL", raising=False)
    monkeypatch.setattr(ship_module, "DEFAULT_MODEL", shipped["target"])
    assert default_model("onnx") == fp32 and default_model() == shipped["target"]
    photo = sorted((synthetic_root / "test" / "images").iterdir())[0]
    for backend in ("torch", "onnx"):
        assert main(["predict", str(photo), "--backend", backend, "--out", str(tmp_path / backend)]) == 0
    torch_mask, onnx_mask = (np.asarray(Image.open(tmp_path / b / f"{photo.stem}.png")) for b in ("torch", "onnx"))
    assert (torch_mask == onnx_mask).mean() > 0.999


def test_ship_refuses_what_it_should_not_ship(shipped, quick_run, tmp_path):
    with pytest.raises(DataError, match="already a shipped fp16 file"):
        ship(shipped["target"], tmp_path / "again.pt", evaluate=False, card=False)
    with pytest.raises(ConfigError, match=r"\.pt file"):
        ship(Path(quick_run["checkpoint_dir"]) / "best.pt", tmp_path / "model.onnx", evaluate=False)
    assert main(["ship", "--to", str(tmp_path / "x.pt")]) == 2  # neither a checkpoint nor --best
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"garbage\.pt"):
        ship(garbage, tmp_path / "out.pt", evaluate=False)
    assert not (tmp_path / "out.pt").exists()


def test_a_fine_tuned_models_card_names_the_run_its_weights_came_from(quick_run, synthetic_root, tmp_path):
    results, start = tmp_path / "results", tmp_path / "start.pt"
    shutil.copytree(quick_run["run_dir"], results / "runs" / quick_run["key"])
    shutil.copy(Path(quick_run["checkpoint_dir"]) / "best.pt", start)
    config = quick_run["config_object"].replace(init_from=str(start), iterations=2, val_interval=2, lr=1e-4)
    tuned = Path(train(config, out=results, checkpoints=tmp_path / "c", progress=False)["checkpoint_dir"]) / "best.pt"
    ship(tuned, start, data=synthetic_root, out=results, evaluate=False)  # over the very file it started from
    card = start.with_suffix(".md").read_text()
    assert f"run `{quick_run['key']}`, 60 iterations of batch 8 at 64px (480 samples)" in card, card
    assert "the recipe and time below are the fine-tuning's alone" in card and "- recipe: 2 iterations" in card
    assert f"run `{quick_run['key']}`, 60 iterations" in starting_point(load_checkpoint(tuned), results)  # by record
    tuned_record = results / "runs" / load_checkpoint(tuned)["run_key"] / "config.json"
    record = json.loads(tuned_record.read_text())
    del record["init_run_key"]  # as in runs recorded before it was: then only the file can say, and it changed
    tuned_record.write_text(json.dumps(record))
    assert "that file has changed since" in starting_point(load_checkpoint(tuned), results)
    assert starting_point(load_checkpoint(Path(quick_run["checkpoint_dir"]) / "best.pt"), results) is None


def test_a_twice_fine_tuned_models_card_traces_every_run_back_to_the_first(quick_run, synthetic_root, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(quick_run["run_dir"], results / "runs" / quick_run["key"])
    start = shutil.copy(Path(quick_run["checkpoint_dir"]) / "best.pt", tmp_path / "start.pt")
    config = quick_run["config_object"].replace(init_from=str(start), iterations=2, val_interval=2, lr=1e-4)
    first = train(config, out=results, checkpoints=tmp_path / "c", progress=False)
    record = json.loads((results / "runs" / first["key"] / "config.json").read_text())
    assert record["init_run_key"] == quick_run["key"]
    second_start = shutil.copy(Path(first["checkpoint_dir"]) / "best.pt", tmp_path / "second.pt")
    second = train(
        config.replace(init_from=str(second_start), iterations=3, val_interval=3),
        out=results,
        checkpoints=tmp_path / "c",
        progress=False,
    )
    Path(second_start).unlink()  # the chain is traced through the run records, not the files
    line = starting_point(load_checkpoint(Path(second["checkpoint_dir"]) / "best.pt"), results)
    assert f"run `{first['key']}`, 2 iterations of batch 8 at 64px (16 samples)" in line, line
    assert f"before it run `{quick_run['key']}`, 60 iterations of batch 8 at 64px (480 samples)" in line, line
    assert "(496 samples and " in line and line.endswith("the recipe and time below are the fine-tuning's alone")
    shutil.rmtree(results / "runs" / quick_run["key"])
    assert f"run `{quick_run['key']}` (its summary.json is not here)" in starting_point(
        load_checkpoint(Path(second["checkpoint_dir"]) / "best.pt"), results
    )


def test_a_model_shipped_at_another_input_side_is_scored_and_described_with_it(quick_run, synthetic_root, tmp_path):
    results, best = tmp_path / "results", Path(quick_run["checkpoint_dir"]) / "best.pt"
    shutil.copytree(quick_run["run_dir"], results / "runs" / quick_run["key"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        ship(best, tmp_path / "bad.pt", data=synthetic_root, out=results, input_size=70)
    ship(best, tmp_path / "model.pt", data=synthetic_root, out=results, input_size=96)
    content = load_checkpoint(tmp_path / "model.pt")
    assert (content["input_size"], content["trained_input_size"]) == (96, 64)
    card = (tmp_path / "model.md").read_text()
    assert "input 96x96 (trained on 64 px crops; this input side chosen on the validation split)" in card
    assert "- speed:" not in card  # timed only when asked (--speed)
    scored = json.loads((results / "runs" / quick_run["key"] / "eval-val-tta_none-fp16.json").read_text())
    assert scored["input_size"] == 96 and f"| {scored['mIoU']:.2f} |" in card
    again = main(["eval", str(best), "--data", str(synthetic_root), "--out", str(results), "--input-size", "96"])
    fp32 = json.loads((results / "runs" / quick_run["key"] / "eval-val-tta_none-in96.json").read_text())
    assert again == 0 and fp32["input_size"] == 96 and abs(fp32["mIoU"] - scored["mIoU"]) < 0.5  # fp16 vs fp32


def test_half_checkpoint_keeps_everything_but_the_weight_dtype():
    content = {"state_dict": {"w": torch.ones(2), "n": torch.tensor(3)}, "model": "fastscnn", "run_key": "k"}
    half = half_checkpoint(content, "src.pt")
    assert half["state_dict"]["w"].dtype == torch.float16 and half["state_dict"]["n"].dtype == torch.int64
    assert (half["model"], half["run_key"], half["shipped_from"]) == ("fastscnn", "k", "src.pt")
    assert content["state_dict"]["w"].dtype == torch.float32  # the original is untouched


def test_predict_uses_the_default_model_and_says_how_to_get_one(shipped, synthetic_root, tmp_path, monkeypatch):
    repository = Path(__file__).resolve().parents[1]
    assert repository / "results" / "models" / "facelib-best.pt" == DEFAULT_MODEL  # the clone's, from any folder
    photo = sorted((synthetic_root / "test" / "images").iterdir())[0]
    monkeypatch.setattr(ship_module, "DEFAULT_MODEL", tmp_path / "absent.pt")
    monkeypatch.delenv("FACELIB_MODEL", raising=False)
    with pytest.raises(ConfigError, match=r"absent\.pt does not exist.*facelib ship"):
        default_model()
    assert main(["predict", str(photo), "--out", str(tmp_path / "none")]) == 2
    monkeypatch.setattr(ship_module, "DEFAULT_MODEL", shipped["target"])
    monkeypatch.chdir(tmp_path)  # from any folder
    assert main(["predict", str(photo), "--out", "default"]) == 0
    monkeypatch.setenv("FACELIB_MODEL", str(shipped["target"]))
    monkeypatch.setattr(ship_module, "DEFAULT_MODEL", tmp_path / "absent.pt")
    assert main(["predict", str(photo), "--out", "env", "--checkpoint", str(shipped["target"])]) == 0
    assert main(["predict", str(photo), "--out", "from_env"]) == 0
    masks = [np.asarray(Image.open(tmp_path / d / f"{photo.stem}.png")) for d in ("default", "env", "from_env")]
    assert all((m == masks[0]).all() for m in masks)
    monkeypatch.setenv("FACELIB_MODEL", str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="FACELIB_MODEL points to"):
        default_model()


def test_predict_model_fast_runs_the_shipped_fast_file_and_says_how_to_ship_one(
    shipped, synthetic_root, tmp_path, monkeypatch
):
    photo = sorted((synthetic_root / "test" / "images").iterdir())[0]
    monkeypatch.setenv("FACELIB_MODEL", str(tmp_path / "missing.pt"))  # replaces the best model only
    monkeypatch.setattr(ship_module, "FAST_MODEL", tmp_path / "models" / "facelib-fast.pt")
    with pytest.raises(ConfigError, match=r"shipped fast model .*facelib-fast\.pt does not exist.*--to"):
        default_model(which="fast")
    assert main(["predict", str(photo), "--model", "fast", "--out", str(tmp_path / "none")]) == 2
    (tmp_path / "models").mkdir()
    shutil.copy(shipped["target"], tmp_path / "models" / "facelib-fast.pt")
    assert main(["predict", str(photo), "--model", "fast", "--out", str(tmp_path / "fast")]) == 0
    assert (tmp_path / "fast" / f"{photo.stem}.png").exists()
    both = ["predict", str(photo), "--model", "fast", "--checkpoint", str(shipped["target"])]
    assert main([*both, "--out", str(tmp_path / "both")]) == 2
    with pytest.raises(ConfigError, match="valid: best, fast"):
        default_model(which="tiny")


def test_shipped_file_exports_to_onnx(shipped, tmp_path):
    target = tmp_path / "shipped.onnx"  # a static graph: what is tested is reading the fp16 file, 4x faster
    assert main(["export", str(shipped["target"]), "--onnx", str(target), "--fixed-shape"]) == 0 and target.exists()


# --- choosing and training a table's runs ---------------------------------------------------------------


def _run(model: str, mf1: float, crop_size: int = 512) -> Run:
    summary = {"key": model, "best": {"mF1": mf1}}
    return Run(model, TrainConfig(model=model, crop_size=crop_size), summary, pd.DataFrame())


def test_best_run_never_picks_a_model_over_the_parameter_cap():
    runs = [_run("fastscnn", 50.0), _run("bisenetv2_xs", 90.0), _run("lraspp_mobilenetv3", 60.0)]
    assert best_run(runs).label == "lraspp_mobilenetv3"  # bisenetv2_xs: 2,152,095 trained parameters
    with pytest.raises(ReportError, match="no run under the parameter cap"):
        best_run([_run("bisenetv2_xs", 90.0)])


def test_best_run_prefers_the_cheaper_model_when_the_lead_is_within_noise():
    runs = [_run("deeplabv3plus_mobilenetv4", 70.87), _run("fastscnn", 70.71), _run("lraspp_mobilenetv3", 68.50)]
    assert best_run(runs).label == "deeplabv3plus_mobilenetv4"  # no noise measured: the top score

    def spread(mf1: float) -> Noise:
        return Noise("lraspp_mobilenetv3", {"mF1": mf1}, runs[2], runs[2])

    assert best_run(runs, spread(0.10)).label == "deeplabv3plus_mobilenetv4"  # 0.16 ahead, beyond the spread
    assert "the highest validation mF1" in choice(runs, spread(0.10))
    assert best_run(runs, spread(0.28)).label == "fastscnn"  # tied with it: 1.8 GFLOPs against 4.6
    assert "0.16 mF1 more, within the seed spread (0.28)" in choice(runs, spread(0.28))
    assert best_run(runs, spread(3.0)).label == "lraspp_mobilenetv3"  # all three tied: the cheapest
    # one model fine-tuned at two input sides: the smaller side costs less per photo, so it wins a tie
    sides = [_run("fastscnn", 76.63, crop_size=384), replace(_run("fastscnn", 76.55, crop_size=320), label="at 320")]
    assert best_run(sides, spread(0.27)).label == "at 320"
    assert "within the seed spread (0.27), so the cheaper run (fewer inference FLOPs at its input side)" in choice(
        sides, spread(0.27)
    )
    assert best_run(sides, spread(0.05)).label == "fastscnn"  # a lead beyond the spread is kept


def test_table_rows_follow_the_tables_and_the_profile():
    assert table_rows("gpu-short", "comparison") == PROFILES["gpu-short"].models
    assert table_rows("smoke", "augmentation") == TABLES["augmentation"][1]
    with pytest.raises(ReportError, match="augmentation, loss, comparison"):
        table_rows("smoke", "speed")


@pytest.fixture
def tiny_profile(monkeypatch) -> str:
    """A profile whose Table 4 runs take seconds on the CPU (crop 64, 8 iterations)."""
    tiny = replace(
        PROFILES["smoke"],
        name="tiny",
        common={"crop_size": 64, "batch_size": 4, "lr": 5e-3, "workers": 0, "val_fraction": 0.2},
        comparison={"iterations": 8, "val_interval": 2, "augment": "baseline", "loss": "ce"},
        models=("fastscnn", "bisenetv2_xs"),
    )
    monkeypatch.setitem(PROFILES, "tiny", tiny)
    return "tiny"


def test_runs_trains_a_table_row_scores_its_tta_and_ship_best_picks_it(tiny_profile, synthetic_root, tmp_path, capsys):
    results, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    common = ["--profile", tiny_profile, "--data", str(synthetic_root), "--device", "cpu"]
    common += ["--out", str(results), "--checkpoints", str(checkpoints)]
    assert main(["runs", "--table", "comparison", "--rows", "fastscnn", "--tta", "none,flip", *common]) == 0
    (run_dir,) = (results / "runs").iterdir()
    assert run_dir.name.startswith("fastscnn-") and (checkpoints / run_dir.name / "best.pt").exists()
    flip = json.loads((run_dir / "eval-val-tta_flip.json").read_text())
    assert flip["tta"] == "flip" and flip["images"] == 5
    # cached now: a second call trains nothing and reads the stored scores
    before = (run_dir / "summary.json").stat().st_mtime_ns
    assert main(["runs", "--table", "comparison", "--rows", "fastscnn", "--tta", "flip", "--cached-only", *common]) == 0
    assert (run_dir / "summary.json").stat().st_mtime_ns == before
    assert main(["runs", "--table", "comparison", "--rows", "unet", *common]) == 2  # not a row of the table
    assert main(["runs", "--table", "comparison,loss", "--rows", "fastscnn", *common]) == 2
    assert main(["runs", "--table", "comparison", "--cached-only", *common]) == 2  # bisenetv2_xs is not cached
    # ship --best: the best run under the cap among the table's cached runs (here the only one)
    target = tmp_path / "best.pt"
    best = ["ship", "--best", tiny_profile, "--to", str(target), "--no-eval", "--data", str(synthetic_root)]
    best += ["--out", str(results), "--checkpoints", str(checkpoints)]
    assert main(best) == 2  # bisenetv2_xs missing from the cache: the table is incomplete, nothing is chosen
    assert main([*best, "--allow-missing"]) == 0  # unless asked to choose among the finished rows; the card says so
    assert "rows `bisenetv2_xs` were not trained yet" in target.with_suffix(".md").read_text()
    # a time limit that has run out: the missing row is left for next time, nothing trains, no error
    assert main(["runs", "--table", "comparison", "--rows", "bisenetv2_xs", "--time-limit", "0", *common]) == 0
    assert len(list((results / "runs").iterdir())) == 1
    assert main(["runs", "--table", "comparison", "--rows", "bisenetv2_xs", *common]) == 0
    assert main(best) == 0
    assert load_checkpoint(target)["run_key"] == run_dir.name  # bisenetv2_xs is over the cap
    adjusted = checkpoints / run_dir.name / "adjusted.pt"  # a logit adjustment beside it is shipped instead
    content = load_checkpoint(checkpoints / run_dir.name / "best.pt")
    content["state_dict"]["decode_head.3.bias"] += 1.0
    record = {"tau": 0.4, "train_mIoU_by_tau": {"0": 10.0, "0.4": 11.0}, "train_photos": 4}
    torch.save({**content, "logit_adjustment": record}, adjusted)
    assert main(best) == 0 and "its logit adjustment shipped" in capsys.readouterr().out
    bias = load_checkpoint(target)["state_dict"]["decode_head.3.bias"]
    assert torch.equal(bias, content["state_dict"]["decode_head.3.bias"].to(bias.dtype))
    assert "tau 0.4 chosen on the 4 training photos" in target.with_suffix(".md").read_text()
    adjusted.unlink()
    # notebook 05's model: the best run's checkpoint, or the shipped default model once that run made it
    rows = TableRows.open(tiny_profile, str(synthetic_root), "cpu", results, checkpoints, train_missing=False)
    assert inference_model(rows)[1] == checkpoints / run_dir.name / "best.pt"
    shipped = results / "models" / "facelib-best.pt"
    assert main([*best[:4], str(shipped), *best[5:]]) == 0
    run, path, described = inference_model(rows)
    assert (run.key, path) == (run_dir.name, shipped) and "`facelib predict`" in described
    # a shipped run outside Table 4 (here: the same row trained longer) on this profile's data and split is shown
    before = {d.name for d in (results / "runs").iterdir()}
    longer = ["train", "--model", "fastscnn", "--iterations", "10", "--val-interval", "5", "--crop-size", "64"]
    longer += ["--batch-size", "4", "--lr", "5e-3", "--workers", "0", "--val-fraction", "0.2", "--augment", "baseline"]
    longer += ["--loss", "ce", "--device", "cpu"]
    longer += ["--data", str(synthetic_root), "--out", str(results), "--checkpoints", str(checkpoints)]
    assert main(longer) == 0
    (key,) = {d.name for d in (results / "runs").iterdir()} - before
    ship_longer = ["ship", str(checkpoints / key / "best.pt"), "--to", str(shipped), "--no-eval"]
    ship_longer += ["--data", str(synthetic_root), "--out", str(results)]
    assert main([*best, "--why", "a longer run"]) == 2  # --best states its own choice
    assert main([*ship_longer, "--why", "a longer run of Table 4's recipe"]) == 0
    assert "- chosen as a longer run of Table 4's recipe" in shipped.with_suffix(".md").read_text()
    assert main(ship_longer) == 0
    run, path, described = inference_model(rows)
    assert (run.key, path, run.config.iterations) == (key, shipped, 10) and "not one of its Table 4 rows" in described
    (found,) = longer_runs(rows)  # notebook 04 lists it beside Table 4
    assert found.key == key and found.label == "fastscnn, 40 samples"
    # a run fine-tuned from it (other crop, rate and seed) follows it, counting the samples its weights saw
    tune = [*longer[:4], "4", *longer[5:], "--crop-size", "96", "--lr", "1e-3", "--seed", "3"]
    tune += ["--init-from", str(shipped)]
    assert main(tune) == 0
    (tuned,) = {d.name for d in (results / "runs").iterdir()} - before - {key}
    found, fine_tune = longer_runs(rows)
    assert (found.key, fine_tune.key, fine_tune.samples) == (key, tuned, 40 + 16)
    assert fine_tune.label == f"fastscnn, +16 samples at 96 px from {key.split('-')[-1]}"
    # ship --best weighs them too, beside Table 4's rows: the top validation mF1 (no noise measured here)
    assert main(best) == 0
    mf1 = {
        k: json.loads((results / "runs" / k / "summary.json").read_text())["best"]["mF1"]
        for k in (run_dir.name, key, tuned)
    }
    assert load_checkpoint(target)["run_key"] == max(mf1, key=mf1.get)
    assert (
        f"and the longer runs and fine-tunes beside them `{found.label}`, `{fine_tune.label}`"
        in target.with_suffix(".md").read_text()
    )
    # trained on another split: not this profile's model, so notebook 05 falls back to Table 4's choice
    assert main([*longer, "--val-fraction", "0.4"]) == 0
    (other,) = {d.name for d in (results / "runs").iterdir()} - before - {key, tuned}
    assert main([ship_longer[0], str(checkpoints / other / "best.pt"), *ship_longer[2:]]) == 0
    assert inference_model(rows)[0].key == run_dir.name
    assert [r.key for r in longer_runs(rows)] == [key, tuned]  # nor is it a longer run of this profile's Table 4


def test_a_native_scale_run_of_table_4s_recipe_is_one_of_its_longer_runs(tiny_profile, synthetic_root, tmp_path):
    """`photo_size` may differ in a longer run (crops of larger photos); its label says so."""
    cropping = replace(PROFILES[tiny_profile], comparison={**PROFILES[tiny_profile].comparison, "augment": "geometric"})
    PROFILES[tiny_profile] = cropping  # the tiny profile with a cropping augmentation (restored by monkeypatch)
    results, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    rows = TableRows.open(tiny_profile, str(synthetic_root), "cpu", results, checkpoints, train_missing=False)
    base = rows.config("comparison", model="fastscnn")
    train(base.replace(iterations=10, val_interval=5, photo_size=96), results, checkpoints)
    (found,) = longer_runs(rows)
    assert found.label == "fastscnn, 40 samples at 64 px crops of 96 px photos"


SHIPPED_FILES = [
    pytest.param(which, marks=pytest.mark.skipif(not path.exists(), reason=f"no model shipped yet ({path.name})"))
    for which, path in (("best", DEFAULT_MODEL), ("fast", FAST_MODEL))
]


@pytest.mark.parametrize("which", SHIPPED_FILES)
def test_each_shipped_model_parses_a_photo_with_its_card_beside_it(which, synthetic_root, tmp_path, monkeypatch):
    """On a fresh clone: `facelib predict PHOTO [--model fast]` with no checkpoint and no data parses a face
    photo; the fast model's card states a time of at most 0.3x the anchor's and at least 62 mIoU."""
    monkeypatch.delenv("FACELIB_MODEL", raising=False)
    path = default_model(which=which)
    content = load_checkpoint(path)
    assert content["weights_dtype"] == "float16" and path.stat().st_size < 16e6
    card = path.with_suffix(".md").read_text()
    assert content["run_key"] in card and "TTA flip, original labels" in card and "non-commercial" in card
    if which == "fast":
        ratio = re.search(r"([\d.]+)x the time of torchvision lraspp_mobilenet_v3_large at 512 px", card)
        plain = re.search(r"\| TTA none, original labels \| ([\d.]+) \|", card)
        assert ratio and float(ratio.group(1)) <= 0.3 and plain and float(plain.group(1)) >= 62.0
        assert "`facelib predict PHOTO... --model fast` (the shipped fast model)" in card
    photo = sorted((synthetic_root / "test" / "images").iterdir())[0]
    assert main(["predict", str(photo), "--model", which, "--out", str(tmp_path)]) == 0
    mask = np.asarray(Image.open(tmp_path / f"{photo.stem}.png"))
    assert mask.shape == np.asarray(Image.open(photo)).shape[:2] and len(np.unique(mask)) >= 3


def test_runs_packs_each_finished_row_for_a_short_lease(tiny_profile, synthetic_root, tmp_path, monkeypatch):
    """`facelib runs --pack` (what scripts/gpu_tables.sh runs on a lent GPU): rows in one process, OUT repacked
    after each, a failing row reported without losing the others, no row started once the budget is spent."""
    import tarfile

    results, out = tmp_path / "results", tmp_path / "out"
    base = ["runs", "--table", "comparison", "--data", str(synthetic_root), "--pack", str(out), "--device", "cpu"]
    base += ["--profile", tiny_profile, "--out", str(results), "--checkpoints", str(tmp_path / "checkpoints")]
    assert main([*base, "--tta", "flip", "--weights", "--rows", "fastscnn"]) == 0
    with tarfile.open(out / "runs.tar") as archive:
        names = archive.getnames()
    (key,) = {name.split("/")[2] for name in names if name.startswith("results/runs/")}
    assert f"results/runs/{key}/summary.json" in names and f"results/runs/{key}/eval-val-tta_flip.json" in names
    assert "results/splits" in names and (out / f"{key}.pt").exists() and load_checkpoint(out / f"{key}.pt")
    assert not list(out.glob(".*"))  # nothing half-written
    assert main([*base, "--budget", "0", "--rows", "bisenetv2_xs"]) == 0  # nothing started: runs.tar as it was
    with tarfile.open(out / "runs.tar") as archive:
        assert archive.getnames() == names
    broken = replace(PROFILES["tiny"], common={**PROFILES["tiny"].common, "crop_size": 65})  # not a multiple of 32
    monkeypatch.setitem(PROFILES, "tiny", broken)
    assert main(base) == 2  # both rows fail (bad config), each reported; the command says so


def test_fp16_weights_that_change_predictions_on_photos_are_refused(quick_run, synthetic_root, monkeypatch, tmp_path):
    """The fp16 guard compares the two models on training photos and writes nothing when they disagree."""

    def scrambled(content, source):
        half = half_checkpoint(content, source)
        state = {
            name: (t.flip(0) if t.is_floating_point() and t.dim() == 4 else t) for name, t in half["state_dict"].items()
        }
        return {**half, "state_dict": state}

    monkeypatch.setattr(ship_module, "half_checkpoint", scrambled)
    target = tmp_path / "model.pt"
    with pytest.raises(DataError, match=r"best\.pt: fp16 weights change .*% of predicted pixels; not shipped"):
        ship(
            Path(quick_run["checkpoint_dir"]) / "best.pt",
            target,
            data=synthetic_root,
            out=quick_run["base"] / "results",
            device="cpu",
            evaluate=False,
            card=False,
        )
    assert not target.exists()


def test_a_report_uses_a_cached_run_without_its_checkpoint_and_never_rewrites_its_folder(
    tiny_profile, synthetic_root, tmp_path, monkeypatch, capsys
):
    results, checkpoints, data = tmp_path / "results", tmp_path / "checkpoints", str(synthetic_root)
    (run,) = TableRows.open(tiny_profile, data, "cpu", results, checkpoints, train_missing=True).table_rows(
        "comparison", ["fastscnn"]
    )
    shutil.rmtree(checkpoints / run.key)  # a fresh clone: run folders are committed, checkpoints are not
    folder = results / "runs" / run.key
    committed = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    monkeypatch.setitem(PROFILES, tiny_profile, replace(PROFILES[tiny_profile], trains_missing=False))  # as cpu
    rows = TableRows.open(tiny_profile, data, "cpu", results, checkpoints)
    assert not rows.cache.train_missing
    capsys.readouterr()
    (found,) = rows.table_rows("comparison", ["fastscnn"], want_checkpoint=True)
    assert not found.trained_now and not (checkpoints / run.key).exists()
    assert "without its checkpoint" in capsys.readouterr().out
    assert rows.tta_scores(found, "flip") is None  # never stored, and no weights to score: left out
    with pytest.raises(ReportError, match="not in the run cache"):
        rows.table_rows("comparison", ["bisenetv2_xs"])  # missing: not trained unless asked
    # asked to train: the lost checkpoint is made again, the committed run folder stays byte for byte
    eager = TableRows.open(tiny_profile, data, "cpu", results, checkpoints, train_missing=True)
    (redone,) = eager.table_rows("comparison", ["fastscnn"], want_checkpoint=True)
    assert "training run" in capsys.readouterr().out and (checkpoints / run.key / "best.pt").exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == committed
    assert redone.summary["best"] == found.summary["best"]
