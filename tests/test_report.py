"""The notebook series and its runner: notebooks in git carry no outputs and start with a literal parameters
cell; profiles are valid; the table builders; a failing notebook is named with its cell; and the whole series
executed in the smoke profile (on the first 200 real pairs when FACELIB_DATA is set, as in CI) writes every table,
figure and page."""

from __future__ import annotations

import ast
import json
import os
from dataclasses import replace
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from facelib.cli import main
from facelib.config import RUNTIME_FIELDS, TrainConfig, preset_config
from facelib.errors import ConfigError, ReportError
from facelib.labels import CLASS_NAMES
from facelib.losses import LOSS_PRESETS
from facelib.profiles import AUGMENTATION_ROWS, LOSS_ROWS, PROFILES, get_profile
from facelib.report_build import NOTEBOOKS, ReportRequest, default_notebooks_dir, run_report, select
from facelib.report_rows import TableRows
from facelib.runcache import Run
from facelib.tables import Noise, ablation_table, compare, findings, leader, overfitting, styled, widths_table

NOTEBOOK_DIR = default_notebooks_dir()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_git_has_no_outputs_and_a_literal_parameters_cell(name):
    book = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(book)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), f"{name} has outputs"
    parameters = code[0]
    assert "parameters" in parameters.metadata.get("tags", []), f"{name}: first code cell is not tagged"
    names = set()
    for statement in ast.parse(parameters.source).body:  # plain literals only: papermill injects after it
        assert isinstance(statement, ast.Assign), f"{name}: {ast.unparse(statement)} is not an assignment"
        ast.literal_eval(statement.value)
        names |= {target.id for target in statement.targets}
    assert names == {"profile", "data", "device", "results", "checkpoints", "train_missing", "notebook"}
    assert f'notebook = "{name}"' in parameters.source
    assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith(f"# {name[:2]} ")


