"""Logit adjustment (`facelib adjust`): tau chosen on the training photos, only the classifier's bias moved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import facelib.adjust as adjust_module
from facelib.adjust import adjust, offsets_for
from facelib.checkpoint import load_checkpoint, save_checkpoint
from facelib.cli import main
from facelib.errors import ConfigError
from facelib.infer import evaluate


def weighted(quick_run, folder: Path) -> Path:
    """The quick run's best checkpoint as if its loss had weighted the classes (the quick run's is plain CE)."""
    content = load_checkpoint(Path(quick_run["checkpoint_dir"]) / "best.pt")
    content["config"] = {**content["config"], "loss": "wce_lovasz_dice"}
    folder.mkdir(exist_ok=True)
    save_checkpoint(content, folder / "best.pt")
    return folder / "best.pt"


def train_miou(checkpoint: Path, synthetic_root: Path, results: Path) -> float:
    return evaluate(checkpoint, synthetic_root, "train", out=results, device="cpu", workers=0).summary["mIoU"]


def test_adjust_chooses_the_tau_that_scores_best_on_the_training_photos(quick_run, synthetic_root, tmp_path):
    results = quick_run["base"] / "results"
    best = weighted(quick_run, tmp_path / "run")
    target, adjustment = adjust(best, data=synthetic_root, out=results, device="cpu")
    assert target == best.with_name("adjusted.pt")
    assert set(adjustment.train_miou) == set(adjust_module.TAUS)
    assert adjustment.train_miou[adjustment.tau] == max(adjustment.train_miou.values())
    assert adjustment.train_miou[0.0] == pytest.approx(train_miou(best, synthetic_root, results), abs=1e-6)
    assert adjustment.photos == len(json.loads(next((results / "splits").glob("*.json")).read_text())["train"])
    record = load_checkpoint(target)["logit_adjustment"]
    assert record["tau"] == adjustment.tau and record["train_mIoU_by_tau"]["0"] == round(adjustment.train_miou[0], 4)


def test_the_offsets_go_into_the_classifier_bias_alone(quick_run, synthetic_root, tmp_path, monkeypatch, capsys):
    results = quick_run["base"] / "results"
    best = weighted(quick_run, tmp_path / "run")
    monkeypatch.setattr(adjust_module, "TAUS", (1.0,))  # the weights undone in full, so the bias must move
    assert main(["adjust", str(best), "--data", str(synthetic_root), "--out", str(results), "--device", "cpu"]) == 0
    target = best.with_name("adjusted.pt")
    before, after = load_checkpoint(best)["state_dict"], load_checkpoint(target)["state_dict"]
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed == ["decode_head.3.bias"]  # fastscnn's classifier: the last conv of its decode head
    weights = np.asarray(load_checkpoint(target)["logit_adjustment"]["class_weights"])
    assert weights.max() > 1 > weights[weights > 0].min()  # the offsets below are not all alike
    moved = (after[changed[0]] - before[changed[0]]).numpy()
    assert moved == pytest.approx(offsets_for(weights, 1.0).numpy(), abs=1e-3)
    shown = capsys.readouterr().out
    assert "chosen: tau 1" in shown and "validation (original labels, no TTA)" in shown
    stored = json.loads((results / "runs" / quick_run["key"] / "eval-val-tta_none-adjusted.json").read_text())
    assert stored["checkpoint"].endswith("adjusted.pt")
    scored = train_miou(target, synthetic_root, results)
    assert scored == pytest.approx(load_checkpoint(target)["logit_adjustment"]["train_mIoU_by_tau"]["1"], abs=0.01)


def test_adjust_refuses_a_run_without_class_weights_and_an_adjusted_file(quick_run, synthetic_root, tmp_path):
    results = quick_run["base"] / "results"
    plain = Path(quick_run["checkpoint_dir"]) / "best.pt"  # trained with plain CE
    with pytest.raises(ConfigError, match="no class weights, so there is nothing to undo"):
        adjust(plain, tmp_path / "a.pt", data=synthetic_root, out=results, device="cpu")
    assert not (tmp_path / "a.pt").exists()
    target, _ = adjust(weighted(quick_run, tmp_path / "run"), data=synthetic_root, out=results, device="cpu")
    with pytest.raises(ConfigError, match="already adjusted"):
        adjust(target, tmp_path / "b.pt", data=synthetic_root, out=results, device="cpu")


def test_an_adjusted_recipe_ends_with_adjusted_pt_which_is_shipped_with_its_card_line(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    from facelib import config as config_module
    from facelib.recipe import plan, recipe_stages, train_recipe
    from facelib.ship import ship

    stage = {"model": "fastscnn", "crop_size": 64, "iterations": 2, "val_interval": 1, "workers": 0}
    monkeypatch.setitem(config_module.RECIPES, "tiny", (("cpu-quick", {**stage, "loss": "wce_lovasz_dice"}),))
    monkeypatch.setattr(config_module, "ADJUSTED_RECIPES", ("tiny",))
    monkeypatch.setattr("facelib.recipe.ADJUSTED_RECIPES", ("tiny",))
    where, results, checkpoints = {"data": str(synthetic_root), "device": "cpu"}, tmp_path / "r", tmp_path / "c"
    assert "then: the logit adjustment of stage 1's best checkpoint" in plan(
        "tiny", recipe_stages("tiny", where), results
    )
    last = train_recipe("tiny", where, results, checkpoints)
    target = checkpoints / last["key"] / "adjusted.pt"
    assert f"recipe: {target}: tau " in capsys.readouterr().out
    made = target.stat().st_mtime_ns
    train_recipe("tiny", where, results, checkpoints)
    assert "its logit adjustment, made earlier" in capsys.readouterr().out and target.stat().st_mtime_ns == made
    shipped = tmp_path / "model.pt"
    ship(target, shipped, data=synthetic_root, out=results, device="cpu")
    card = shipped.with_suffix(".md").read_text()
    assert "- logit adjustment (`facelib adjust`): the classifier's bias moved by -tau x log(class weight)" in card
    assert "The fp32 checkpoint at training time, before its logit adjustment" in card
    assert (results / "runs" / last["key"] / "eval-val-tta_none-adjusted-fp16.json").exists()
