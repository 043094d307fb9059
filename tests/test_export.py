"""ONNX export and ONNX Runtime inference: parity with PyTorch for every candidate, metadata, int8, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facelib.checkpoint import OnnxModel, onnx_metadata
from facelib.cli import main
from facelib.errors import ConfigError, DataError
from facelib.export import PARITY_TOLERANCE, compare_with_torch, export_model, write_metadata
from facelib.infer import evaluate, predict
from facelib.labels import CLASS_NAMES, NUM_CLASSES, PALETTE
from facelib.models import build_model, candidates
from facelib.models.fastscnn import adaptive_avg_pool

pytestmark = pytest.mark.slow  # every test here exports or times models: seconds each


def trained_like(name: str, seed: int = 0) -> torch.nn.Module:
    """A candidate with random He-scaled weights, random BatchNorm affines and BatchNorm statistics measured
    on random batches, so its logits spread like a trained model's (a fresh model's are near zero, which
    would make argmax agreement meaningless)."""
    generator = torch.Generator().manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the batches below
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, 128, 128, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name", candidates())
def test_onnx_runtime_matches_pytorch_for_every_candidate(name, tmp_path):
    """Exported once at 128x128, run at other batch sizes and shapes: logits within 1e-3, argmax >= 99.9%."""
    model = trained_like(name)
    path = export_model(model, tmp_path / f"{name}.onnx", example_size=128)
    write_metadata(path, {"format": "facelib-onnx", "precision": "float32"})
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 3, 128, 128, generator=generator), torch.randn(1, 3, 96, 160, generator=generator)]
    with torch.no_grad():
        spread = torch.cat([model(x).flatten() for x in inputs]).std().item()
    assert spread > 0.3, f"{name}: logits too flat ({spread:.3f}) for the agreement check to mean anything"
    parity = compare_with_torch(model, OnnxModel(path, threads=2), inputs=inputs)
    assert parity.max_abs_diff < PARITY_TOLERANCE, parity
    assert parity.argmax_agreement >= 0.999, parity


def test_exportable_pyramid_pooling_equals_adaptive_average_pooling():
    for height, width in [(16, 16), (4, 4), (5, 11), (3, 7)]:
        x = torch.randn(2, 5, height, width)
        for bins in (1, 2, 3, 6):
            assert torch.allclose(adaptive_avg_pool(x, bins), F.adaptive_avg_pool2d(x, bins), atol=1e-6)


@pytest.fixture(scope="module")
def exported(quick_run, synthetic_root, tmp_path_factory) -> dict[str, Path]:
    """The quick run's best checkpoint exported by the CLI, in float32 and int8."""
    folder = tmp_path_factory.mktemp("exported")
    best = Path(quick_run["checkpoint_dir"]) / "best.pt"
    target = folder / "quick.onnx"
    data = ["--data", str(synthetic_root), "--out", str(quick_run["base"] / "results")]
    code = main(["export", str(best), "--onnx", str(target), "--int8", "--calibration-images", "4", *data])
    assert code == 0
    return {"checkpoint": best, "fp32": target, "int8": folder / "quick_int8.onnx", "results": quick_run["base"]}


def test_export_metadata_makes_the_file_self_describing(exported, quick_run):
    metadata = onnx_metadata(exported["fp32"])
    assert metadata["precision"] == "float32" and metadata["model"] == "fastscnn"
    assert metadata["class_names"] == list(CLASS_NAMES) and metadata["palette"] == PALETTE[:NUM_CLASSES].tolist()
    assert metadata["input_size"] == 64 and metadata["run_key"] == quick_run["key"]
    assert len(metadata["mean"]) == len(metadata["std"]) == 3
    graph = onnx.load(str(exported["fp32"]))
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3])), dims  # dynamic B, H, W
    umask = os.umask(0)
    os.umask(umask)
    assert exported["fp32"].stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    int8 = onnx_metadata(exported["int8"])
    assert int8["precision"] == "int8" and "4 training images" in int8["calibration"]
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(exported["int8"])).graph.node)