def test_notebook_folder_holds_exactly_the_series():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_row_of_every_profile_is_a_valid_config(name):
    profile = get_profile(name)
    configs = [profile.config("augmentation", augment=a) for a in AUGMENTATION_ROWS]
    configs += [profile.config("loss", loss=loss) for loss in profile.losses]
    configs += [profile.config("comparison", model=m) for m in profile.models]
    assert all(isinstance(c, TrainConfig) for c in configs)
    assert len({c.to_dict()["augment"] for c in configs[: len(AUGMENTATION_ROWS)]}) == len(AUGMENTATION_ROWS)
    assert all(c.iterations // c.val_interval >= 4 for c in configs)  # four validation points to average
    assert profile.describe().startswith(f"**Profile `{name}`**")


def test_cpu_profile_is_sized_as_promised_and_reuses_the_cpu_preset():
    """Table 4 rows see 40k training samples with `facelib train cpu`'s recipe (so that command's run is the
    LR-ASPP row), Tables 1-2 rows 12k; Table 2's rows are the reference's losses or their coarse twins."""
    cpu = get_profile("cpu")
    table4 = cpu.config("comparison", model="lraspp_mobilenetv3")
    assert table4.iterations * table4.batch_size >= 40_000 and cpu.device == "cpu"
    preset = preset_config("cpu", model="lraspp_mobilenetv3")
    runtime = set(RUNTIME_FIELDS)
    assert {k: v for k, v in table4.to_dict().items() if k not in runtime} == {
        k: v for k, v in preset.to_dict().items() if k not in runtime
    }
    for table in ("augmentation", "loss"):
        config = cpu.config(table)
        assert config.iterations * config.batch_size >= 12_000 and config.iterations // config.val_interval >= 8
    assert [row.removesuffix("_coarse4") for row in cpu.losses] == list(LOSS_ROWS)
    assert all(LOSS_PRESETS[row].coarse_stride == (1 if row == "ce" else 4) for row in cpu.losses)
    assert "Table 2 losses: `ce`, `wce_lovasz_coarse4`" in cpu.describe()


def test_profiles_match_their_purpose():
    smoke, short, full = (get_profile(n) for n in ("smoke", "gpu-short", "full"))
    assert smoke.config("comparison").crop_size <= 128 and smoke.config("loss").iterations < 100
    assert short.config("comparison").crop_size == full.config("comparison").crop_size == 512
    reference = full.config("comparison")
    assert (reference.batch_size, reference.iterations, reference.val_interval) == (8, 24_000, 500)
    assert {full.config("augmentation").iterations, full.config("loss").iterations} == {40_000, 80_000}
    with pytest.raises(ConfigError, match="smoke, cpu, gpu-short, full"):
        get_profile("tiny")


def test_notebook_selection_by_number_or_name():
    assert select(None) == list(NOTEBOOKS)
    assert select("3,02") == ["02_augmentation_ablation", "03_loss_ablation"]
    assert select(["05_inference"]) == ["05_inference"]
    with pytest.raises(ConfigError, match="01_data_stats"):
        select("09")


def _fake_run(label: str, mf1: list[float]) -> Run:
    iterations = [10 * (i + 1) for i in range(len(mf1))]
    metrics = pd.DataFrame(
        {
            "iteration": iterations,
            "train_loss": 1.0,
            "mIoU": [v / 2 for v in mf1],
            "mF1": mf1,
            "mFscore_ref": mf1,
            "per_image_F": mf1,
        }
    )
    config = TrainConfig(iterations=iterations[-1], val_interval=10)
    return Run(label, config, {"key": label, "train_wall_s": 1.0}, metrics)


def test_ablation_table_averages_the_final_four_and_flags_falling_validation():
    rising = _fake_run("rising", [10, 20, 30, 40, 50, 60, 70, 80])
    falling = _fake_run("falling", [10, 80, 80, 80, 80, 40, 40, 40, 40])
    short = _fake_run("short", [1, 2, 3, 4, 5])
    table = ablation_table([rising, falling, short], "row")
    assert table.loc["rising", "mF1 (final 4)"] == pytest.approx(65)
    assert table.loc["rising", "mIoU (final 4)"] == pytest.approx(32.5)
    assert table.loc["rising", "overfitting"] == "no" and table.loc["rising", "trend mF1"] == pytest.approx(40)
    assert table.loc["falling", "overfitting"] == "yes" and table.loc["falling", "best at"] == 20
    assert table.loc["short", "overfitting"] == "n/a" and table.loc["short", "val_points"] == 5
    # against measured noise: a fall or rise no larger than the seed spread is not called either way
    noise = Noise("rising", {"mIoU": 1.0, "mF1": 45.0, "mFscore_ref": 1.0, "per_image_F": 1.0}, rising, rising)
    judged = ablation_table([rising, falling], "row", noise)
    assert list(judged["overfitting"]) == ["within noise", "within noise"]
    assert overfitting(-46.0, noise) == "yes" and overfitting(46.0, noise) == "no" and overfitting(None, noise) == "n/a"


def test_findings_are_stated_only_beyond_the_measured_noise():
    frame = pd.DataFrame({"mF1": [60.0, 59.5, 50.0]}, index=["a", "b", "c"])
    run = _fake_run("a", [1, 2, 3, 4])
    noise = Noise("a", {"mIoU": 1.0, "mF1": 1.0, "mFscore_ref": 1.0, "per_image_F": 1.0}, run, run)
    assert compare(frame, "a", "b", "mF1", noise) == "`a` vs `b`: +0.50 mF1, within noise (seed spread 1.00)."
    assert "larger than the seed spread (1.00): `a` is ahead" in compare(frame, "a", "c", "mF1", noise)
    assert "`b` is ahead" in compare(frame, "c", "b", "mF1", noise)
    assert leader(frame, "mF1", noise).startswith("No row leads: the top two (`a`, `b`) are 0.50 mF1 apart")
    assert leader(frame.drop("b"), "mF1", noise).startswith("`a` leads every other row by more than the seed spread")
    text = findings(frame, [("a", "b"), ("a", "missing")], noise)
    assert text.count("\n- ") == 1 and "within noise" in text  # unknown rows are skipped, the leader is stated
    assert "trained again with seed 1" in noise.note()


def test_styled_tables_show_units_separators_and_dashes():
    frame = pd.DataFrame(
        {"mIoU": [55.123, None], "params": [1234567, 2], "trend mF1": [0.5, -1.0], "role": ["a", None]},
        index=["x", "y"],
    )
    page = styled(frame).to_html()
    assert "mIoU (%)" in page and "trend mF1 (pts)" in page and "1,234,567" in page and "55.12" in page
    assert "NaN" not in page and "None" not in page and page.count("–") == 2


def test_bisenetv2_widths_table_counts_parameters():
    table = widths_table()
    assert list(table.index) == ["bisenetv2", "bisenetv2_xs", "bisenetv2_xs_slimaux", "bisenetv2_fast"]
    xs = table.loc["bisenetv2_xs"]
    assert (xs["detail"], xs["semantic"], xs["auxiliary"]) == ("32-64-96", "16-32-64-96", "16-32-64-128")
    assert xs["deployed"] == 1_791_683 and xs["total"] == 2_152_095
    assert table.loc["bisenetv2_xs_slimaux", "fits_cap"] and not xs["fits_cap"] and xs["fits_cap_deployed"]
    fast = table.loc["bisenetv2_fast"]
    assert (fast["detail"], fast["decode"], fast["total"]) == ("16-32-96", 128, 1_365_567) and fast["fits_cap"]


def _notebook(cells: list[str]):
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    book.cells[0].metadata["tags"] = ["parameters"]
    return book


def test_a_failing_notebook_is_named_with_its_cell_and_kept(tmp_path, synthetic_root):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    parameters = 'profile = "smoke"\ndata = None\ndevice = "auto"\nresults = "r"\ncheckpoints = "c"\n'
    nbformat.write(
        _notebook([parameters, "x = 1", "raise ValueError('boom in cell two')"]), folder / "01_data_stats.ipynb"
    )
    with pytest.raises(ReportError, match=r"01_data_stats failed in cell \d.*boom in cell two") as error:
        run_report(ReportRequest("smoke", synthetic_root, only="01", results=tmp_path / "results", notebooks=folder))
    failed = tmp_path / "results" / "smoke" / "notebooks" / "01_data_stats.failed.ipynb"
    assert str(failed) in str(error.value) and failed.exists()
    kept = nbformat.read(failed, as_version=4)
    assert any(o.get("ename") == "ValueError" for c in kept.cells if c.cell_type == "code" for o in c.outputs)
    assert not list(failed.parent.glob("*.partial.ipynb")) and not (failed.parent / "01_data_stats.ipynb").exists()
    paths = ["--notebooks", str(folder), "--data", str(synthetic_root), "--out", str(tmp_path / "results")]
    assert main(["report", "--profile", "smoke", "--only", "01", *paths]) == 2


def test_cli_names_the_valid_profiles(capsys):
    assert main(["report", "--profile", "huge"]) == 2
    assert "valid profiles: smoke, cpu, gpu-short, full" in capsys.readouterr().err


# --- the whole series, smoke profile ------------------------------------------------------------------

FIGURES = [
    "class_frequency.png",
    "palette.png",
    "samples.jpg",
    "audit_offsets.png",
    "augmentation_samples.jpg",
    "table1_curves.png",
    "table2_curves.png",
    "per_class_iou.png",
    "table4_curves.png",
    "confusion_best.png",
    "predictions_val.jpg",
    "predictions_test_masks.jpg",
    "predictions_test_overlays.jpg",
    "table6_curves.png",
]
HEADLINE = ["mIoU", "mF1", "mFscore_ref", "per_image_F"]


SMOKE_REAL_PAIRS, SMOKE_REAL_PHOTOS = 200, 8
"""How much of $FACELIB_DATA the smoke series runs on: real files through every notebook, in a fraction of the
time all 1000 pairs take (each smoke run validates on 5% of the pairs at 512 px, and notebook 01 reads them all)."""


@pytest.fixture(scope="module")
def smoke_data(synthetic_root, tmp_path_factory) -> str:
    """When $FACELIB_DATA is set (CI: the real data), its first pairs and test photos linked into a temporary
    folder of the same layout; else the small synthetic set."""
    real = os.environ.get("FACELIB_DATA")
    if not real:
        return str(synthetic_root)
    source, root = Path(real), tmp_path_factory.mktemp("real-subset") / f"{Path(real).resolve().name}-subset"
    for folder, pattern, count in (
        ("train/images", "*.jpg", SMOKE_REAL_PAIRS),
        ("train/masks", "*.png", SMOKE_REAL_PAIRS),
        ("test/images", "*.jpg", SMOKE_REAL_PHOTOS),
    ):
        (root / folder).mkdir(parents=True)
        for file in sorted((source / folder).glob(pattern))[:count]:
            (root / folder / file.name).symlink_to(file.resolve())
    return str(root)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, smoke_data) -> Path:
    """The whole series in the smoke profile, in a temporary results root."""
    base = tmp_path_factory.mktemp("report")
    return run_report(
        ReportRequest("smoke", smoke_data, "cpu", results=base / "results", checkpoints=base / "checkpoints")
    )


