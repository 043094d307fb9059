"""`facelib models`, `eval`, `adjust`, `predict`, `export`: the model table, and a trained model scored, adjusted,
run and exported."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelib.cli.common import CHECKPOINT_HELP, DATA_HELP, RESULTS_HELP, checkpoint_path
from facelib.config import BACKENDS, TTA_MODES
from facelib.errors import ConfigError


def models(args: argparse.Namespace) -> list[Path]:
    from facelib.models.cost import write_models_table  # lazy: --help stays fast

    return write_models_table(args.only, args.size, args.threads, args.repeats, not args.no_latency, args.out)


def evaluate(args: argparse.Namespace) -> list[Path]:
    from facelib.infer import evaluate, save_evaluation  # lazy: --help stays fast

    checkpoint = checkpoint_path(args.checkpoint)
    result = evaluate(
        checkpoint,
        args.data,
        args.split,
        args.tta,
        args.corrected_labels,
        args.out,
        args.batch_size,
        args.device,
        input_size=args.input_size,
    )
    labels = "audit-corrected" if args.corrected_labels else "original"
    scores = ", ".join(f"{k} {v:.2f}" for k, v in result.summary.items())
    print(f"{result.images} {args.split} images, {labels} labels, TTA {args.tta}: {scores}")
    print(result.per_class().round(2).to_string())
    return save_evaluation(result, checkpoint, args.data, args.split, args.out)


def adjust(args: argparse.Namespace) -> list[Path]:
    from facelib.adjust import adjust  # lazy: --help stays fast
    from facelib.infer import evaluate, save_evaluation  # lazy: --help stays fast

    checkpoint = checkpoint_path(args.checkpoint)
    target, adjustment = adjust(checkpoint, args.to, args.data, args.out, args.device)
    scores = ", ".join(f"tau {tau:g}: {miou:.2f}" for tau, miou in adjustment.train_miou.items())
    print(f"mIoU on the {adjustment.photos} training photos by tau: {scores}; chosen: tau {adjustment.tau:g}")
    result = evaluate(target, args.data, "val", out=args.out, device=args.device)
    print(
        f"{target}: validation (original labels, no TTA): mIoU {result.summary['mIoU']:.2f}, mF1 "
        f"{result.summary['mF1']:.2f}, per-image F {result.summary['per_image_F']:.2f}"
    )
    return [target, *save_evaluation(result, target, args.data, "val", args.out)]


def predict(args: argparse.Namespace) -> list[Path]:
    from facelib.infer import predict  # lazy: --help stays fast
    from facelib.ship import default_model  # lazy: --help stays fast

    if args.checkpoint and args.model:
        raise ConfigError("--checkpoint names the model to run; --model picks a shipped one: give one of them")
    checkpoint = (
        checkpoint_path(args.checkpoint) if args.checkpoint else default_model(args.backend, args.model or "best")
    )
    if not args.checkpoint:
        print(f"model: {checkpoint}")
    options = {"overlay": args.overlay, "tta": args.tta, "device": args.device, "backend": args.backend}
    written = predict(checkpoint, args.inputs, args.out, **options)
    print(f"{sum(p.suffix == '.png' for p in written)} masks written to {args.out}")
    return written


def export(args: argparse.Namespace) -> list[Path]:
    from facelib.checkpoint import onnx_metadata  # lazy: --help stays fast
    from facelib.export import calibration_batches, calibration_source, export_checkpoint, quantize_int8  # lazy

    checkpoint = checkpoint_path(args.checkpoint)
    target, parity = export_checkpoint(checkpoint, args.onnx, check=not args.no_check, fixed_shape=args.fixed_shape)
    if parity is not None:
        agreement = 100 * parity.argmax_agreement
        print(
            f"{target}: ONNX Runtime vs PyTorch on random inputs: max |logit diff| {parity.max_abs_diff:.2e}, "
            f"argmax agreement {agreement:.3f}%"
        )
    written = [target]
    if args.int8:
        batches = calibration_batches(onnx_metadata(target), args.data, args.calibration_images, args.out)
        int8 = target.with_name(target.stem + "_int8.onnx")
        source = calibration_source(args.data)
        described = f"{len(batches)} training images of {source} (percentile calibration, QDQ, per channel)"
        written.append(quantize_int8(target, int8, batches, described))
        print(f"{int8}: int8, calibrated on {described}; `facelib eval {int8}` measures its accuracy")
    return written


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="parameters, FLOPs and CPU latency of every registered model")
    parser.add_argument("--only", help="comma-separated model names (default: all)")
    parser.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the latency (default: 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per model (default: 10)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--out", default="results", help=RESULTS_HELP)
    parser.set_defaults(run=models)

    parser = commands.add_parser("eval", help="evaluate a checkpoint on the validation split")
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--split", default="val", choices=["val", "train"])
    parser.add_argument("--tta", default="none", choices=TTA_MODES)
    parser.add_argument("--corrected-labels", action="store_true", help="score against the audit-corrected labels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--input-size", type=int, help="model input side (default: the checkpoint's training crop)")
    parser.add_argument("--out", default="results", help="results folder: writes OUT/runs/KEY/eval-*.json")
    parser.set_defaults(run=evaluate)

    parser = commands.add_parser(
        "adjust", help="undo the class weights' bias towards rare classes, tau chosen on the training photos"
    )
    parser.add_argument("checkpoint", help="a run's best.pt, a run folder or a run key")
    parser.add_argument("--to", help="where to write it (default: adjusted.pt beside the checkpoint)")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results", help="results folder: writes OUT/runs/KEY/eval-*-adjusted.json")
    parser.set_defaults(run=adjust)

    parser = commands.add_parser("predict", help="parse face photos: palette PNG masks, optional overlays")
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument(
        "--checkpoint",
        help=f"{CHECKPOINT_HELP} (default: $FACELIB_MODEL, else the shipped results/models/facelib-best.pt)",
    )
    parser.add_argument(
        "--model",
        choices=("best", "fast"),
        help="a shipped model instead of --checkpoint: best (the default: results/models/facelib-best.pt) or fast "
        "(results/models/facelib-fast.pt, at most 0.3x the anchor's time; its card says what it scores)",
    )
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--overlay", action="store_true", help="also write OUT/overlays/STEM.jpg")
    parser.add_argument("--tta", default="none", choices=TTA_MODES)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="torch (a .pt checkpoint) or onnx (an exported .onnx file, ONNX Runtime on the CPU); auto (default): "
        "by the file's suffix",
    )
    parser.set_defaults(run=predict)

    parser = commands.add_parser("export", help="export a checkpoint to ONNX (metadata: preprocessing, labels)")
    parser.add_argument("checkpoint", help="a checkpoint file, a run folder, or a run key")
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write OUT_int8.onnx: ONNX Runtime static quantization calibrated on training images",
    )
    parser.add_argument("--calibration-images", type=int, default=32, help="training images for int8 (default 32)")
    parser.add_argument("--data", help=DATA_HELP + " (the int8 calibration images)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    parser.add_argument(
        "--fixed-shape",
        action="store_true",
        help="a graph for one image at the checkpoint's input size only (what predict feeds it): for runtimes and "
        "converters that need static shapes (no faster in ONNX Runtime on our CPU); multiscale TTA needs the "
        "default dynamic graph",
    )
    parser.add_argument("--out", default="results", help="results folder holding the split files (default: results)")
    parser.set_defaults(run=export)
