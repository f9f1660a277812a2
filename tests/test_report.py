"""The HTML report of a workspace: sections, figures, escaping, provenance, failures, the CLI."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import LayerError, StoreError
from trusttrace.info import ESTIMATOR_CAVEAT
from trusttrace.report import write_report
from trusttrace.report.figures import time_axis
from trusttrace.provenance import trusttrace_version
from trusttrace.report.sections import PROBE_CONFIGURATION, baseline_values, curve_layers, dataset_version, pick_configuration
from trusttrace.store import ActivationStore, write_table

STEPS = [0, 10, 100, 1000, 10000]
LAYERS = [0, 1, 2, 3]
EVIL = "<script>alert('x')</script> $5"
DATASETS = ["truth", f"toxic{EVIL}"]
MODEL = "toy/model-7m"
SECTIONS = ["Overview", "Probe accuracy", "Mutual information", "Steering", "Trust evaluations", "Dataset cards", "Provenance and failures"]


def checkpoint(step: int) -> str:
    return f"step{step}"


def probe_rows() -> pd.DataFrame:
    rows = []
    for d, dataset in enumerate(DATASETS):
        for i, step in enumerate(STEPS):
            for layer in LAYERS:
                accuracy = 0.5 + 0.08 * i + 0.03 * layer - 0.05 * d
                rows.append({
                    "model": MODEL, "revision": checkpoint(step), "checkpoint": checkpoint(step), "step": step,
                    "tokens": step * 2048, "dataset": dataset, "dataset_hash": f"h{d}", "layer": layer,
                    "method": "logreg", "split": "grouped", "seed": 0, "folds": 5, "accuracy": accuracy,
                    "acc_low": accuracy - 0.04, "acc_high": min(1.0, accuracy + 0.04), "auroc": accuracy + 0.02,
                    "n_train": 80, "n_test": 20,
                })
    frame = pd.DataFrame(rows)
    # One unit failed: the last layer of one checkpoint has no result.
    return frame[~((frame["step"] == 100) & (frame["layer"] == 3) & (frame["dataset"] == "truth"))]


def baseline_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"dataset": dataset, "dataset_hash": f"h{d}", "baseline": name, "split": "grouped", "seed": 0, "folds": 5,
         "accuracy": value, "acc_low": value - 0.05, "acc_high": value + 0.05}
        for d, dataset in enumerate(DATASETS) for name, value in (("majority", 0.52), ("bag_of_words", 0.61))
    ])


def mi_rows() -> pd.DataFrame:
    rows = []
    for dataset in DATASETS:
        for i, step in enumerate(STEPS):
            for layer in LAYERS:
                # Layers 0-2 rise then fall (peak at step 100); layer 3 keeps rising (no interior maximum).
                i_xt = (1.0 + i * 0.5) if layer == 3 else (1.0 + layer * 0.2 + 0.6 * (2 - abs(i - 2)))
                rows.append({
                    "model": MODEL, "revision": checkpoint(step), "checkpoint": checkpoint(step), "step": step,
                    "tokens": step * 2048, "dataset": dataset, "layer": layer, "estimator": "nhsic",
                    "x_layer": 0, "split": "paper", "seed": 0, "i_xt": i_xt, "i_ty": 0.1 + 0.1 * i + 0.02 * layer, "n": 80,
                    # The second dataset's rows are as written before the shuffled-label floor existed.
                    "i_ty_shuffled": 0.01 * (i + layer) if dataset == DATASETS[0] else np.nan,
                })
    return pd.DataFrame(rows)


def steering_rows() -> pd.DataFrame:
    rows = [{"source_checkpoint": "step1000", "target_model": "toy/model-7m-sft", "task": "truth", "metric": "accuracy",
             "layer": None, "alpha": 0.0, "value": 0.60, "low": 0.55, "high": 0.65, "kl": 0.0, "perplexity": 4.0, "best": False}]
    for layer in (1, 2):
        for alpha in (-2.0, -1.0, 0.5, 1.0, 2.0):
            rows.append({
                "source_checkpoint": "step1000", "target_model": "toy/model-7m-sft", "task": "truth", "metric": "accuracy",
                "layer": layer, "alpha": alpha, "value": 0.6 + 0.03 * alpha * layer, "low": 0.55 + 0.03 * alpha * layer,
                "high": 0.65 + 0.03 * alpha * layer, "kl": 0.02 * alpha**2 * layer, "perplexity": 4.0 + 0.3 * alpha**2,
                "best": layer == 2 and alpha == 1.0, "p_holm": 0.004 if layer == 2 and alpha == 1.0 else 0.5,
            })
    return pd.DataFrame(rows)


def write_manifest(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE units (unit TEXT, checkpoint TEXT, dataset TEXT, stage TEXT, status TEXT, error TEXT, "
            "seconds REAL, artefact TEXT, checksum TEXT, finished TEXT);"
            "CREATE TABLE checkpoints (name TEXT, model TEXT, revision TEXT, step INTEGER, tokens INTEGER, "
            "commit_sha TEXT, weights_sha256 TEXT, duplicate_of TEXT, status TEXT, error TEXT);"
        )
        for i, step in enumerate(STEPS):
            name = checkpoint(step)
            weights = "a" * 64 if step in (0, 10) else f"{i:x}" * 64
            db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, MODEL, name, step, step * 2048, f"{i}abcdef0123456789", weights, "step0" if step == 10 else None, "loaded", None),
            )
            for dataset in DATASETS:
                for stage in ("extract", "probes", "mi"):
                    failed = step == 100 and dataset == "truth" and stage == "probes"
                    db.execute(
                        "INSERT INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (f"{name}/{dataset}/{stage}", name, dataset, stage, "failed" if failed else "done",
                         "ProbeError: layer 3 has NaN states <b>bad</b>" if failed else None, 1.5, None, None, "2025-01-01T00:00:00+00:00"),
                    )


def write_cards(root: Path) -> None:
    card = {
        "name": DATASETS[1], "dimension": "toxicity", "label_1": "toxic", "label_0": "benign",
        "source": "made up for the test", "licence": "CC0", "quirks": [f"a quirk with {EVIL}", "another quirk"],
        "grouping": None, "citation": "Nobody 2025", "url": "javascript:alert(1)", "cleanups": [],
    }
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "datasets" / "h1.json").write_text(json.dumps({"name": DATASETS[1], "source": "toxic.csv", "card": card}))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ws")
    write_table(root / "probes.parquet", probe_rows())
    write_table(root / "probe_baselines.parquet", baseline_rows())
    write_table(root / "mi.parquet", mi_rows())
    write_table(root / "steering.parquet", steering_rows())
    write_manifest(root / "manifest.sqlite")
    write_cards(root)
    return root


@pytest.fixture(scope="module")
def report(workspace) -> Path:
    return write_report(workspace)


@pytest.fixture(scope="module")
def page(report) -> str:
    return report.read_text()


def test_report_is_written_beside_its_figures(report, workspace):
    assert report == workspace / "report" / "report.html"
    pngs = sorted(p.stem for p in report.parent.glob("*.png"))
    svgs = sorted(p.stem for p in report.parent.glob("*.svg"))
    # Per dataset: heatmap, curves, MI curves, information plane; plus one steering figure.
    assert len(pngs) == 9 and pngs == svgs
    assert not list(report.parent.glob(".*tmp"))
    assert plt.get_fignums() == []  # figures never enter pyplot's registry


def test_every_section_is_present(page):
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    overview = page.split("<h2>Overview</h2>")[1].split("</section>")[0]
    assert f"<dt>Models</dt><dd>{MODEL}</dd>" in overview
    assert f"<dt>Checkpoints</dt><dd>{MODEL}: 5 (step0, step10, step100, step1000, step10000)</dd>" in overview
    assert "<dt>Tables</dt><dd>probes.parquet, probe_baselines.parquet, mi.parquet, steering.parquet, manifest.sqlite</dd>" in overview
    assert f"<dt>trusttrace</dt><dd>{trusttrace_version()}</dd>" in overview


def test_images_are_embedded_pngs(page, report):
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 9
    embedded = {base64.b64decode(data) for data in images}
    assert embedded == {p.read_bytes() for p in report.parent.glob("*.png")}
    assert all(data.startswith(b"\x89PNG") for data in embedded)
    assert "http://" not in page.split("<body>")[1].split("Dataset cards")[0]  # nothing fetched from elsewhere


def test_figure_files_name_their_title_and_the_version_that_drew_them(report):
    from PIL import Image

    heatmap = next(report.parent.glob("probe-heatmap-*.png"))
    info = Image.open(heatmap).info
    assert info["Software"] == f"trusttrace {trusttrace_version()}" and info["Title"].startswith("Probe accuracy by layer")
    svg = heatmap.with_suffix(".svg").read_text()
    assert f"trusttrace {trusttrace_version()}" in svg and "Probe accuracy by layer" in svg


def test_estimator_and_caveat_are_named(page):
    assert "estimator nhsic" in page and "Estimator: nhsic" in page
    assert html.escape(ESTIMATOR_CAVEAT) in page
    # Layer 3's I(X;T) keeps rising: its peak is at the last checkpoint and is flagged.
    assert page.count("no: highest at the first or last checkpoint") == 2 and page.count("yes: falls by 1.2") == 6


def test_the_shuffled_label_floor_is_drawn_where_recorded_and_its_absence_explained(page):
    assert page.count("Dashed: the highest I(T;Y) any shown layer reads with the labels shuffled") == 1
    assert page.count("No shuffled-label floor: these rows were estimated before trusttrace 0.9.0 recorded it") == 1


def test_the_shuffled_floor_is_the_highest_layer_at_each_checkpoint():
    from matplotlib.figure import Figure

    from trusttrace.report.figures import _shuffled_floor

    frame = pd.DataFrame({"x": [1, 1, 2, 2, 3], "layer": [0, 1, 0, 1, 0], "i_ty_shuffled": [0.1, 0.3, 0.2, np.nan, np.nan]})
    ax = Figure().add_subplot()
    handles = _shuffled_floor(ax, frame)
    assert [h.get_label() for h in handles] == ["I(T;Y), labels shuffled (highest layer)"]
    line = ax.get_lines()[0]
    assert line.get_xdata().tolist() == [1, 2] and line.get_ydata().tolist() == [0.3, 0.2]
    assert _shuffled_floor(Figure().add_subplot(), frame.drop(columns="i_ty_shuffled")) == []


def test_text_is_escaped(page):
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page


def test_provenance_flags_duplicates_and_failures(page):
    provenance = page.split('id="provenance"')[1]
    assert "duplicate of step0" in provenance
    assert "1 with weights identical" in provenance
    assert "ProbeError: layer 3 has NaN states" in provenance
    assert "step100/truth/probes" in provenance
    assert "0abcdef01234" in provenance and "0abcdef012345" not in provenance  # commits cut to 12 characters


def test_two_steering_settings_are_two_grids_not_one(tmp_path):
    """Rows the steering table keeps apart (here two scalings) must not be drawn as one grid."""
    rows = steering_rows()
    write_table(tmp_path / "steering.parquet", pd.concat([rows.assign(scaling="std"), rows.assign(scaling="unit")]))
    report = write_report(tmp_path)
    assert len(list(report.parent.glob("*.png"))) == 2
    steering = report.read_text().split('id="steering"')[1]
    assert "scaling std" in steering and "scaling unit" in steering


def test_steering_marks_the_best_setting(page):
    steering = page.split('id="steering"')[1].split('id="datasets"')[0]
    assert "Best setting (star): layer 2, α = 1" in steering
    assert "improves on the unsteered model beyond chance" in steering and "Holm-corrected p = 0.004" in steering
    assert "the highest of 10 settings, so it overstates" in steering
    assert "toy/model-7m-sft" in steering


def test_dataset_cards_are_shown(page):
    cards = page.split('id="datasets"')[1].split('id="provenance"')[0]
    assert "<dt>Label 1</dt><dd>toxic</dd>" in cards and "<dt>Label 0</dt><dd>benign</dd>" in cards
    assert "<dt>Licence</dt><dd>CC0</dd>" in cards and "<li>another quirk</li>" in cards
    assert "No card for truth" in cards


def test_two_activation_sets_of_one_checkpoint_are_drawn_once(tmp_path):
    """A checkpoint extracted again (another `layers` list) has two sets' rows of one configuration."""
    ActivationStore(tmp_path)
    mi, probes = mi_rows().assign(activation_key="a"), probe_rows().assign(activation_key="a")
    write_table(tmp_path / "mi.parquet", pd.concat([mi, mi.assign(activation_key="b")]))
    write_table(tmp_path / "probes.parquet", pd.concat([probes, probes.assign(activation_key="b")]))
    page = write_report(tmp_path).read_text()
    write_table(tmp_path / "mi.parquet", mi)
    write_table(tmp_path / "probes.parquet", probes)
    assert page.count("<figure") == write_report(tmp_path).read_text().count("<figure") > 0