def _table(smoke: Path, name: str) -> pd.DataFrame:
    markdown = (smoke / "tables" / f"{name}.md").read_text()
    assert "Profile `smoke`" in markdown and "commit" in markdown
    return pd.read_csv(smoke / "tables" / f"{name}.csv", index_col=0)


def test_smoke_tables_have_their_rows_and_columns(smoke):
    profile = get_profile("smoke")
    table1, table2 = _table(smoke, "table1_augmentation"), _table(smoke, "table2_loss")
    assert list(table1.index) == list(AUGMENTATION_ROWS) and list(table2.index) == list(LOSS_ROWS)
    for table in (table1, table2):
        assert {f"{m} (final 4)" for m in HEADLINE} | {"iterations", "overfitting"} <= set(table.columns)
        assert (table["iterations"] == profile.config("loss").iterations).all()
        assert table[[f"{m} (final 4)" for m in HEADLINE]].notna().all().all()
    assert list(table2["decode:aux"]) == ["1:0.4", "1:0.4", "1:0.8", "1:0.4", "1:0.4"]
    table3 = _table(smoke, "table3_bisenetv2_widths")
    assert list(table3.index) == ["bisenetv2", "bisenetv2_xs", "bisenetv2_xs_slimaux", "bisenetv2_fast"]
    table4 = _table(smoke, "table4_models")
    assert list(table4.index) == list(profile.models)
    expected = {"params", "GFLOPs", "CPU ms", "iterations", *HEADLINE, "reference mIoU", "mIoU flip-TTA", "train s"}
    assert expected <= set(table4.columns)
    assert table4.loc["bisenetv2_xs", "reference mIoU"] == 71.61
    assert table4[[*HEADLINE, "mIoU flip-TTA"]].notna().all().all()  # checkpoints are here: TTA was evaluated
    per_class = _table(smoke, "table4_per_class")
    assert list(per_class.index) == list(CLASS_NAMES) and len(per_class.columns) == 2 * len(profile.models)
    assert list(_table(smoke, "tta").index) == ["none", "flip", "multiscale"]
    levers = _table(smoke, "table6_levers")
    labels = [label for label, _ in profile.lever_rows]
    main, native = profile.lever_noise
    assert list(levers.index) == [*labels[:2], main[1], *labels[2:]]  # the average's trained weights
    expected = {"Δ mIoU", "Δ mF1", "Δ per_image_F", "train mIoU", "corrected mIoU", "necklace IoU", "images/s"}
    assert expected <= set(levers.columns)
    assert levers.loc[list(main), "Δ mIoU"].sum() == pytest.approx(0, abs=0.02)  # either side of their mean
    # the second proxy's seed row belongs to it, not to the main proxy it also agrees with; its first row is a lever
    assert levers.loc[native[1], "against"] == native[0]
    assert set(levers.drop(index=native[1])["against"]) == {main[0]}
    written = (smoke / "tables" / "table6_levers.md").read_text()
    assert all(f"Spread of the proxy `{first}`" in written for first, _ in profile.lever_noise)
    for name in ("class_stats", "rgb_stats", "class_weights", "audit_summary", "audit_flagged"):
        assert (smoke / "tables" / f"{name}.csv").exists()
    assert len(_table(smoke, "class_stats")) == len(CLASS_NAMES)


