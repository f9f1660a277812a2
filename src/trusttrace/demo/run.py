"""`trusttrace demo`: the whole study in miniature, offline, on a model trained here.

1. a synthetic world of facts, its training corpus and a labelled probing set (world.py);
2. a tokenizer and a tiny Llama-style model trained from scratch, with log-spaced checkpoints
   saved as ordinary Hugging Face folders (pretrain.py) — a `local:` suite;
3. the sweep over those checkpoints: extraction, grouped (entity-disjoint) probes and the
   information plane;
4. the truth direction of the first earlier checkpoint where truth became decodable (from
   development rows only) added to the final model: how often the model then calls held-out claims true
   (answers "yes" rather than "no" after them) at each α — a causal test of the direction;
5. the HTML report.

Everything is seeded; a second run reuses the checkpoints and the workspace and gives the same
tables.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trusttrace.config import SweepConfig
from trusttrace.demo.pretrain import CHECKPOINT_META, checkpoint_steps, pretrain
from trusttrace.demo.world import FALSE_VERDICT, TRUE_VERDICT, World, build_world
from trusttrace.errors import TrustTraceError
from trusttrace.evaluation.grid import grid_name
from trusttrace.evaluation.results import rate_row
from trusttrace.evaluation.scoring import choice_logprobs
from trusttrace.evaluation.side_effects import side_effects
from trusttrace.models import load_model
from trusttrace.report import write_report
from trusttrace.steering import Steering, build_vectors, development_rows, save_vectors
from trusttrace.steering_stage import STEERING_KEYS, STEERING_LEGACY, run_columns, source_columns, target_columns
from trusttrace.store import (
    MI_TABLE, PROBES_TABLE, STEERING_DIR, STEERING_TABLE, WORKSPACE_FILE, WORKSPACE_FORMAT, append_table, read_table, write_json,
)
from trusttrace.sweep import Sweep

DEMO_ALPHAS = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)
# Full: about a minute of training on two cores (of about two for the whole demo), held-out
# probe accuracy about 0.9 at the end. Quick: the same steps on half-size batches, about half
# the training time, the truth signal only starting to emerge (about 0.75).
FULL_TRAINING = {"steps": 1000}
QUICK_TRAINING = {"steps": 1000, "batch_size": 64, "lr": 1e-2}
EMERGED_ACCURACY = 0.7
TRAINING_RECORD = "training.json"
EVALUATION_ROWS = 400
ENDORSE_TASK = "claim_endorsement"


@dataclass
class DemoResult:
    """What the demo found: probe accuracy and I(T;Y) over training, and endorsement of claims by
    steering α. `shuffled_i_ty` is the highest I(T;Y) the best layer reads at any checkpoint with
    the labels shuffled."""

    workspace: Path
    report: Path
    best_layer: int
    first_accuracy: float
    last_accuracy: float
    first_i_ty: float
    last_i_ty: float
    shuffled_i_ty: float
    source_checkpoint: str
    steering_layer: int
    endorsement: pd.DataFrame
    seconds: float

    def summary(self) -> str:
        table = self.endorsement.pivot(index="alpha", columns="metric", values="value")
        floor = (
            f"shuffled at most {self.shuffled_i_ty:.2f}" if np.isfinite(self.shuffled_i_ty)
            else "shuffled: not recorded (rows from before 0.9.0)"
        )
        lines = [
            f"held-out probe accuracy of the best layer ({self.best_layer}, highest mean over checkpoints): "
            f"{self.first_accuracy:.2f} at the first checkpoint -> {self.last_accuracy:.2f} at the last",
            f"I(T;Y) of that layer (nHSIC score): {self.first_i_ty:.2f} -> {self.last_i_ty:.2f}; with the labels {floor}",
            f"truth direction of {self.source_checkpoint} (layer {self.steering_layer}) added to the final model; "
            "share of held-out claims it calls true:",
        ]
        lines += [
            f"  alpha {alpha:+4g}: true claims {row['endorse_true_claims']:.2f}, false claims "
            f"{row['endorse_false_claims']:.2f}, correct verdicts {row['verdict_accuracy']:.2f}"
            for alpha, row in table.iterrows()
        ]
        lines.append(f"done in {self.seconds:.0f} s; workspace {self.workspace}")
        return "\n".join(lines)


def ensure_checkpoints(world: World, folder: Path, training: dict, seed: int, progress: bool) -> list[Path]:
    """The demo's checkpoints: reused when a previous run with the same settings and seed saved
    them all (the settings are kept in `training.json` beside them), else trained anew."""
    settings = {**training, "seed": seed}
    record = folder / TRAINING_RECORD
    found = sorted(folder.glob(f"*/{CHECKPOINT_META}")) if folder.exists() else []
    steps_found = sorted(json.loads(meta.read_text())["step"] for meta in found)
    if record.exists() and json.loads(record.read_text()) == settings and steps_found == checkpoint_steps(training["steps"], 12):
        return sorted(meta.parent for meta in found)
    record.unlink(missing_ok=True)
    checkpoints = pretrain(world, folder, seed=seed, progress=progress, **training)
    write_json(record, settings)
    return checkpoints


def set_aside_if_incompatible(workspace: Path) -> Path | None:
    """Rename a demo workspace that an incompatible trusttrace version made, so the demo starts it
    afresh (a user's own workspace is refused instead); returns where it went."""
    marker = workspace / WORKSPACE_FILE
    try:
        found = json.loads(marker.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    if found == WORKSPACE_FORMAT:
        return None
    aside = workspace.with_name(f"{workspace.name}.format-{found}-{int(time.time())}")
    workspace.rename(aside)
    return aside


def demo_config(out: Path, checkpoints: list[Path], dataset: Path, seed: int) -> SweepConfig:
    """The sweep the demo runs over its checkpoints: extraction, probes, information plane."""
    return SweepConfig(
        workspace=out / "workspace",
        suite=f"local:{checkpoints[0].parent}",
        datasets=[str(dataset)],
        dtype="float32",
        device="cpu",
        stages=["extract", "probes", "mi"],
        seed=seed, probes={"method": "logreg", "folds": 5},
        mi={"estimator": "nhsic", "x_layer": 0},
        prefetch=False,
    )


def probe_table(workspace: Path, model: str, dataset_hash: str) -> pd.DataFrame:
    """Held-out probe accuracy of one run on one dataset, by checkpoint (rows, in training order)
    and layer (columns); a workspace may also hold the other (quick or full) run."""
    table = read_table(workspace / PROBES_TABLE)
    table = table[(table["method"] == "logreg") & (table["model"] == model) & (table["dataset_hash"] == dataset_hash)]
    return table.pivot_table(index=["step", "checkpoint"], columns="layer", values="accuracy").sort_index()


def label_information(workspace: Path, model: str, dataset_hash: str, layer: int) -> pd.DataFrame:
    """nHSIC's I(T;Y) and its shuffled-label floor of one layer of one run on one dataset, by
    checkpoint in training order (the floor NaN in rows a version before 0.9.0 wrote)."""
    table = read_table(workspace / MI_TABLE)
    chosen = (
        (table["model"] == model) & (table["dataset_hash"] == dataset_hash) & (table["layer"] == layer)
        & (table["estimator"] == "nhsic")
    )
    return table[chosen].sort_values("step").reindex(columns=["i_ty", "i_ty_shuffled"])


def emerged_checkpoint(accuracy: pd.DataFrame) -> tuple[str, int]:
    """The first checkpoint before the final one where truth is linearly decodable (best layer
    ≥ 0.7), and that layer.

    The final checkpoint is the model steered, so it is never its own source. When no earlier
    checkpoint gets there (as in a short run), the earlier one with the best accuracy is used.
    """
    earlier = accuracy.iloc[:-1] if len(accuracy) > 1 else accuracy
    best = earlier.max(axis=1)
    reached = best[best >= EMERGED_ACCURACY]
    step, name = reached.index[0] if len(reached) else best.idxmax()
    return name, int(accuracy.loc[(step, name)].idxmax())


def truth_direction(sweep: Sweep, checkpoint_name: str, layer: int, seed: int) -> Steering:
    """The class-mean truth direction at `layer` of a checkpoint, from development rows only."""
    checkpoint = sweep.suite.get(checkpoint_name)
    dataset = sweep.datasets[0]
    record = sweep.extract_record(checkpoint, dataset)
    vectors, provenance = build_vectors(
        sweep.store.load(record, layers=[layer]), dataset, [layer], acts_layers=[layer], seed=seed,
        source=record.provenance,
    )
    save_vectors(sweep.store.root / STEERING_DIR / f"{checkpoint.name}-{dataset.name}.safetensors", vectors, provenance)
    return Steering(vectors, 1.0, "last", provenance)


def endorsement(
    model, tokenizer, statements: list[str], labels: np.ndarray, steering: Steering, alphas: tuple[float, ...],
    side_texts: list[str],
) -> pd.DataFrame:
    """For each α: how often the model answers a claim with its "true" verdict, for true and for
    false claims, and how often its verdict is right; with the side effects on `side_texts`."""
    choices = [[" " + TRUE_VERDICT, " " + FALSE_VERDICT]] * len(statements)
    rows = []
    for alpha in alphas:
        setting = Steering(steering.vectors, alpha, steering.positions, steering.provenance)
        with setting.apply(model):
            scores = choice_logprobs(model, tokenizer, statements, choices, desc=f"alpha {alpha:+g}")
        says_true = np.array([s[0] > s[1] for s in scores])
        effects = side_effects(model, tokenizer, setting, side_texts).set_index("metric")["value"]
        side = {"kl": float(effects["kl"]), "perplexity": float(effects["perplexity"])}
        layer = next(iter(setting.vectors)) if alpha else pd.NA
        for metric, flags in (
            ("endorse_true_claims", says_true[labels == 1]),
            ("endorse_false_claims", says_true[labels == 0]),
            ("verdict_accuracy", says_true == (labels == 1)),
        ):
            rows.append(rate_row(ENDORSE_TASK, metric, flags) | {"layer": layer, "alpha": alpha} | side)
    grid = grid_name(list(steering.vectors), [alpha for alpha in alphas if alpha])
    return pd.DataFrame(rows).astype({"layer": "Int64"}).assign(grid=grid)


def run_demo(out: str | Path = "trusttrace-demo", *, seed: int = 0, quick: bool = False, progress: bool = True) -> DemoResult:
    """Run the demo into `out` (checkpoints, workspace, report) and return what it found.

    `out` is a new or empty folder, or one an earlier demo wrote (its work is reused).
    """
    start = time.perf_counter()
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "world").is_dir():
        raise TrustTraceError(f"{out}: a folder that holds other files and is not a demo folder; choose a new or empty folder")
    torch.manual_seed(seed)
    world = build_world(seed=seed)
    dataset = world.write_probing_csv(out / "world" / f"facts-seed{seed}.csv")
    training = QUICK_TRAINING if quick else FULL_TRAINING
    folder = out / ("checkpoints-quick" if quick else "checkpoints")
    checkpoints = ensure_checkpoints(world, folder, training, seed, progress)
    config = demo_config(out, checkpoints, dataset, seed)
    set_aside_if_incompatible(config.workspace)
    sweep = Sweep(config, progress=progress)
    summary = sweep.run()
    if not summary.ok:
        failures = "; ".join(f"{unit}: {error}" for unit, error in summary.failed)
        raise TrustTraceError(f"the demo sweep failed: {failures}")
    workspace = sweep.store.root
    accuracy = probe_table(workspace, sweep.suite.model_id, sweep.datasets[0].content_hash)
    source, layer = emerged_checkpoint(accuracy)
    steering = truth_direction(sweep, source, layer, seed)
    data = sweep.datasets[0]
    held_out = development_rows(data, seed=seed)[1][:EVALUATION_ROWS]
    model, tokenizer = load_model(checkpoints[-1], dtype="float32", device="cpu")
    table = endorsement(
        model, tokenizer, [data.statements[i] for i in held_out], data.labels[held_out], steering, DEMO_ALPHAS,
        side_texts=world.corpus[:64],
    ).assign(
        source_checkpoint=source, dataset=data.name, best=False, **source_columns(steering.provenance),
        **target_columns(checkpoints[-1].name, model), **run_columns(sweep.config, None),
    )
    append_table(workspace / STEERING_TABLE, table.assign(task=ENDORSE_TASK, task_inputs=None), STEERING_KEYS, STEERING_LEGACY)
    report = write_report(workspace, title="trusttrace demo: a tiny LM learning a world of facts")
    best_layer = int(accuracy.mean(axis=0).idxmax())  # as the report picks it: highest mean over checkpoints
    information = label_information(workspace, sweep.suite.model_id, data.content_hash, best_layer)
    return DemoResult(
        workspace=workspace, report=report, best_layer=best_layer,
        first_accuracy=float(accuracy.iloc[0][best_layer]), last_accuracy=float(accuracy.iloc[-1][best_layer]),
        first_i_ty=float(information["i_ty"].iloc[0]), last_i_ty=float(information["i_ty"].iloc[-1]),
        shuffled_i_ty=float(information["i_ty_shuffled"].max()),
        source_checkpoint=source, steering_layer=layer, endorsement=table, seconds=time.perf_counter() - start,
    )