def test_missing_inputs_are_named_with_the_command_that_makes_them(tmp_path):
    store = ActivationStore(tmp_path)
    card = DatasetCard(name="mini", dimension="truthfulness", label_1="true", label_0="false", source="test", licence="CC0")
    data = TrustDataset(name="mini", statements=["a", "b", "c", "d"], labels=[0, 1, 0, 1], groups=None, card=card, source="mini.csv")
    for step, weights in ((1, "f" * 64), (2, "f" * 64), (3, "e" * 64)):
        provenance = {
            "model": "toy", "revision": f"r{step}", "commit": "c" * 40, "weights_sha256": weights, "checkpoint": f"r{step}",
            "step": step, "tokens": None, "dataset": "mini", "dataset_hash": data.content_hash, "n": 4, "position": "last",
            "layers": [0, 1], "dtype": "float32", "trusttrace_version": "0.1.0",
        }
        store.save(torch.zeros(2, 4, 3), data, provenance)
    page = write_report(tmp_path, out_dir=tmp_path / "out", title="Only activations").read_text()
    assert "<h1>Only activations</h1>" in page
    assert "No probe results (probes.parquet is absent) — run `trusttrace probe WORKSPACE`" in page
    assert "No mutual-information estimates (mi.parquet is absent) — run `trusttrace mi WORKSPACE`" in page
    assert "No steering results" in page
    assert "No manifest" in page
    assert "from the activation sets&#x27; provenance" in page
    assert "duplicate of r1" in page and "duplicate of r2" not in page
    assert not list((tmp_path / "out").glob("*.png"))