def test_lever_rows_read_the_train_split_corrected_label_and_adjusted_scores_stored_beside_their_run(tmp_path):
    from facelib.levers import held_out_scores

    run = Run("lever", TrainConfig(), {"key": "m-lever"}, pd.DataFrame())
    assert held_out_scores(tmp_path, run) == {"train mIoU": None, "corrected mIoU": None, "adjusted mIoU": None}
    folder = tmp_path / "runs" / "m-lever"
    folder.mkdir(parents=True)
    (folder / "eval-train-tta_none.json").write_text(json.dumps({"mIoU": 71.2}))
    (folder / "eval-val-tta_none-corrected.json").write_text(json.dumps({"mIoU": 64.1}))
    (folder / "eval-val-tta_none.json").write_text(json.dumps({"mIoU": 62.0}))
    (folder / "eval-val-tta_none-adjusted.json").write_text(json.dumps({"mIoU": 62.9}))
    assert held_out_scores(tmp_path, run) == {"train mIoU": 71.2, "corrected mIoU": 64.1, "adjusted mIoU": 62.9}


def test_the_recorded_pseudo_label_lever_is_the_native_proxy_trained_on_labelled_test_photos_too(tmp_path):
    from facelib.levers import recorded_run

    rows = TableRows.open("cpu", results=Path(__file__).resolve().parents[1] / "results")
    native = rows.config("levers", **dict(rows.profile.lever_rows)["native-scale crops: 256 px of the 512 px photos"])
    label, key = rows.profile.lever_recorded[0]
    run = recorded_run(rows.cache.results, label, key)  # committed: the report reads it by key
    changed = {k for k, v in run.config.to_dict().items() if v != native.to_dict()[k]} - set(RUNTIME_FIELDS)
    assert changed == {"pseudo_labels"} and run.label == label and run.summary["finished"]
    with pytest.raises(ReportError, match=f"run {key} is not finished in the run cache"):
        recorded_run(tmp_path, label, key)


