"""The `facelib` command line: one subcommand per job, each a thin call into the library. Handlers import the
library modules they run inside the function (marked `# lazy`), so `facelib --help` never imports torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from facelib.config import BACKENDS, RECIPES, TRAIN_PRESETS, TTA_MODES, TrainConfig, add_config_flags, config_from_flags
from facelib.errors import ConfigError, DataError, ReportError, RunBusyError

TRAIN_MISSING_HELP = (
    "train runs missing from the run cache (default: only the smoke profile does; others use the cache)"
)
DATA_HELP = "dataset root (train/images + train/masks, or images/ + masks/); default: $FACELIB_DATA, else the built-in synthetic faces"


def _stats(args: argparse.Namespace) -> list[Path]:
    from facelib.stats import write_stats  # lazy: --help stays fast

    return write_stats(args.data, args.split, args.out, args.seed)


def _audit(args: argparse.Namespace) -> list[Path]:
    from facelib.audit import write_audit  # lazy: --help stays fast

    return write_audit(args.data, args.out, args.write_corrected)


def _synth(args: argparse.Namespace) -> list[Path]:
    from facelib.synthetic import write_synthetic_dataset  # lazy: --help stays fast

    return [write_synthetic_dataset(args.out, args.n_train, args.n_test, args.size, args.seed)]


def _models(args: argparse.Namespace) -> list[Path]:
    from facelib.models.profile import write_models_table  # lazy: --help stays fast

    return write_models_table(args.only, args.size, args.threads, args.repeats, not args.no_latency, args.out)


def _train(args: argparse.Namespace) -> list[Path]:
    from facelib.recipe import train_recipe  # lazy: --help stays fast
    from facelib.train import train  # lazy: --help stays fast

    if args.preset in RECIPES:  # every stage's settings are the recipe's: only where and how it runs are flags
        given = {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__ if getattr(args, name, None)}
        summary = train_recipe(args.preset, given, args.out, args.checkpoints, args.time_limit)
    else:
        config = config_from_flags(args, args.preset)
        print("config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()))
        summary = train(config, args.out, args.checkpoints, args.stop_after, True, args.time_limit, restart=args.rerun)
    run_dir = Path(summary["run_dir"])
    best = summary["best"]
    if best:
        print(f"best (iteration {best['iteration']}): mIoU {best['mIoU']:.2f}, mF1 {best['mF1']:.2f}, "
              f"mFscore (reference-style) {best['mFscore_ref']:.2f}, per-image F {best['per_image_F']:.2f}")  # fmt: skip
    state = "finished" if summary["finished"] else f"stopped at iteration {summary['iterations_done']} (resumable)"
    print(f"run {summary['key']} {state}: results in {run_dir}, checkpoints in {summary['checkpoint_dir']}")
    return sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))  # not the run's lock


def _checkpoint_path(value: str) -> Path:
    """A checkpoint file, or a run folder / run key whose best checkpoint is meant."""
    path = Path(value)
    if path.is_dir():
        return Path("checkpoints") / path.name / "best.pt"
    if not path.exists() and not path.suffix and (Path("checkpoints") / value / "best.pt").exists():
        return Path("checkpoints") / value / "best.pt"
    return path


def _eval(args: argparse.Namespace) -> list[Path]:
    from facelib.infer import evaluate, save_evaluation  # lazy: --help stays fast

    checkpoint = _checkpoint_path(args.checkpoint)
    result = evaluate(checkpoint, args.data, args.split, args.tta, args.corrected_labels, args.out, args.batch_size,
                      args.device, input_size=args.input_size)  # fmt: skip
    labels = "audit-corrected" if args.corrected_labels else "original"
    print(f"{result.images} {args.split} images, {labels} labels, TTA {args.tta}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result.summary.items()))  # fmt: skip
    print(result.per_class().round(2).to_string())
    return save_evaluation(result, checkpoint, args.data, args.split, args.out)


def _predict(args: argparse.Namespace) -> list[Path]:
    from facelib.infer import predict  # lazy: --help stays fast
    from facelib.ship import default_model  # lazy: --help stays fast

    checkpoint = _checkpoint_path(args.checkpoint) if args.checkpoint else default_model(args.backend)
    if not args.checkpoint:
        print(f"model: {checkpoint}")
    written = predict(checkpoint, args.inputs, args.out, overlay=args.overlay, tta=args.tta, device=args.device,
                      backend=args.backend)  # fmt: skip
    print(f"{sum(p.suffix == '.png' for p in written)} masks written to {args.out}")
    return written


def _export(args: argparse.Namespace) -> list[Path]:
    from facelib.checkpoint import onnx_metadata  # fmt: skip
    from facelib.export import calibration_batches, calibration_source, export_checkpoint, quantize_int8  # lazy

    checkpoint = _checkpoint_path(args.checkpoint)
    target, parity = export_checkpoint(checkpoint, args.onnx, check=not args.no_check, fixed_shape=args.fixed_shape)
    if parity is not None:
        print(f"{target}: ONNX Runtime vs PyTorch on random inputs: max |logit diff| {parity.max_abs_diff:.2e}, "
              f"argmax agreement {100 * parity.argmax_agreement:.3f}%")  # fmt: skip
    written = [target]
    if args.int8:
        batches = calibration_batches(onnx_metadata(target), args.data, args.calibration_images, args.out)
        int8 = target.with_name(target.stem + "_int8.onnx")
        described = f"{len(batches)} training images of {calibration_source(args.data)} (percentile calibration, QDQ, per channel)"
        written.append(quantize_int8(target, int8, batches, described))
        print(f"{int8}: int8, calibrated on {described}; `facelib eval {int8}` measures its accuracy")
    return written


def _ship(args: argparse.Namespace) -> list[Path]:
    from facelib.ship import DEFAULT_MODEL, ship  # lazy: --help stays fast

    if bool(args.checkpoint) == bool(args.best):
        raise ConfigError("name a checkpoint (file, run folder or run key) or --best PROFILE, not both or neither")
    if args.best and args.why:
        raise ConfigError("--why explains a named checkpoint; with --best the card states how the run was chosen")
    if args.best:
        from facelib.selection import best_for_shipping  # lazy: --help stays fast

        checkpoint, selection = best_for_shipping(
            args.best, args.data, args.device, args.out, args.checkpoints, args.allow_missing
        )
    else:
        checkpoint, selection = _checkpoint_path(args.checkpoint), args.why
    target = Path(args.to) if args.to else DEFAULT_MODEL
    written = ship(checkpoint, target, args.data, args.out, args.device, evaluate=not args.no_eval,
                   card=not args.no_card, selection=selection, onnx=args.onnx,
                   input_size=args.input_size)  # fmt: skip
    print(f"{target}: fp16 weights of {checkpoint} ({target.stat().st_size / 1e6:.1f} MB)")
    return written


def _runs(args: argparse.Namespace) -> list[Path]:
    import pandas as pd  # lazy: --help stays fast

    from facelib.experiments import Report, TimeLimitReached, train_rows  # lazy: --help stays fast
    from facelib.tables import round_frame  # lazy: --help stays fast

    report = Report(args.profile, args.data, args.device, args.out, args.checkpoints, "facelib runs",
                    train_missing=not args.cached_only, time_limit_s=args.time_limit)  # fmt: skip
    tables, only = args.table.split(","), args.rows.split(",") if args.rows else None
    if only and len(tables) > 1:
        raise ConfigError("--rows picks rows of one table; name a single --table with it")
    modes = [m for m in args.tta.split(",") if m]
    pack = Path(args.pack) if args.pack else None
    try:
        lines, failed = train_rows(report, tables, only, modes, args.budget, pack, args.weights)
    except TimeLimitReached as stopped:
        lines, failed = [], 0
        print(f"facelib runs: {stopped}")
    if lines:
        print(round_frame(pd.DataFrame(lines)).to_string(index=False))
    if failed:
        raise ReportError(f"{failed} row(s) failed (their errors are printed above); the others are done")
    return sorted(p for line in lines for p in (Path(args.out) / "runs" / line["key"]).iterdir() if p.is_file())


def _bench(args: argparse.Namespace) -> list[Path]:
    import torch

    from facelib.bench import bench_cpu_levers, bench_train  # lazy: --help stays fast
    from facelib.checkpoint import resolve_device  # lazy: --help stays fast
    from facelib.latency import INFER_BACKENDS, bench_infer, write_bench  # lazy: --help stays fast

    if args.target == "anchor":
        from facelib.latency import ANCHOR, anchor_latency  # lazy: --help stays fast

        table = anchor_latency(args.model.split(","), args.size, args.threads, args.repeats)
        print(table.to_string(float_format="{:.3g}".format))
        stem = f"anchor_{'_'.join(args.model.replace('@', '-at').split(','))}_{args.size}px_t{args.threads}"
        title = (
            f"ONNX Runtime float32 latency as a multiple of {ANCHOR}, {args.size}px, batch 1, {args.threads} threads"
        )
        return write_bench(table, stem, title, "none (untrained models, random inputs)", args.out)
    if args.target == "train":
        models = (args.model or "fastscnn").split(",")
        args.model = models[0]
        config = config_from_flags(args)
        levers = resolve_device(config.device).type == "cpu" and not args.stages
        if len(models) > 1 and not levers:
            raise ConfigError("several --model names make one CPU lever table; the stage table takes one model")
        if levers:
            table = bench_cpu_levers(config, args.steps, args.warmup, args.out, args.compile is not False, models)
            names = "_".join(models)
            stem = f"train_levers_{names}_cpu_{config.crop_size}px_b{config.batch_size}"
            title = (f"CPU training loop with and without each lever: {', '.join(models)}, batch "
                     f"{config.batch_size} at {config.crop_size}px, {torch.get_num_threads()} threads")  # fmt: skip
            shown = ["model", "loss", "workers", "threads", "channels_last", "presize", "keep_memory", "loss_impl",
                     "compile", "cpu_bf16", "images_per_s", "data_wait_share", "compile_s", "vs_before_ce",
                     "vs_ce"]  # fmt: skip
            print(table[shown].reset_index().to_string(index=False, float_format="{:.3g}".format))
            return write_bench(table, stem, title, args.data, args.out)
        table = bench_train(config, args.steps, args.warmup, args.out)
        device = "cpu" if table["device"].iloc[0].startswith("cpu") else "cuda"
        stem = f"train_{config.model}_{device}_{config.crop_size}px_b{config.batch_size}_{table['loss'].iloc[0]}"
        stem += "_compiled" if config.compile else ""
        title = f"Training throughput: {config.model}, batch {config.batch_size} at {config.crop_size}px"
    else:
        backends = tuple(args.backends.split(",")) if args.backends else INFER_BACKENDS
        table = bench_infer(args.model, args.checkpoint, args.threads, args.size, args.batch, args.repeats,
                            backends=backends, data=args.data, out=args.out, onnx_dir=args.keep_onnx,
                            accuracy=args.accuracy)  # fmt: skip
        name = table["model"].iloc[0]
        weights = "trained" if args.checkpoint else "untrained"
        stem = f"infer_{name}_{weights}_{args.size}px_t{args.threads}_b{args.batch}"
        title = f"CPU inference latency: {name} ({weights}), {args.size}px, batch {args.batch}, {args.threads} threads"
    shown = [c for c in SHOWN_BENCH_COLUMNS if c in table.columns]
    print(table[shown].reset_index().to_string(index=False, float_format="{:.4g}".format))
    return write_bench(table, stem, title, args.data, args.out)


SHOWN_BENCH_COLUMNS = ("status", "images_per_s", "ms_per_batch", "median_ms", "p90_ms", "data_wait_share",
                       "peak_memory_gib", "lovasz_share_of_step", "argmax_agreement", "max_abs_logit_diff",
                       "val_mIoU", "val_mIoU_drop")  # fmt: skip


def _report(args: argparse.Namespace) -> list[Path]:
    from facelib.runner import run_report  # lazy: --help stays fast

    out = run_report(
        args.profile, args.data, args.device, args.only, args.out, args.checkpoints, args.notebooks, args.train_missing
    )
    return [out / "README.md", out / "html" / "index.html"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facelib", description="Face parsing with models under 1.8M parameters.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = commands.add_parser("stats", help="class frequencies, RGB mean/std, class weights, split file")
    stats.add_argument("data", nargs="?", help=DATA_HELP)
    stats.add_argument("--out", default="results", help="results folder (default: results)")
    stats.add_argument("--split", help="split file to read or create (default: OUT/splits/NAME-seedSEED.json)")
    stats.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    stats.set_defaults(run=_stats)

    audit = commands.add_parser("audit", help="find masks whose left/right labels are reversed")
    audit.add_argument("data", nargs="?", help=DATA_HELP)
    audit.add_argument("--out", default="results", help="results folder (default: results)")
    audit.add_argument("--write-corrected", metavar="DIR", help="write a corrected copy of the dataset to DIR")
    audit.set_defaults(run=_audit)

    synth = commands.add_parser("synth", help="write a synthetic dataset in the real data's layout")
    synth.add_argument("out", help="folder to create")
    synth.add_argument("--n-train", type=int, default=200)
    synth.add_argument("--n-test", type=int, default=20)
    synth.add_argument("--size", type=int, default=256)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_synth)

    models = commands.add_parser("models", help="parameters, FLOPs and CPU latency of every registered model")
    models.add_argument("--only", help="comma-separated model names (default: all)")
    models.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    models.add_argument("--threads", type=int, default=2, help="CPU threads for the latency (default: 2)")
    models.add_argument("--repeats", type=int, default=10, help="timed forward passes per model (default: 10)")
    models.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    models.add_argument("--out", default="results", help="results folder (default: results)")
    models.set_defaults(run=_models)

    train = commands.add_parser("train", help="train a model (or resume it, or find it finished in the run cache)")
    train.add_argument(
        "preset",
        nargs="?",
        choices=[*TRAIN_PRESETS, *RECIPES],
        help="a training preset (its fields "
        "are the defaults, flags override them) or a multi-stage recipe (facelib/config.py)",
    )
    add_config_flags(train)  # one flag per TrainConfig field, its comment as the help
    train.add_argument("--stop-after", type=int, help="stop after this many iterations, leaving a resumable run")
    train.add_argument("--time-limit", type=float, help="stop at the first checkpoint after this many seconds")
    train.add_argument("--rerun", action="store_true", help="discard a stopped run's last.pt and start it again")
    train.add_argument("--out", default="results", help="results folder (default: results)")
    train.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder (default: checkpoints)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on the validation split")
    evaluate.add_argument("checkpoint", help="a checkpoint file, a run folder, a run key, or an exported .onnx file")
    evaluate.add_argument("--data", help=DATA_HELP)
    evaluate.add_argument("--split", default="val", choices=["val", "train"])
    evaluate.add_argument("--tta", default="none", choices=TTA_MODES)
    evaluate.add_argument("--corrected-labels", action="store_true", help="score against the audit-corrected labels")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--input-size", type=int, help="model input side (default: the checkpoint's training crop)")
    evaluate.add_argument("--out", default="results", help="results folder: writes OUT/runs/KEY/eval-*.json")
    evaluate.set_defaults(run=_eval)

    predict = commands.add_parser("predict", help="parse face photos: palette PNG masks, optional overlays")
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--checkpoint",
                         help="a checkpoint file, a run folder, a run key, or an exported .onnx file (default: "
                         "$FACELIB_MODEL, else the shipped results/models/facelib-best.pt)")  # fmt: skip
    predict.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    predict.add_argument("--overlay", action="store_true", help="also write OUT/overlays/STEM.jpg")
    predict.add_argument("--tta", default="none", choices=TTA_MODES)
    predict.add_argument("--device", default="auto")
    predict.add_argument("--backend", default="auto", choices=BACKENDS,
                         help="torch (a .pt checkpoint) or onnx (an exported .onnx file, ONNX Runtime on the CPU); "
                         "auto (default): by the file's suffix")  # fmt: skip
    predict.set_defaults(run=_predict)

    export = commands.add_parser("export", help="export a checkpoint to ONNX (metadata: preprocessing, labels)")
    export.add_argument("checkpoint", help="a checkpoint file, a run folder, or a run key")
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument("--int8", action="store_true",
                        help="also write OUT_int8.onnx: ONNX Runtime static quantization calibrated on training images")  # fmt: skip
    export.add_argument("--calibration-images", type=int, default=32, help="training images for int8 (default 32)")
    export.add_argument("--data", help=DATA_HELP + " (the int8 calibration images)")
    export.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    export.add_argument("--fixed-shape", action="store_true",
                        help="a graph for one image at the checkpoint's input size only (what predict feeds it): "
                        "for runtimes and converters that need static shapes (no faster in ONNX Runtime on our CPU); multiscale "
                        "TTA needs the default dynamic graph")  # fmt: skip
    export.add_argument("--out", default="results", help="results folder holding the split files (default: results)")
    export.set_defaults(run=_export)

    ship_ = commands.add_parser(
        "ship", help="a run's best checkpoint as fp16 weights, evaluated as shipped, with a model card",
        description="Write fp16 weights of a checkpoint (default target: results/models/facelib-best.pt, the model "
        "`facelib predict` uses by default), evaluate that file on the validation split (TTA none and flip, and "
        "the audit-corrected labels) and write a model card TARGET.md beside it.",
    )  # fmt: skip
    ship_.add_argument("checkpoint", nargs="?", help="a checkpoint file, a run folder, or a run key")
    ship_.add_argument("--best", metavar="PROFILE", help="instead: the best run under the cap among that profile's "
                       "Table 4 rows and their longer runs and fine-tunes (by validation mF1; ties: fewest FLOPs)")  # fmt: skip
    ship_.add_argument("--why", metavar="PHRASE", help="with a named checkpoint: why it was chosen, a phrase the "
                       "model card prints after 'chosen as'")  # fmt: skip
    ship_.add_argument("--to", metavar="TARGET.pt", help="where to write (default: results/models/facelib-best.pt)")
    ship_.add_argument("--data", help=DATA_HELP + " (the validation images)")
    ship_.add_argument("--device", default="auto")
    ship_.add_argument("--allow-missing", action="store_true", help="with --best: choose among the Table 4 rows "
                       "that are finished when others are not (the card names the missing ones)")  # fmt: skip
    ship_.add_argument("--onnx", action="store_true", help="also write TARGET.onnx and TARGET_int8.onnx (what "
                       "`facelib predict --backend onnx` uses), the int8 file evaluated too")  # fmt: skip
    ship_.add_argument("--input-size", type=int, help="the shipped file's input side (default: its training crop)")
    ship_.add_argument("--no-eval", action="store_true", help="do not evaluate (the card then has no scores)")
    ship_.add_argument("--no-card", action="store_true", help="write the weights only")
    ship_.add_argument("--out", default="results", help="results folder: run cache and split files (default: results)")
    ship_.add_argument("--checkpoints", default="checkpoints", help="checkpoints folder, for --best")
    ship_.set_defaults(run=_ship)

    runs = commands.add_parser(
        "runs", help="train (or find in the run cache) every row of a report table, as its notebook does",
        description="The runs behind a report table for a profile, exactly as notebooks 02-04 define them "
        "(facelib.profiles.TABLES): trained where missing, then optionally scored with test-time augmentation "
        "(stored beside each run, where notebook 04 reads them). Meant for GPU leases: train here, assemble the "
        "report elsewhere with `facelib report --cached-only`.",
    )  # fmt: skip
    runs.add_argument("--profile", default="smoke", help="smoke (default), cpu, gpu-short or full")
    runs.add_argument("--table", required=True, help="augmentation, loss or comparison (comma-separated for several)")
    runs.add_argument("--rows", help="comma-separated rows of the table (default: all), e.g. fastscnn,bisenetv2_xs")
    runs.add_argument("--tta", default="", help="after training, evaluate each best checkpoint with these TTA "
                      "modes, e.g. none,flip (default: none of them)")  # fmt: skip
    runs.add_argument("--data", help=DATA_HELP)
    runs.add_argument("--device", default="auto", help="where missing runs train: auto (default), cpu, cuda")
    runs.add_argument("--out", default="results", help="results root: run cache in OUT/runs (default: results)")
    runs.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder (default: checkpoints)")
    runs.add_argument("--cached-only", action="store_true", help="never train: fail on a run missing from the cache")
    runs.add_argument("--budget", type=float, help="seconds: start no row after this long")
    runs.add_argument("--pack", metavar="DIR", help="after each row, pack the finished runs into DIR/runs.tar "
                      "(with RESULTS/splits), for a machine lent for a few minutes")  # fmt: skip
    runs.add_argument("--weights", action="store_true", help="with --pack: each run's best.pt as DIR/KEY.pt too")
    runs.add_argument("--time-limit", type=float, help="seconds: stop at the first checkpoint after this long (the "
                      "run resumes from it next time); rows not started by then are left for next time")  # fmt: skip
    runs.set_defaults(run=_runs)

    bench = commands.add_parser("bench", help="measure speed: training throughput or inference latency")
    targets = bench.add_subparsers(dest="target", required=True, metavar="WHAT")
    bench_train = targets.add_parser("train", help="images/s of the data pipeline, the training step and the loop")
    add_config_flags(bench_train)  # the run being timed, as `facelib train` takes it (--crop, --batch: short forms)
    bench_train.set_defaults(batch_size=16)
    bench_train.add_argument("--stages", action="store_true", help="on a CPU: the data/step/loop stage table "
                             "instead of the lever table (the stage table is what CUDA always gives)")  # fmt: skip
    bench_train.add_argument("--steps", type=int, default=20, help="timed batches per stage (default: 20)")
    bench_train.add_argument("--warmup", type=int, default=5, help="untimed batches first (default: 5)")
    bench_train.add_argument("--out", default="results", help="results folder: writes OUT/bench/ (default: results)")
    anchor = targets.add_parser("anchor", help="ONNX Runtime latency as a multiple of torchvision's LR-ASPP")
    anchor.add_argument("--model", default="fastscnn,lraspp_mobilenetv3", help="comma-separated; NAME@320: at 320 px")
    anchor.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    anchor.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: 2)")
    anchor.add_argument("--repeats", type=int, default=20, help="timed calls per model (default: 20)")
    anchor.add_argument("--out", default="results", help="results folder: writes OUT/bench/ (default: results)")
    bench_infer = targets.add_parser("infer", help="CPU latency per backend: eager, compile, ONNX fp32 and int8")
    which = bench_infer.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a registered model name (untrained weights)")
    which.add_argument("--checkpoint", help="a checkpoint file (trained weights)")
    bench_infer.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    bench_infer.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    bench_infer.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    bench_infer.add_argument("--repeats", type=int, default=30, help="timed calls per backend (default: 30)")
    bench_infer.add_argument(
        "--backends",
        help="comma-separated subset of eager,compile,onnx_fp32,onnx_int8,"
        "onnx_fp32_fixed,onnx_int8_fixed (_fixed: exported for exactly this batch and size)",
    )
    bench_infer.add_argument("--keep-onnx", metavar="DIR", help="keep the exported ONNX files in DIR")
    bench_infer.add_argument("--accuracy", action="store_true",
                             help="with --checkpoint: each backend's mIoU on the validation split (int8's cost)")  # fmt: skip
    bench_infer.add_argument("--data", help=DATA_HELP + " (inputs and int8 calibration)")
    bench_infer.add_argument("--out", default="results", help="results folder: writes OUT/bench/ (default: results)")
    bench.set_defaults(run=_bench)

    report = commands.add_parser(
        "report",
        help="execute the notebook series with papermill and export the report "
        "(HTML, tables, figures) to RESULTS/PROFILE/",
    )
    report.add_argument("--profile", default="smoke", help="smoke (default), cpu, gpu-short or full")
    report.add_argument("--data", help=DATA_HELP)
    report.add_argument("--device", default="auto", help="where missing runs train: auto (default), cpu, cuda")
    report.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 02,03 (default: all)")
    report.add_argument("--out", default="results", help="results root: run cache in OUT/runs (default: results)")
    report.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder (default: checkpoints)")
    report.add_argument("--notebooks", help="folder of the notebooks (default: the repository's notebooks/)")
    report.add_argument("--train-missing", action=argparse.BooleanOptionalAction, help=TRAIN_MISSING_HELP)
    report.add_argument("--cached-only", dest="train_missing", action="store_false", help="--no-train-missing")
    report.set_defaults(run=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = args.run(args)
    except (DataError, ConfigError, ReportError, RunBusyError) as error:
        print(f"facelib {args.command}: error: {error}", file=sys.stderr)
        return 2
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