def test_onnx_evaluation_matches_pytorch_and_int8_stays_close(exported, synthetic_root):
    results = exported["results"] / "results"
    scores = {
        kind: evaluate(exported[kind], data=synthetic_root, out=results, device="cpu", workers=0).summary
        for kind in ("checkpoint", "fp32", "int8")
    }
    assert scores["fp32"]["mIoU"] == pytest.approx(scores["checkpoint"]["mIoU"], abs=0.01)
    assert abs(scores["int8"]["mIoU"] - scores["checkpoint"]["mIoU"]) < 5  # a coarse guard: int8 still parses faces


def test_predict_with_the_onnx_backend_matches_pytorch_with_flip_tta(exported, synthetic_root, tmp_path):
    photos = sorted((synthetic_root / "test" / "images").iterdir())[:3]
    odd = tmp_path / "odd.png"
    Image.open(photos[0]).convert("RGB").resize((97, 131)).save(odd)  # a size the model never saw
    photos.append(odd)
    masks = {}
    for backend, source in (("torch", exported["checkpoint"]), ("onnx", exported["fp32"])):
        predict(source, photos, tmp_path / backend, tta="flip", device="cpu", backend=backend)
        masks[backend] = [np.asarray(Image.open(tmp_path / backend / f"{p.stem}.png")) for p in photos]
    for torch_mask, onnx_mask in zip(masks["torch"], masks["onnx"], strict=True):
        assert torch_mask.shape == onnx_mask.shape
        assert (torch_mask == onnx_mask).mean() >= 0.999
    model = ["--checkpoint", str(exported["int8"]), "--backend", "onnx"]
    code = main(["predict", str(photos[0]), *model, "--tta", "flip", "--out", str(tmp_path / "cli")])
    assert code == 0 and (tmp_path / "cli" / f"{photos[0].stem}.png").exists()


def test_backend_mismatches_and_foreign_files_are_clear_errors(exported, tmp_path):
    with pytest.raises(ConfigError, match=r"needs an \.onnx file"):
        predict(exported["checkpoint"], [tmp_path], tmp_path / "out", backend="onnx")
    with pytest.raises(ConfigError, match="CPU"):
        predict(exported["fp32"], [tmp_path], tmp_path / "out", device="cuda")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"garbage\.onnx"):
        onnx_metadata(garbage)
    plain = tmp_path / "plain.onnx"
    export_model(build_model("lraspp_mobilenetv3"), plain, example_size=64, fixed_batch=1)  # static: 4x faster
    with pytest.raises(DataError, match="not a facelib ONNX export"):
        onnx_metadata(plain)
    assert main(["export", str(exported["checkpoint"]), "--onnx", str(tmp_path / "x.txt")]) == 2
    assert not list(tmp_path.glob(".*tmp*"))


def test_metadata_round_trips_any_json(tmp_path):
    path = export_model(build_model("lraspp_mobilenetv3"), tmp_path / "m.onnx", example_size=64, fixed_batch=1)
    values = {"format": "facelib-onnx", "nested": {"a": [1, 2.5, None]}, "text": "ü"}
    write_metadata(path, values)
    assert onnx_metadata(path) == values
    assert json.loads(onnx.load(str(path)).metadata_props[1].value) == values["nested"]


def test_fixed_shape_export_runs_predict_and_eval_and_refuses_other_sizes(exported, synthetic_root, tmp_path):
    fixed = tmp_path / "fixed.onnx"
    assert main(["export", str(exported["checkpoint"]), "--onnx", str(fixed), "--fixed-shape"]) == 0
    assert onnx_metadata(fixed)["shape"].startswith("fixed: 1x3x64x64")
    dims = [d.dim_value for d in onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    results = exported["results"] / "results"
    scores = {
        path.name: evaluate(path, data=synthetic_root, out=results, device="cpu", workers=0).summary["mIoU"]
        for path in (exported["fp32"], fixed)
    }  # batches of 8 run one image at a time
    assert scores["fixed.onnx"] == pytest.approx(scores["quick.onnx"], abs=0.01)
    photo = sorted((synthetic_root / "test" / "images").iterdir())[0]
    predict(fixed, [photo], tmp_path / "out", tta="flip")
    assert (tmp_path / "out" / f"{photo.stem}.png").exists()
    with pytest.raises(ConfigError, match="fixed-shape export"):  # what multiscale TTA would feed it
        OnnxModel(fixed)(torch.zeros(1, 3, 96, 96))