def test_a_lever_rows_teacher_is_named_under_the_results_root(tmp_path):
    rows = TableRows.open("cpu", results=tmp_path / "results")
    changes = next(changes for _, changes in rows.profile.lever_rows if "teacher" in changes)
    config = rows.config("levers", **changes)
    assert config.teacher == str(tmp_path / "results" / "models" / "teacher-384px.pt")
    assert changes["teacher"] == "models/teacher-384px.pt", "the profile's own row is left as it is"


def test_lever_findings_judge_each_lever_against_the_spread_of_its_own_proxy():
    from facelib.levers import SCORES, Spread, lever_findings

    table = pd.DataFrame(
        {
            "Δ mIoU": [-0.2, 0.2, 1.5, -0.1, -0.5, 0.5, 0.9, 0.3],
            "Δ mF1": [-0.3, 0.3, 0.2, -2.0, -0.5, 0.5, 0.9, 0.1],
            "against": ["a", "a", "a", "a", "a", "n", "n", "m"],  # a second proxy's own row is a lever on the first
        },
        index=["a", "b", "wide", "erase", "n", "n1", "native decay", "lone"],
    )
    spreads = [
        Spread(("a", "b"), {"mIoU": 0.4, "mF1": 0.6, "per_image_F": 0.2}),
        Spread(("n", "n1"), dict.fromkeys(SCORES, 1.0)),
    ]
    lines = lever_findings(table, spreads).splitlines()
    assert lines == [
        "- **wide**: +1.50 mIoU, +0.20 mF1 against the seeds' mean of `a`: beyond the spread in mIoU.",
        "- **erase**: -0.10 mIoU, -2.00 mF1 against the seeds' mean of `a`: beyond the spread in mF1.",
        "- **n**: -0.50 mIoU, -0.50 mF1 against the seeds' mean of `a`: beyond the spread in mIoU.",
        "- **native decay**: +0.90 mIoU, +0.90 mF1 against the seeds' mean of `n`: within noise.",
        "- **lone**: no spread is measured for its proxy (a seed row is missing): not judged.",
    ]
    assert "not judged" in lever_findings(table.drop(index=["lone"]), spreads[1:]).splitlines()[0]


def test_smoke_writes_every_figure(smoke):
    written = {p.name for p in (smoke / "figures").iterdir()}
    missing = set(FIGURES) - written
    assert not missing, f"figures not written: {missing}"
    assert all((smoke / "figures" / name).stat().st_size > 2000 for name in FIGURES)


def test_smoke_pages_stand_alone_and_the_index_links_them(smoke):
    index = (smoke / "html" / "index.html").read_text()
    for name in NOTEBOOKS:
        page = (smoke / "html" / f"{name}.html").read_text()
        assert page.count("data:image/") >= 1, f"{name}.html embeds no image"
        assert '<img src="' not in page.replace('<img src="data:', ""), f"{name}.html links an image file"
        assert f'href="{name}.html"' in index and 'href="index.html"' in page
        assert "jp-CodeMirrorEditor" not in page.split("</style>")[-1] and "Report(" not in page, (
            f"{name}.html shows code"
        )
        assert page.count("<title>facelib: 0") == 1
        executed = nbformat.read(smoke / "notebooks" / f"{name}.ipynb", as_version=4)
        tags = [c.metadata.get("tags", []) for c in executed.cells]
        assert ["injected-parameters"] in tags and all(
            c.execution_count for c in executed.cells if c.cell_type == "code"
        )
    readme = (smoke / "README.md").read_text()
    assert readme.count("Profile `smoke`") >= 1 + len(list((smoke / "tables").glob("*.md")))
    assert "Table 4: models" in readme and "trained on CPU" in readme