def test_report_reads_the_tables_the_analysis_writes(tmp_path):
    """End to end with the real producers: activation sets -> probes + MI tables -> report."""
    from trusttrace.analysis import run_mi, run_probes

    store = ActivationStore(tmp_path)
    generator = torch.Generator().manual_seed(0)
    labels = np.array([0, 1] * 20)
    card = DatasetCard(name="pairs", dimension="truthfulness", label_1="true", label_0="false", source="test", licence="CC0")
    data = TrustDataset(name="pairs", statements=[f"statement {i} {'yes' if y else 'no'}" for i, y in enumerate(labels)],
                        labels=labels, groups=np.arange(40) // 2, card=card, source="pairs.csv")
    for step in (1, 10, 100):
        signal = torch.as_tensor(labels, dtype=torch.float32)[None, :, None] * torch.tensor([0.0, 0.5, 2.0])[:, None, None] * np.log10(step * 10)
        acts = torch.randn(3, 40, 4, generator=generator) + signal
        provenance = {
            "model": "toy", "revision": f"step{step}", "commit": None, "weights_sha256": f"{step:064d}", "checkpoint": f"step{step}",
            "step": step, "tokens": step * 100, "dataset": "pairs", "dataset_hash": data.content_hash, "n": 40, "position": "last",
            "layers": [0, 1, 2], "dtype": "float32", "trusttrace_version": "0.1.0",
        }
        store.save(acts, data, provenance)
    assert run_probes(store, folds=2, progress=False)[1] == []
    assert run_mi(store, progress=False)[1] == []
    report = write_report(tmp_path)
    page = report.read_text()
    assert "No probe results" not in page and "No mutual-information" not in page and "No baselines" not in page
    assert "majority baseline" in page and "bag of words baseline" in page
    assert len(list(report.parent.glob("*.png"))) == 4
    assert "pairs · toy · estimator nhsic" in page
    assert run_mi(store, estimator="gaussian", progress=False)[1] == []
    page = write_report(tmp_path).read_text()
    assert "Layer(s) 0 left out: I(X;T) is infinite there (T is X itself)" in page and ">inf<" not in page


def test_empty_workspace_is_refused(tmp_path):
    with pytest.raises(StoreError, match="nothing to report in .*: run `trusttrace run`"):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()
    with pytest.raises(StoreError, match="no such workspace folder"):
        write_report(tmp_path / "absent")


def test_unknown_layers_are_refused(workspace, tmp_path):
    with pytest.raises(LayerError, match="99"):
        write_report(workspace, out_dir=tmp_path, layers=[1, 99])


def test_unknown_layers_are_refused_naming_the_gaps_between_those_stored(tmp_path):
    ActivationStore(tmp_path)
    write_table(tmp_path / "probes.parquet", probe_rows().query("layer != 1"))
    with pytest.raises(LayerError, match=r"layers \[1\] are not in .* \(layers there: 0, 2"):
        write_report(tmp_path, out_dir=tmp_path / "report", layers=[1])


def test_chosen_layers_are_drawn(workspace, tmp_path, monkeypatch):
    from trusttrace.report import figures

    drawn = {"accuracy": [], "mi": []}
    for name, key in (("accuracy_curves", "accuracy"), ("mi_curves", "mi")):
        original = getattr(figures, name)

        def spy(data, *args, _original=original, _key=key, **kwargs):
            drawn[_key].append(sorted(set(data["layer"])))
            return _original(data, *args, **kwargs)

        monkeypatch.setattr(figures, name, spy)
    page = write_report(workspace, out_dir=tmp_path, layers=[1, 2]).read_text()
    assert "for layers 1, 2;" in page
    assert drawn["accuracy"] and all(layers == [1, 2] for layers in drawn["accuracy"])
    assert drawn["mi"] and all(layers == [1, 2] for layers in drawn["mi"])


def test_rewriting_removes_the_earlier_reports_stale_figures_only(workspace, tmp_path):
    first = write_report(workspace, out_dir=tmp_path).parent
    listed = json.loads((first / "figures.json").read_text())
    assert sorted(p.name for p in first.glob("*.png")) == sorted(n for n in listed if n.endswith(".png"))
    (first / "gone-dataset-heatmap.png").write_bytes(b"stale")
    (first / "figures.json").write_text(json.dumps(listed + ["gone-dataset-heatmap.png"]))
    (first / "my-own-plot.png").write_bytes(b"mine")
    write_report(workspace, out_dir=tmp_path)
    assert not (first / "gone-dataset-heatmap.png").exists()
    assert (first / "my-own-plot.png").read_bytes() == b"mine"
    assert all((first / name).exists() for name in listed)


def test_a_killed_reports_temporary_files_are_removed_and_a_users_kept(workspace, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    leftovers = [".report.html.k1l2e3.tmp", ".probe-heatmap-x.png.a1b2c3.tmp", ".figures.json.zz_9.tmp"]
    for name in [*leftovers, ".my-notes.txt.q1.tmp", "mine.tmp"]:
        (folder / name).write_bytes(b"partial")
    write_report(workspace, out_dir=folder)
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == [".my-notes.txt.q1.tmp", "mine.tmp"]


def test_reading_a_settled_manifest_leaves_no_sqlite_side_files(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write_table(root / "probes.parquet", probe_rows())
    write_manifest(root / "manifest.sqlite")
    with sqlite3.connect(root / "manifest.sqlite") as db:  # the sweep's manifest runs in WAL mode
        db.execute("PRAGMA journal_mode=WAL")
    db.close()
    assert not (root / "manifest.sqlite-wal").exists()
    write_report(root)
    assert sorted(p.name for p in root.glob("manifest.sqlite*")) == ["manifest.sqlite"]


def test_default_curve_layers_are_spread_plus_the_best():
    assert curve_layers(list(range(32)), 17, None) == [0, 10, 17, 21, 31]
    assert curve_layers([0, 1, 2], 1, [2, 5]) == [2]


def test_one_configuration_is_plotted_and_the_rest_named():
    frame = pd.DataFrame({"method": ["mass_mean", "logreg", "logreg"], "seed": [0, 1, 0], "accuracy": [0.1, 0.2, 0.3]})
    kept, chosen, others = pick_configuration(frame, (("method", "logreg"), ("seed", None), ("split", None)))
    assert chosen == {"method": "logreg", "seed": 0}
    assert kept["accuracy"].tolist() == [0.3]
    assert others == "method mass_mean; seed 1"


def test_probe_figures_keep_one_folds_and_C_setting_and_its_own_baselines():
    """Rows of another folds or C setting are named, not averaged into the figures."""
    frame = pd.DataFrame({
        "method": "logreg", "split": "grouped", "seed": 0, "layer": 0,
        "folds": [5, 1, 5], "test_size": 0.2, "C": [1.0, 1.0, 0.1], "accuracy": [0.7, 0.9, 0.8],
    })
    kept, chosen, others = pick_configuration(frame, PROBE_CONFIGURATION)
    assert kept["accuracy"].tolist() == [0.7]
    assert others == "folds 1; C 0.1"
    versions = pd.concat([frame.assign(dataset_hash="new"), frame.iloc[:1].assign(dataset_hash="old", accuracy=0.1)])
    kept, _, others = pick_configuration(versions, (dataset_version(versions, {}), *PROBE_CONFIGURATION))
    assert kept["accuracy"].tolist() == [0.7] and others.startswith("other versions of the dataset file, dataset_hash old (shown: new)")
    times = {"old": "2026-11-28T10:00:00Z", "new": "2026-11-27T10:00:00Z"}  # the file was changed back, and rerun
    kept, _, others = pick_configuration(versions, (dataset_version(versions, times), *PROBE_CONFIGURATION))
    assert kept["accuracy"].tolist() == [0.1] and others.startswith("other versions of the dataset file, dataset_hash new (shown: old)")
    baselines = pd.DataFrame({
        "dataset": "d", "dataset_hash": ["h", "h", "old"], "baseline": "majority", "split": "grouped", "seed": 0,
        "folds": [5, 1, 5], "test_size": 0.2, "accuracy": [0.5, 0.6, 0.55],
    })
    assert baseline_values(baselines, "d", "m", chosen, {"h"}) == {"majority": 0.5}


def test_a_dataset_version_was_last_used_when_its_last_unit_set_or_row_was_made(tmp_path):
    from trusttrace.report.inputs import Workspace

    empty = pd.DataFrame()
    units = pd.DataFrame({
        "settings": ['{"dataset_hash": "a"}', '{"dataset_hash": "b"}', '{"dataset_hash": "a"}', "not json", None],
        "finished": ["2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", None],
    })
    evaluations = pd.DataFrame({"dataset_hash": ["c"], "created": ["2026-01-05T00:00:00Z"]})
    ws = Workspace(tmp_path, empty, empty, empty, empty, evaluations, units, empty,
                   provenance=[{"dataset_hash": "a", "created": "2026-01-04T00:00:00Z"}])
    assert ws.dataset_times == {"a": "2026-01-04T00:00:00Z", "b": "2026-01-03T00:00:00Z", "c": "2026-01-05T00:00:00Z"}


def test_time_axis_is_log_when_steps_span_orders_of_magnitude():
    wide = pd.DataFrame({"checkpoint": ["a", "b", "c"], "step": [0, 10, 10000]})
    assert time_axis(wide)[0].scale == "symlog"
    assert time_axis(wide.assign(step=[1, 10, 1000]))[0].scale == "log"
    assert time_axis(wide.assign(step=[1000, 2000, 3000]))[0].scale == "linear"
    axis, frame = time_axis(pd.DataFrame({"checkpoint": ["late", "early"], "step": [None, None], "tokens": [None, None]}))
    assert axis.column == "order" and frame["x"].notna().all()


def run_cli(monkeypatch, *args: str) -> int:
    """Run `trusttrace ARGS` in-process; returns the exit code."""
    from trusttrace.cli import main

    monkeypatch.setattr(sys, "argv", ["trusttrace", *args])
    try:
        main()
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return 0


def test_cli_prints_the_path_and_refuses_an_empty_workspace(workspace, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    assert run_cli(monkeypatch, "report", str(workspace), "--out", str(out), "--layers", "0,3", "--title", "T") == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert "<h1>T</h1>" in (out / "report.html").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(monkeypatch, "report", str(empty)) == 2
    assert "nothing to report in" in capsys.readouterr().err
    assert run_cli(monkeypatch, "report", str(workspace), "--layers", "a,b") == 2
    assert "--layers 'a,b'" in capsys.readouterr().err


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium), so the page is not rendered")
def test_page_renders_in_a_browser(report, tmp_path):
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1280,2000",
         report.resolve().as_uri()],
        check=True, capture_output=True, timeout=60,
    )
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.std() > 0.05
    assert (pixels < 0.5).mean() > 0.01  # text and figures, not a white page


def test_figure_names_stay_short_and_distinct_for_long_model_paths(tmp_path):
    from matplotlib.figure import Figure

    from trusttrace.report.sections import MAX_FIGURE_NAME, FigureWriter

    writer = FigureWriter(tmp_path)
    long_path = "/very/long/" + "checkpoints/" * 30
    first = writer.save(Figure(), "steering", long_path + "step_0", "final")
    second = writer.save(Figure(), "steering", long_path + "step_1", "final")
    names = sorted(path.name for path in tmp_path.iterdir())
    assert len(names) == 4 and all(len(name) <= MAX_FIGURE_NAME + 4 for name in names)
    assert first != second


def test_evaluations_show_one_dataset_version_and_name_the_rest(tmp_path):
    from trusttrace.store import write_table

    ActivationStore(tmp_path)
    rows = [
        {"task": "stereoset", "metric": "accuracy", "value": value, "low": 0.5, "high": 0.8, "n": 20, "dataset": "stereoset",
         "dataset_hash": digest, "protocol": "default", "seed": 0, "target_model": "final", "target_model_id": "/m/final"}
        for value, digest in ((0.6, "old"), (0.7, "new"), (0.71, "new"))
    ]
    write_table(tmp_path / "evaluate.parquet", pd.DataFrame(rows).assign(metric=["accuracy", "accuracy", "predicted_1_rate"]))
    page = write_report(tmp_path).read_text()
    evaluations = page.split("<h2>Trust evaluations</h2>")[1].split("<h2>")[0]
    assert "target model final (/m/final)" in evaluations
    assert ">0.7<" in evaluations and ">0.6<" not in evaluations
    assert "also holds stereoset: other versions of the dataset file, dataset_hash old (shown: new)" in evaluations
    dated = pd.DataFrame(rows).assign(created=["2026-11-28T10:00:00Z", "2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z"])
    write_table(tmp_path / "evaluate.parquet", dated)  # the old version evaluated again last: the file as it is now
    evaluations = write_report(tmp_path).read_text().split("<h2>Trust evaluations</h2>")[1].split("<h2>")[0]
    assert ">0.6<" in evaluations and ">0.7<" not in evaluations and "(shown: old)" in evaluations


@pytest.fixture(scope="module")
def two_folds_workspace(tmp_path_factory) -> Path:
    """Probes at 5 and 10 folds (10 folds more accurate by 0.1), MI and baselines at 5 folds only."""
    root = tmp_path_factory.mktemp("folds")
    five = probe_rows()
    ten = five.assign(folds=10, accuracy=five["accuracy"] + 0.1)
    write_table(root / "probes.parquet", pd.concat([five.assign(C=1.0), ten.assign(C=1.0)], ignore_index=True))
    write_table(root / "probe_baselines.parquet", baseline_rows())
    write_table(root / "mi.parquet", mi_rows().assign(folds=5))
    write_manifest(root / "manifest.sqlite")
    return root


def test_the_default_configuration_is_shown_and_select_shows_another(two_folds_workspace, tmp_path):
    default = write_report(two_folds_workspace, out_dir=tmp_path / "default").read_text()
    assert "5 folds" in default and "probes.parquet also holds folds 10" in default and "--select KEY=VALUE" in default
    chosen = write_report(two_folds_workspace, out_dir=tmp_path / "ten", select={"folds": "10", "C": "1"}).read_text()
    assert "10 folds" in chosen and "also holds folds" not in chosen
    assert "best layer 3 (highest mean accuracy over checkpoints, 0.850; the highest of 4 layers" in chosen  # the 10-fold rows' mean
    assert "best layer 3 (highest mean accuracy over checkpoints, 0.750; the highest of 4 layers" in default
    # MI has folds 5 only: its section says the selection left it empty, rather than "absent".
    assert "No mutual-information estimates selected: mi.parquet has rows, but no row matches folds=10 (folds there: 5)" in chosen
    assert "No baseline for this dataset and split" in chosen


def test_rows_of_two_extractions_are_never_averaged_and_the_other_is_named(tmp_path):
    probes, mi = probe_rows().assign(position="last", dtype="float32"), mi_rows().assign(position="last", dtype="float32")
    write_table(tmp_path / "probes.parquet", pd.concat([
        probes, probes.assign(position="mean", accuracy=probes["accuracy"] + 0.1),
        probes.assign(dtype="bfloat16", accuracy=probes["accuracy"] - 0.1).iloc[:5],
    ], ignore_index=True))
    write_table(tmp_path / "mi.parquet", pd.concat([mi, mi.assign(position="mean", i_xt=mi["i_xt"] * 3)], ignore_index=True))
    page = write_report(tmp_path, out_dir=tmp_path / "report").read_text()
    best = re.findall(r"best layer 3 \(highest mean accuracy over checkpoints, (0\.\d+);", page)
    assert sorted(best) == ["0.700", "0.750"]  # per dataset, the last-token float32 rows alone
    assert "probes.parquet also holds position mean; dtype bfloat16" in page
    assert "mi.parquet also holds position mean" in page and "position last, dtype float32" in page


def test_select_refuses_an_unknown_column_or_value_before_writing(two_folds_workspace, tmp_path):
    from trusttrace.errors import ReportError

    with pytest.raises(ReportError, match="select fold=10: no result table has a column 'fold' .*folds"):
        write_report(two_folds_workspace, out_dir=tmp_path / "a", select={"fold": "10"})
    with pytest.raises(ReportError, match=r"select folds=7: no result row has folds 7 \(values there: 10, 5\)"):
        write_report(two_folds_workspace, out_dir=tmp_path / "b", select={"folds": "7"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_select_parses_key_value_pairs():
    from trusttrace.errors import ReportError
    from trusttrace.report.selection import matches, parse_selection

    assert parse_selection(["folds=10", " C = 0.5 "]) == {"folds": "10", "C": "0.5"}
    for bad in (["folds"], ["=10"], ["folds="]):
        with pytest.raises(ReportError, match="expected KEY=VALUE"):
            parse_selection(bad)
    with pytest.raises(ReportError, match="given twice"):
        parse_selection(["seed=1", "seed=2"])
    assert matches(pd.Series([1.0, 0.5]), "1").tolist() == [True, False]
    assert matches(pd.Series(["grouped", "paper"]), "paper").tolist() == [False, True]


def test_cli_select(two_folds_workspace, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    assert run_cli(monkeypatch, "report", str(two_folds_workspace), "--out", str(out), "--select", "folds=10") == 0
    assert "10 folds" in (out / "report.html").read_text()
    capsys.readouterr()
    assert run_cli(monkeypatch, "report", str(two_folds_workspace), "--out", str(tmp_path / "bad"), "--select", "folds") == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_work_a_stopped_run_left_open_is_shown_as_interrupted(tmp_path):
    from trusttrace.manifest import Manifest
    from trusttrace.report.inputs import read_workspace

    store = ActivationStore(tmp_path / "ws")
    manifest = Manifest(store.root / "manifest.sqlite")
    manifest.start("step_1/toy/extract#abc", "step_1", "toy", "extract")
    manifest.record_cached_before("step_2", "m", None, cached=False)  # 'fetching' until the sweep loads it
    with store.locked():  # a sweep running now: its unit is running
        assert read_workspace(store.root).units["status"].tolist() == ["running"]
    ws = read_workspace(store.root)
    assert ws.units["status"].tolist() == ["interrupted"] and ws.checkpoints["status"].tolist() == ["interrupted"]
    page = write_report(store.root).read_text()
    assert "started by a run that stopped before finishing it; the next run redoes it" in page


def test_without_file_locks_running_work_is_shown_as_running(tmp_path, monkeypatch):
    """Where no lock tells a live sweep from a stopped one, nothing is called interrupted."""
    import trusttrace.store
    from trusttrace.manifest import Manifest
    from trusttrace.report.inputs import read_workspace

    store = ActivationStore(tmp_path / "ws")
    Manifest(store.root / "manifest.sqlite").start("step_1/toy/extract#abc", "step_1", "toy", "extract")
    monkeypatch.setattr(trusttrace.store, "fcntl", None)
    assert read_workspace(store.root).units["status"].tolist() == ["running"]
