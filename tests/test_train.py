"""Training: config, run identity, batch stream, learning, run cache, resume and DDP (CPU, synthetic data)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from facelib.averaging import WeightAverage
from facelib.checkpoint import load_checkpoint, model_from_checkpoint
from facelib.config import TrainConfig, field_help, preset_config
from facelib.errors import ConfigError, RunBusyError
from facelib.outputs import exclusive, shown_path
from facelib.run import identify, run_key
from facelib.sampling import TrainBatches, repeat_factors
from facelib.train import lr_factor, train, training_autocast
from tests.conftest import QUICK_RUN


def test_config_rejects_bad_values_with_the_valid_choices():
    with pytest.raises(ConfigError, match="fastscnn"):
        TrainConfig(model="resnet50")
    with pytest.raises(ConfigError, match="wce_lovasz_dice"):
        TrainConfig(loss="focal")
    with pytest.raises(ConfigError, match="flip_swap"):
        TrainConfig(augment="mixup")
    with pytest.raises(ConfigError, match="multiple of 32"):
        TrainConfig(crop_size=100)
    with pytest.raises(ConfigError, match="cpu-quick"):
        preset_config("huge")
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({"model": "fastscnn", "epochs": 3})


def test_config_round_trips_through_json():
    config = TrainConfig(model="bisenetv2_xs", loss={"ce": 1.0, "dice": 0.5}, model_overrides={}, data=Path("/x"))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_every_config_field_has_the_help_text_written_beside_it():
    helps = field_help()
    assert [f.name for f in dataclasses.fields(TrainConfig) if not helps.get(f.name)] == []
    assert helps["teacher"].startswith("distil from this inference checkpoint")  # a default the formatter wrapped


def test_run_key_ignores_where_a_run_happens_but_not_what_it_computes():
    base = TrainConfig()
    key = run_key(base, "data-a")
    assert run_key(base.replace(device="cuda", workers=16, data="/elsewhere"), "data-a") == key
    assert run_key(base.replace(lr=2e-3), "data-a") != key
    assert run_key(base.replace(augment="flip"), "data-a") != key
    assert run_key(base, "data-b") != key
    assert key.startswith("fastscnn-")


def test_expected_time_comes_from_runs_of_the_same_model_crop_and_teacher_use(tmp_path):
    from facelib.runcache import expected_seconds

    plain = TrainConfig(model="bisenetv2_xs", crop_size=256, iterations=100, batch_size=8)
    taught = plain.replace(teacher="teacher.pt")
    for key, config, speed in (("a", plain, 16.0), ("b", taught, 8.0), ("c", plain.replace(crop_size=512), 2.0)):
        (tmp_path / "runs" / key).mkdir(parents=True)
        record = {"finished": True, "config": config.to_dict(), "images_per_s": speed, "device": "cpu; AMD EPYC"}
        (tmp_path / "runs" / key / "summary.json").write_text(json.dumps(record))
    assert expected_seconds(plain, tmp_path)[0] == pytest.approx(800 / 16)
    assert expected_seconds(taught, tmp_path)[0] == pytest.approx(800 / 8)
    seconds, why = expected_seconds(taught.replace(photo_size=512), tmp_path)
    assert seconds is None and why == (
        "no finished run of bisenetv2_xs at 256 px crops of 512 px photos with a teacher to estimate its time from"
    )


def test_lr_warms_up_then_decays_to_zero_or_holds():
    for schedule in ("cosine", "poly"):
        config = TrainConfig(iterations=1000, warmup_fraction=0.1, schedule=schedule)
        factors = [lr_factor(config, i) for i in range(1000)]
        assert factors[0] == pytest.approx(0.01) and factors[99] == pytest.approx(1.0)
        assert all(a <= b for a, b in itertools.pairwise(factors[:100]))
        assert all(a >= b for a, b in itertools.pairwise(factors[99:]))
        assert factors[-1] < 0.01
    held = TrainConfig(iterations=1000, warmup_fraction=0.1, schedule="constant")
    assert [lr_factor(held, i) for i in (0, 99, 100, 999)] == pytest.approx([0.01, 1.0, 1.0, 1.0])


def test_batch_stream_covers_each_epoch_resumes_anywhere_and_splits_across_processes():
    full = list(TrainBatches(size=20, batch=4, seed=1, start=0, stop=15))
    epoch = [i for batch in full[:5] for i, _ in batch]
    assert sorted(epoch) == list(range(20))
    assert [i for batch in full[5:10] for i, _ in batch] != epoch  # reshuffled each epoch
    assert list(TrainBatches(size=20, batch=4, seed=1, start=7, stop=15)) == full[7:]
    ranks = [list(TrainBatches(size=20, batch=2, seed=1, start=0, stop=5, rank=r, world=2)) for r in (0, 1)]
    seen = [i for r in ranks for batch in r for i, _ in batch]
    assert sorted(seen) == list(range(20))
    seeds = [s for r in ranks for batch in r for _, s in batch]
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(ConfigError, match="cannot fill one batch"):
        TrainBatches(size=3, batch=4, seed=0, start=0, stop=1)


def test_repeat_factors_draw_photos_with_rare_classes_more_often_and_resume_anywhere():
    pixels = np.zeros((100, 3), dtype=np.int64)
    pixels[:, 0] = 10  # in every photo
    pixels[:4, 1] = 5  # in 4% of them: r = sqrt(0.36 / 0.04) = 3
    pixels[4:40, 2] = 5  # in 36%: r = 1
    factors = repeat_factors(pixels, 0.36)
    assert factors[:4] == pytest.approx([3.0] * 4) and factors[4:] == pytest.approx([1.0] * 96)
    assert repeat_factors(pixels, 0.0) is None
    stream = list(TrainBatches(size=100, batch=10, seed=2, start=0, stop=400, weights=factors))
    drawn = np.array([i for batch in stream for i, _ in batch])
    assert np.isin(drawn, range(4)).mean() == pytest.approx(12 / 108, abs=0.01)  # 4 x 3 of 108 weight
    assert list(TrainBatches(size=100, batch=10, seed=2, start=25, stop=400, weights=factors)) == stream[25:]
    ranks = [list(TrainBatches(100, 5, 2, 0, 10, rank=r, world=2, weights=factors)) for r in (0, 1)]
    shares = [i for rank in ranks for batch in rank for i, _ in batch]  # one epoch, split between processes
    assert sorted(shares) == sorted(drawn[:100].tolist())
    with pytest.raises(ConfigError, match="repeat_threshold"):
        TrainConfig(repeat_threshold=1.5)


def test_short_run_learns(quick_run):
    history = pd.read_csv(Path(quick_run["run_dir"]) / "metrics.csv")
    assert list(history.iteration) == [20, 40, 60]
    assert history.train_loss.iloc[-1] < 0.6 * history.train_loss.iloc[0]
    config, base = quick_run["config_object"], quick_run["base"]
    untrained = train(
        config.replace(iterations=1, val_interval=1, lr=1e-9), out=base / "u", checkpoints=base / "uc", progress=False
    )
    assert quick_run["best"]["mIoU"] > untrained["final"]["mIoU"] + 5, (quick_run["best"], untrained["final"])


def test_run_directory_holds_what_the_report_needs(quick_run):
    run_dir = Path(quick_run["run_dir"])
    assert {"config.json", "metrics.csv", "summary.json", "README.md"} <= {p.name for p in run_dir.iterdir()}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["key"] == run_dir.name
    config = quick_run["config_object"]
    assert summary["config"] == config.to_dict() | {"data": shown_path(config.data)}  # records: no machine path
    assert not Path(summary["config"]["data"]).is_absolute() and not Path(summary["run_dir"]).is_absolute()
    for part in ("best", "final"):
        scores = summary[part]
        assert {"mIoU", "mF1", "mFscore_ref", "per_image_F", "per_class", "confusion"} <= set(scores)
        assert set(scores["per_class"]) == set(json.loads(json.dumps(scores["per_class"])))
        assert len(scores["confusion"]) == 19
    assert summary["best"]["mF1"] == max(pd.read_csv(run_dir / "metrics.csv").mF1.round(4))
    assert {"device", "commit", "versions", "train_wall_s", "images_per_s", "data_wait_share"} <= set(summary)
    assert not list(run_dir.glob(".*tmp*"))


def test_best_checkpoint_is_self_contained_and_safe(quick_run):
    path = Path(quick_run["checkpoint_dir"]) / "best.pt"
    content = load_checkpoint(path)  # weights_only=True inside
    assert content["model"] == "fastscnn" and content["input_size"] == 64 and len(content["class_names"]) == 19
    assert content["config"] == quick_run["config_object"].to_dict()
    model = model_from_checkpoint(content, path)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_finished_run_is_reused_without_training(quick_run, monkeypatch):
    import facelib.models

    def refuse(*args, **kwargs):
        raise AssertionError("the run cache should have answered")

    monkeypatch.setattr(facelib.models, "build_model", refuse)
    again = train(
        quick_run["config_object"],
        out=quick_run["base"] / "results",
        checkpoints=quick_run["base"] / "checkpoints",
        progress=False,
    )
    assert again["key"] == quick_run["key"] and again["best"] == quick_run["best"]


def test_a_run_another_process_is_training_is_not_trained_twice(synthetic_root, tmp_path):
    config = TrainConfig(data=str(synthetic_root), **{**QUICK_RUN, "iterations": 2, "val_interval": 2})
    key = run_key(config, identify(config, tmp_path).fingerprint)
    busy = rf"run {key} is already being worked on by process {os.getpid()} on "
    with exclusive(tmp_path / "runs" / key, f"run {key}"), pytest.raises(RunBusyError, match=busy):
        train(config, out=tmp_path, checkpoints=tmp_path / "ckpt", progress=False)  # as if another process held it
    assert not (tmp_path / "runs" / key / "summary.json").exists()
    done = train(config, out=tmp_path, checkpoints=tmp_path / "ckpt", progress=False)  # released: trains now
    assert done["finished"] and (tmp_path / "runs" / key / ".lock").read_text() == ""


def test_resumed_run_matches_an_uninterrupted_one(synthetic_root, tmp_path):
    config = TrainConfig(
        data=str(synthetic_root),
        **{**QUICK_RUN, "iterations": 8, "val_interval": 4, "augment": "full", "loss": "wce_lovasz_dice"},
    )
    whole = train(config, out=tmp_path / "a", checkpoints=tmp_path / "ca", progress=False)
    half = train(config, out=tmp_path / "b", checkpoints=tmp_path / "cb", stop_after=4, progress=False)
    assert not half["finished"] and not (Path(half["run_dir"]) / "summary.json").exists()
    resumed = train(config.replace(workers=2), out=tmp_path / "b", checkpoints=tmp_path / "cb", progress=False)
    assert resumed["finished"] and resumed["key"] == whole["key"]
    for part in ("best", "final"):
        assert resumed[part] == whole[part]
    a = torch.load(tmp_path / "ca" / whole["key"] / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cb" / whole["key"] / "last.pt", weights_only=True)
    assert [row["train_loss"] for row in a["history"]] == [row["train_loss"] for row in b["history"]]
    assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config: dict, base: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    summary = train(TrainConfig(**config), out=Path(base) / "results", checkpoints=Path(base) / "ckpt", progress=False)
    Path(base, f"rank{rank}.json").write_text(json.dumps({"final": summary["final"], "key": summary["key"]}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_agree_on_metrics(synthetic_root, tmp_path):
    config = {**QUICK_RUN, "data": str(synthetic_root), "iterations": 4, "val_interval": 2, "batch_size": 4}
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    runs = list((tmp_path / "results" / "runs").iterdir())
    assert [r.name for r in runs] == [ranks[0]["key"]]  # one run directory, written by rank 0
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["final"] == ranks[0]["final"]
    # the same config on one process is the same run (process count is not part of the identity)
    assert run_key(TrainConfig(**config), summary["data"]["fingerprint"]) == ranks[0]["key"]
    shutil.rmtree(tmp_path / "ckpt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the device machine)")
def test_cuda_run_uses_bf16_and_channels_last(synthetic_root, tmp_path, monkeypatch):
    import facelib.models

    seen: list[tuple[torch.dtype, bool]] = []
    build = facelib.models.build_model

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(
            lambda m, inputs, output: seen.append(
                (output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))
            )
        )
        return model

    monkeypatch.setattr(facelib.models, "build_model", build_and_watch)
    config = TrainConfig(
        data=str(synthetic_root),
        **{
            **QUICK_RUN,
            "device": "cuda",
            "workers": 2,
            "iterations": 6,
            "val_interval": 3,
            "augment": "full",
            "loss": "wce_lovasz_dice",
        },
    )
    summary = train(config, out=tmp_path / "r", checkpoints=tmp_path / "c", progress=False)
    assert summary["finished"] and "CUDA" in summary["device"]
    assert seen and all(dtype == torch.bfloat16 and channels_last for dtype, channels_last in seen)
    assert 0 <= summary["data_wait_share"] < 1 and summary["images_per_s"] > 0
    from facelib.infer import evaluate

    best = Path(summary["checkpoint_dir"]) / "best.pt"
    result = evaluate(best, data=synthetic_root, out=tmp_path / "r", device="cuda")
    assert result.summary["mIoU"] == pytest.approx(summary["best"]["mIoU"], abs=0.05)
    assert evaluate(best, data=synthetic_root, out=tmp_path / "r", device="cuda", tta="flip").tta == "flip"


def test_normalization_histogram_is_exact():
    from facelib.stats import training_normalization as normalization

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (70, 9, 11, 3), dtype=torch.uint8, generator=generator)
    pixels = images.reshape(-1, 3).double()
    expected = ([round(float(v), 2) for v in pixels.mean(0)], [round(float(v), 2) for v in pixels.std(0, correction=0)])
    assert normalization(images) == expected
    assert normalization([image.numpy() for image in images]) == expected  # mixed-size path (a list)


def test_finished_run_without_its_checkpoint_is_trained_again_when_asked(quick_run, tmp_path):
    results, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    shutil.copytree(quick_run["base"] / "results", results)
    shutil.copytree(quick_run["base"] / "checkpoints", checkpoints)
    best = checkpoints / quick_run["key"] / "best.pt"
    best.unlink()
    kept = train(quick_run["config_object"], out=results, checkpoints=checkpoints, progress=False)
    assert kept["best"] == quick_run["best"] and not best.exists()  # the cache answers as before
    again = train(
        quick_run["config_object"], out=results, checkpoints=checkpoints, progress=False, require_checkpoint=True
    )
    assert best.exists() and again["finished"] and again["key"] == quick_run["key"]
    assert again["best"]["mIoU"] == pytest.approx(quick_run["best"]["mIoU"], abs=1e-6)  # same seed, same CPU


def test_committed_runs_keep_their_keys():
    """Every run folder in results/runs is found again under its key by today's config (new fields are either
    runtime settings, left out of the key, or keyed only when set: `KEYED_WHEN_SET`)."""
    configs = sorted(Path("results/runs").glob("*/config.json"))
    assert configs, "no committed run folders"
    for path in configs:
        stored = json.loads(path.read_text())
        config = TrainConfig.from_dict(stored["config"])
        digests = stored.get("init_weights_sha256"), stored.get("teacher_sha256")
        assert run_key(config, stored["data"], *digests) == stored["key"], path


def test_fine_tuning_starts_from_the_checkpoint_weights_and_is_keyed_by_their_content(quick_run, tmp_path):
    best = Path(quick_run["checkpoint_dir"]) / "best.pt"
    config = quick_run["config_object"].replace(init_from=str(shutil.copy(best, tmp_path / "start.pt")))
    key = run_key(config, "d")
    assert key != run_key(quick_run["config_object"], "d")
    assert run_key(config.replace(init_from=str(best)), "d") == key  # the same weights under another path
    with pytest.raises(ConfigError, match=r"init_from .*missing\.pt: file does not exist"):
        run_key(config.replace(init_from=str(tmp_path / "missing.pt")), "d")
    with pytest.raises(ConfigError, match="holds model 'fastscnn', but this run trains 'lraspp_mobilenetv3'"):
        train(
            config.replace(model="lraspp_mobilenetv3"), out=tmp_path / "m", checkpoints=tmp_path / "mc", progress=False
        )
    still = config.replace(iterations=1, val_interval=1, lr=1e-9)  # weights unchanged; only BN statistics move
    tuned = train(still, out=tmp_path / "r", checkpoints=tmp_path / "c", progress=False)
    assert tuned["final"]["mIoU"] > quick_run["best"]["mIoU"] - 3, (tuned["final"], quick_run["best"])
    stored = json.loads((Path(tuned["run_dir"]) / "config.json").read_text())
    assert stored["config"]["init_from"] == shown_path(tmp_path / "start.pt")  # as every record: no machine path
    shutil.copy(Path(quick_run["checkpoint_dir"]) / "last.pt", tmp_path / "start.pt")  # the path: other content
    with pytest.raises(Exception):  # noqa: B017 - only its digest now stands for the run's starting weights
        load_checkpoint(tmp_path / "start.pt")
    assert run_key(still, stored["data"], stored["init_weights_sha256"]) == tuned["key"]
    assert run_key(still, stored["data"]) != tuned["key"]


def test_cpu_bf16_is_keyed_only_when_set_and_autocasts_only_the_cpu():
    base = TrainConfig()
    bf16 = base.replace(cpu_bf16=True)
    assert run_key(bf16, "d") != run_key(base, "d")
    assert "cpu_bf16" in base.to_dict()  # saved in checkpoints; left out of the key only at its default
    cpu = torch.device("cpu")
    with training_autocast(bf16, cpu):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3)).dtype == torch.bfloat16
    with training_autocast(base, cpu):
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_levers_are_runtime_settings_with_cpu_defaults():
    from facelib.config import RUNTIME_FIELDS
    from facelib.machine import loader_workers

    base = TrainConfig()
    assert {"workers", "channels_last", "threads", "keep_memory", "compile"} <= set(RUNTIME_FIELDS)
    levers = base.replace(workers=1, channels_last=False, threads=1, keep_memory=False, compile=True)
    assert run_key(levers, "d") == run_key(base, "d")
    assert loader_workers(base, torch.device("cpu")) == 0 and loader_workers(base, torch.device("cuda")) == 4
    assert loader_workers(base.replace(workers=3), torch.device("cpu")) == 3
    with pytest.raises(ConfigError, match="threads"):
        TrainConfig(threads=-1)


def test_presized_cache_gives_the_same_batches_and_class_weights(synthetic_root, tmp_path):
    """Resizing the decoded pairs once (the default) feeds the loop exactly what resizing at every draw
    did, augmentation seeds included; the class weights still come from the pairs at their own size."""
    from facelib.run import identify, load_sets
    from facelib.train import build_criterion

    config = TrainConfig(data=str(synthetic_root), **{**QUICK_RUN, "augment": "full", "loss": "wce_lovasz_dice"})
    runs = []
    for presize in (True, False):
        data = identify(config, tmp_path)
        load_sets(config, data, presize=presize)
        runs.append(data)
    presized, plain = runs
    assert presized.train_set.image_shapes() == {(64, 64, 3)} and plain.train_set.image_shapes() == {(128, 128, 3)}
    for index in range(6):
        first, second = presized.train_set[(index, 1000 + index)], plain.train_set[(index, 1000 + index)]
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    weights = [build_criterion(config, data, torch.device("cpu"))[1] for data in runs]
    assert (weights[0] == weights[1]).all()


def test_native_scale_crops_train_on_crops_of_the_photo_and_validate_the_whole_photo(synthetic_root, tmp_path):
    """`photo_size`: 64 px crops of the 128 px synthetic photos at their own scale; validation and the checkpoint
    see the whole 128 px photo. Keyed only when set; refused with a preset that does not crop."""
    from facelib.run import load_sets

    config = TrainConfig(data=str(synthetic_root), **{**QUICK_RUN, "augment": "full", "photo_size": 128})
    assert run_key(config, "f") != run_key(config.replace(photo_size=0), "f")
    assert config.input_size == 128 and config.replace(photo_size=0).input_size == 64
    data = identify(config, tmp_path)
    load_sets(config, data)
    assert data.train_set.image_shapes() == {(128, 128, 3)}  # already at the photo size: nothing resized
    image, mask = data.train_set[(0, 7)]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert data.val_set[0][0].shape == (3, 128, 128)
    short = config.replace(iterations=2, val_interval=2)
    summary = train(short, out=tmp_path / "r", checkpoints=tmp_path / "c", progress=False)
    assert load_checkpoint(Path(summary["checkpoint_dir"]) / "best.pt")["input_size"] == 128
    assert "64x64 crops of 128 px photos" in (Path(summary["run_dir"]) / "README.md").read_text()
    with pytest.raises(ConfigError, match="an augmentation that crops"):
        config.replace(augment="baseline").validate()
    with pytest.raises(ConfigError, match="crop_size <= photo_size"):
        config.replace(photo_size=32).validate()


def test_keeping_freed_memory_applies_on_linux():
    from facelib.machine import keep_freed_memory

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory()
    torch.ones(64, 1024, 1024).sum()  # large allocations still work afterwards


def test_cpu_bf16_warns_where_the_cpu_would_emulate_it(monkeypatch):
    import facelib.machine
    from facelib.machine import prepare_cpu

    cpu, bf16 = torch.device("cpu"), TrainConfig(cpu_bf16=True, keep_memory=False)
    monkeypatch.setattr(facelib.machine, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no bf16 instructions"):
        prepare_cpu(bf16, cpu)
    monkeypatch.setattr(facelib.machine, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_cpu(bf16, cpu)
        prepare_cpu(bf16.replace(cpu_bf16=False), cpu)


def test_weight_average_follows_with_a_warm_up_then_averages_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 5
    average.update(model)  # n = 1: d = min(0.9, 2 / 11)
    expected = start + (1 - 2 / 11) * 1.0
    assert torch.allclose(average.module[0].weight, expected)
    assert int(average.module[1].num_batches_tracked) == 5 and not average.module.training
    for _ in range(200):
        average.update(model)
    assert average.current_decay() == 0.9 and torch.allclose(average.module[0].weight, model[0].weight, atol=1e-6)
    restored = WeightAverage(model, decay=0.9)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 201 and torch.equal(restored.module[0].weight, average.module[0].weight)
    with pytest.raises(ValueError):
        WeightAverage(model, decay=1.0)


def test_ema_run_keeps_the_average_leaves_training_unchanged_and_resumes(synthetic_root, tmp_path):
    base = {**QUICK_RUN, "iterations": 8, "val_interval": 8}  # one validation: best.pt holds the last average
    plain = TrainConfig(data=str(synthetic_root), **base)
    averaged = plain.replace(ema_decay=0.9)
    assert run_key(plain, "f") != run_key(averaged, "f")
    without = train(plain, out=tmp_path / "a", checkpoints=tmp_path / "ca", progress=False)
    whole = train(averaged, out=tmp_path / "b", checkpoints=tmp_path / "cb", progress=False)
    train(averaged, out=tmp_path / "c", checkpoints=tmp_path / "cc", stop_after=4, progress=False)
    resumed = train(averaged, out=tmp_path / "c", checkpoints=tmp_path / "cc", progress=False)
    assert resumed["best"] == whole["best"] and resumed["final"] == whole["final"]
    metrics = pd.read_csv(Path(whole["run_dir"]) / "metrics.csv")
    plain_metrics = pd.read_csv(Path(without["run_dir"]) / "metrics.csv")
    assert list(metrics["trained_mIoU"]) == pytest.approx(list(plain_metrics["mIoU"]), abs=1e-4)
    last = torch.load(tmp_path / "cb" / whole["key"] / "last.pt", weights_only=True)
    last_plain = torch.load(tmp_path / "ca" / without["key"] / "last.pt", weights_only=True)
    assert all(torch.equal(last["model"][n], last_plain["model"][n]) for n in last["model"])
    best = load_checkpoint(tmp_path / "cb" / whole["key"] / "best.pt")
    kept = {n: t for n, t in best["state_dict"].items() if t.is_floating_point()}
    assert all(torch.allclose(kept[n].float(), last["average"]["module"][n].float()) for n in kept)
    assert any(not torch.equal(last["average"]["module"][n], last["model"][n]) for n in kept)


def test_a_recipe_trains_its_stages_in_order_each_from_the_one_before_and_finds_them_again(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    from facelib import config as config_module
    from facelib.recipe import plan, recipe_stages, train_recipe

    stage = {"model": "fastscnn", "crop_size": 64, "iterations": 4, "val_interval": 2, "loss": "ce", "workers": 0}
    recipe = (("cpu-quick", stage), ("cpu-quick", {**stage, "lr": 5e-4, "iterations": 2, "val_interval": 1}))
    monkeypatch.setitem(config_module.RECIPES, "tiny", recipe)
    where = {"data": str(synthetic_root), "device": "cpu"}
    with pytest.raises(ConfigError, match="lr cannot be set"):
        recipe_stages("tiny", {**where, "lr": 0.1})
    with pytest.raises(ConfigError, match="valid recipes: cpu-shipped"):
        recipe_stages("nope", where)
    last = train_recipe("tiny", where, tmp_path / "results", tmp_path / "checkpoints")
    printed = capsys.readouterr().out
    assert printed.startswith("recipe tiny: 2 stages") and "stage 2: fastscnn, 16 samples at 64 px" in printed
    assert last["finished"] and last["config"]["iterations"] == 2
    first = next(k for k in os.listdir(tmp_path / "results" / "runs") if k != last["key"])
    record = json.loads((tmp_path / "results" / "runs" / last["key"] / "config.json").read_text())
    assert record["init_run_key"] == first and record["config"]["init_from"].endswith(f"{first}/best.pt")
    again = train_recipe("tiny", where, tmp_path / "results", tmp_path / "checkpoints")
    printed = capsys.readouterr().out
    assert again["key"] == last["key"] and f"run {last['key']}: finished earlier" in printed  # found, not retrained
    assert printed.startswith("recipe tiny: 2 stages, about 0.0 h of training left (2 of 2 finished earlier)")
    assert f"stage 1: fastscnn, 32 samples at 64 px: finished earlier (run {first}), reused" in printed
    os.remove(tmp_path / "checkpoints" / first / "best.pt")  # the next stage cannot start from it: trained again
    stages = recipe_stages("tiny", where)
    costs = plan("tiny", stages, tmp_path / "results", tmp_path / "checkpoints").splitlines()
    assert costs[1].endswith("when it was made, trained again: its checkpoint is not here") and "in all" in costs[0]
    assert "stage 2: fastscnn, 16 samples at 64 px: about 0.0 h at" in costs[2]  # its run is not known yet


def test_a_recipe_stage_can_train_on_the_test_photos_the_stage_before_labels(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    from facelib import config as config_module
    from facelib.recipe import labels_folder, plan, recipe_stages, train_recipe

    stage = {"model": "fastscnn", "crop_size": 64, "iterations": 2, "val_interval": 1, "loss": "ce", "workers": 0}
    labelled = {**stage, "pseudo_labels": config_module.STAGE_BEFORE}
    monkeypatch.setitem(config_module.RECIPES, "tiny", (("cpu-quick", stage), ("cpu-quick", labelled)))
    where, results, checkpoints = {"data": str(synthetic_root), "device": "cpu"}, tmp_path / "r", tmp_path / "c"
    costs = plan("tiny", recipe_stages("tiny", where), results, checkpoints).splitlines()
    assert "stage 2: fastscnn, 16 samples at 64 px and the test photos stage 1's model labels" in costs[2]
    last = train_recipe("tiny", where, results, checkpoints)
    record = json.loads((results / "runs" / last["key"] / "config.json").read_text())
    first = record["init_run_key"]
    folder = labels_folder(checkpoints / first / "best.pt")
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted(p.stem for p in synthetic_root.glob("test/images/*"))
    assert Path(record["config"]["pseudo_labels"]).resolve() == folder.resolve()  # recorded relative to here
    assert not list(folder.parent.glob(".*partial"))
    unlabelled = json.loads((results / "runs" / first / "config.json").read_text())
    assert record["data"] != unlabelled["data"]  # the labels are part of what the stage trained on
    capsys.readouterr()
    assert train_recipe("tiny", where, results, checkpoints)["key"] == last["key"]
    assert "about 0.0 h of training left (2 of 2 finished earlier)" in capsys.readouterr().out
    monkeypatch.setitem(config_module.RECIPES, "tiny", (("cpu-quick", labelled),))
    with pytest.raises(ConfigError, match="no stage before it"):
        recipe_stages("tiny", where)


def test_a_recipe_stage_can_distil_from_the_stage_befores_best_checkpoint(synthetic_root, tmp_path, monkeypatch):
    from facelib import config as config_module
    from facelib.recipe import recipe_stages, train_recipe

    stage = {"model": "fastscnn", "crop_size": 64, "iterations": 2, "val_interval": 1, "loss": "ce", "workers": 0}
    taught = {**stage, "teacher": config_module.STAGE_BEFORE, "teacher_tta": "flip"}
    monkeypatch.setitem(config_module.RECIPES, "tiny", (("cpu-quick", stage), ("cpu-quick", taught)))
    where, results = {"data": str(synthetic_root), "device": "cpu"}, tmp_path / "r"
    last = train_recipe("tiny", where, results, tmp_path / "c")
    record = json.loads((results / "runs" / last["key"] / "config.json").read_text())
    assert record["teacher_run_key"] == record["init_run_key"] and record["config"]["teacher_tta"] == "flip"
    assert record["config"]["teacher"] == record["config"]["init_from"]
    monkeypatch.setitem(config_module.RECIPES, "tiny", (("cpu-quick", taught),))
    with pytest.raises(ConfigError, match="no stage before it to label or teach from"):
        recipe_stages("tiny", where)