def test_smoke_report_reuses_the_run_cache(smoke, smoke_data):
    before = _table(smoke, "table1_augmentation")
    request = ReportRequest("smoke", smoke_data, "cpu", "02", smoke.parent, smoke.parent.parent / "checkpoints")
    run_report(replace(request, train_missing=False))
    pd.testing.assert_frame_equal(before, _table(smoke, "table1_augmentation"))


def test_records_show_paths_relative_and_leave_markup_alone():
    from facelib.outputs import REPOSITORY, shown_path, shown_paths

    inside, home = REPOSITORY / "results" / "runs" / "k", Path.home() / ".cache" / "facelib" / "synthetic"
    assert shown_path(inside) == "results/runs/k" and shown_path("data/x") == "data/x"
    assert shown_path(home) == "~/.cache/facelib/synthetic"
    text = f'<td>{inside}</td></style> and/or "{home}" https://example.org/a/b'
    assert (
        shown_paths(text)
        == '<td>results/runs/k</td></style> and/or "~/.cache/facelib/synthetic" https://example.org/a/b'
    )


def test_headline_leads_with_the_shipped_model_then_table_4s_choice_and_the_reference(tmp_path):
    from facelib.report_build import headline

    out = tmp_path / "cpu"
    columns = {
        "role": ["chosen", "reference"],
        "fits_cap": [True, False],
        "mIoU": [58.0, 62.0],
        "mF1": [70.7, 74.2],
        "mFscore_ref": [70.7, 74.2],
        "per_image_F": [76.1, 78.8],
        "params": [1456617, 2152095],
        "CPU ms": [26.1, 82.9],
        "x anchor": [0.46, 2.15],
        "iterations": [5000, 5000],
        "batch": [8, 8],
        "crop": [256, 256],
        "samples": [40000, 40000],
    }
    (out / "tables").mkdir(parents=True)
    pd.DataFrame(columns, index=pd.Index(["fastscnn", "bisenetv2_xs"], name="model")).to_csv(
        out / "tables" / "table4_models.csv"
    )
    page = headline(out, "celebamask-dev")
    assert "fastscnn: Table 4&#x27;s choice under the cap" in page and "the reference report" in page
    assert "62.00" not in page and "shipped" not in page.split("<p>")[0]  # over the cap; nothing shipped yet
    longer = {**{k: v[:1] for k, v in columns.items()}, "role": ["candidate"], "mIoU": [64.0], "params": [1809775]}
    pd.DataFrame(longer, index=pd.Index(["bisenetv2_xs_slimaux, 192,000 samples"], name="run")).to_csv(
        out / "tables" / "table4_longer_runs.csv"
    )
    # a shipped model made in two stages (a fine-tune of a longer run) on this profile's data and split
    for key, parent, iterations in (("m-parent", None, 24000), ("m-tuned", "m-parent", 1200)):
        folder = tmp_path / "runs" / key
        folder.mkdir(parents=True)
        config = {"iterations": iterations, "batch_size": 8, "split_seed": 0, "val_fraction": 0.2}
        summary = {"finished": True, "config": config, "data": {"name": "celebamask-dev"}}
        (folder / "summary.json").write_text(json.dumps(summary))
        (folder / "config.json").write_text(json.dumps({"key": key, "init_run_key": parent}))
    scores = {"mIoU": 65.27, "mF1": 76.85, "mFscore_ref": 76.85, "per_image_F": 81.51}
    (tmp_path / "runs" / "m-tuned" / "eval-val-tta_none-fp16.json").write_text(json.dumps(scores))
    (tmp_path / "models").mkdir()
    meta = {"format": "facelib-checkpoint", "version": 1, "run_key": "m-tuned", "model": "bisenetv2_xs_slimaux"}
    meta["weights_dtype"] = "float16"  # as `facelib ship` writes it
    torch.save({**meta, "input_size": 384}, tmp_path / "models" / "facelib-best.pt")
    page = headline(out, "celebamask-dev")
    rows = page.split("<tr>")[2:]
    assert rows[0].startswith("<td>facelib-best.pt (facelib predict&#x27;s default): bisenetv2_xs_slimaux at 384 px")
    assert "65.27" in rows[0] and "201,600" in rows[0] and "1,809,775" in rows[0] and "2 training stage" in rows[0]
    assert "fastscnn" in rows[1] and "the reference" in rows[2] and "64.00" not in page  # longer runs: page 04
    assert "shipped" not in headline(out, "synthetic").split("<p>")[0]  # another report's data: not its model
