"""`trusttrace evaluate`: one trust task on a model, unsteered, steered, or over a grid of steering settings.

torch, transformers and pandas are imported inside the command, so `--help` answers at once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from trusttrace.cli.app import DataDirOption, app
from trusttrace.cli.options import DeviceOption, check_data_dir, check_device, check_output, parse_layers
from trusttrace.errors import EvaluationError

if TYPE_CHECKING:
    import pandas as pd

    from trusttrace.evaluation import EvalResult


def parse_floats(text: str, option: str) -> list[float]:
    """At least one comma-separated finite number, e.g. "1,2,4"."""
    try:
        numbers = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or not all(math.isfinite(number) for number in numbers):
        raise EvaluationError(f"{option} {text!r}: expected comma-separated finite numbers")
    return numbers


def check_limit(value: float | None, option: str) -> None:
    """A side-effect limit is a number from 0 up (inf: no limit)."""
    if value is not None and not value >= 0:
        raise EvaluationError(f"{option} {value}: must be 0 or more (inf for no limit)")


@app.command("evaluate")
def evaluate_command(
    model: str = typer.Option(..., "--model", "-m", help="Hub id or local folder of the model to evaluate."),
    task: str = typer.Option(..., "--task", "-t", help="confaide, confaide_tier2, stereoset, sst2, sst2_sentiment, binary, toxigen, truthfulqa (or privacy, fairness...)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Built-in name or file (default: the task's own)."),
    revision: Optional[str] = typer.Option(None, "--revision", "-r", help="Hub revision of the model."),
    data_dir: Optional[Path] = DataDirOption,
    vectors: Optional[Path] = typer.Option(None, "--vectors", help="Steering-vector file from `trusttrace steer`."),
    layer: Optional[str] = typer.Option(None, "--layer", "--layers", help="Layer(s) of the vector file to steer, e.g. 16 or 12,16 (default: all in the file); needs --vectors."),
    alpha: Optional[str] = typer.Option(None, "--alpha", help="Steering coefficient(s), e.g. 4 or 1,2,4 (default 1); several layers or alphas run a grid; needs --vectors."),
    positions: Optional[str] = typer.Option(None, help="Where vectors are added: last (default), all, prompt, generated; needs --vectors."),
    max_perplexity: Optional[float] = typer.Option(None, help="Side-effect limit on perplexity for a grid (default the study's 6.0; inf for none); with one setting, checks it against the limit. Needs --vectors."),
    max_kl: Optional[float] = typer.Option(None, help="Side-effect limit on KL divergence (default none); as --max-perplexity. Needs --vectors."),
    protocol: str = typer.Option("default", help="default or paper (the reference's templates, parse mode, rows)."),
    seed: int = typer.Option(0, min=0, help="Seed of the split and of parse-mode guesses."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate at most N of the task's evaluation rows or questions (the held-out ones)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Prompts per batch."),
    mode: Optional[str] = typer.Option(None, help="Binary tasks: logit (default) or parse."),
    template: Optional[str] = typer.Option(None, help="Binary tasks: prompt with a {statement} placeholder."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Generation length (toxigen 64, truthfulqa 50, parse 2)."),
    classifier: Optional[str] = typer.Option(None, help="Toxigen: classifier id or path (default tomh/toxigen_roberta)."),
    toxic_label: Optional[str] = typer.Option(None, help="Toxigen: the classifier's toxic label, e.g. LABEL_1."),
    questions: Optional[str] = typer.Option(None, help="TruthfulQA: heldout (407, default) or all (817)."),
    truth_judge: Optional[str] = typer.Option(None, help="TruthfulQA: truth judge, a model id/path or (with --judge-url) an endpoint model."),
    info_judge: Optional[str] = typer.Option(None, help="TruthfulQA: informativeness judge, like --truth-judge."),
    judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL for the judges, e.g. https://api.openai.com/v1."),
    judge_api: Optional[str] = typer.Option(None, help="completions (default) or chat."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the judge API key (default OPENAI_API_KEY)."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16."),
    device: Optional[str] = DeviceOption,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for results.csv, records.parquet, settings.json (and grid.csv); existing files are replaced."),
    trust_remote_code: bool = typer.Option(False, help="Run model code from the Hub repository (off by default)."),
) -> None:
    """Evaluate a model on one trust task, optionally steered, with side effects beside steered results.

    Examples:

      trusttrace evaluate -m LLM360/AmberChat -t stereoset --data-dir shared/datasets

      trusttrace evaluate -m EleutherAI/pythia-70m -t toxigen --vectors ws/steering/toxigen.safetensors --layer 3 --alpha -4 -o out/

      trusttrace evaluate -m ./sft -t stereoset --vectors v.safetensors --layer 2,3,4 --alpha 1,2,4 --max-perplexity 6 -o grid/

      trusttrace evaluate -m ./sft -t truthfulqa --truth-judge gpt-judge --info-judge gpt-info --judge-url https://api.openai.com/v1
    """
    from trusttrace.evaluation import get_task
    from trusttrace.evaluation.runner import check_task_options

    spec = get_task(task)
    steering_options = {"--layer": layer, "--alpha": alpha, "--positions": positions,
                        "--max-perplexity": max_perplexity, "--max-kl": max_kl}
    given_steering = [name for name, value in steering_options.items() if value is not None]
    if vectors is None and given_steering:
        raise EvaluationError(
            f"{', '.join(given_steering)} steer(s) nothing without --vectors, a file from `trusttrace steer`"
        )
    check_limit(max_perplexity, "--max-perplexity")
    check_limit(max_kl, "--max-kl")
    check_output(out, "--out", folder=True)
    device = check_device(device)
    given = {
        "batch_size": batch_size, "mode": mode, "template": template, "max_new_tokens": max_new_tokens,
        "classifier": classifier, "toxic_label": toxic_label, "questions": questions, "truth_judge": truth_judge,
        "info_judge": info_judge, "judge_url": judge_url, "judge_api": judge_api, "api_key_env": api_key_env,
    }
    options: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    check_task_options(spec, options)  # before the model loads
    common = {"protocol": protocol, "seed": seed, "limit": limit, "data_dir": check_data_dir(data_dir)}
    alphas = parse_floats("1.0" if alpha is None else alpha, "--alpha")
    from trusttrace.evaluation import evaluate as run_evaluation, steering_grid
    from trusttrace.evaluation.grid import STUDY_MAX_PERPLEXITY
    from trusttrace.models import load_model
    from trusttrace.steering import Steering

    steering = None
    if vectors is not None:  # read (and its layers checked) before the model loads
        parsed = "all" if layer is None else parse_layers(layer, "--layer", stored=True)
        steering = Steering.from_file(vectors, alphas[0], positions or "last", None if parsed == "all" else parsed)
    if spec.name == "toxigen":  # the classifier, small, before the model: one that cannot be had fails at once
        from trusttrace.evaluation.toxicity import DEFAULT_CLASSIFIER, load_classifier

        options["classifier"] = load_classifier(options.get("classifier", DEFAULT_CLASSIFIER), options.pop("toxic_label", None), device)
    loaded, tokenizer = load_model(model, revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    if steering is None:
        _write(run_evaluation(loaded, tokenizer, task, dataset, **common, **options), out)
        return
    if len(steering.vectors) == 1 and len(alphas) == 1 and max_perplexity is None and max_kl is None:
        _write(run_evaluation(loaded, tokenizer, task, dataset, steering=steering, **common, **options), out)
        return  # one setting with a limit runs as a grid of one: against the unsteered model and the limit
    grid = steering_grid(
        loaded, tokenizer, steering.vectors, alphas, task=task, dataset=dataset, positions=steering.positions,
        max_perplexity=STUDY_MAX_PERPLEXITY if max_perplexity is None else max_perplexity, max_kl=max_kl,
        provenance=steering.provenance, progress=True, **common, **options,
    )
    _write(grid.combined(), out, grid.table)
    unsteered = f"unsteered {grid.table.loc[0, 'metric']} {grid.table.loc[0, 'value']:.3g}"
    typer.echo(f"best within the limit that improves on the {unsteered} beyond chance (paired test, Holm-corrected): "
               + (str(grid.best) if grid.best else "none"))


def _write(result: EvalResult, out: Path | None, grid: pd.DataFrame | None = None) -> None:
    """Print the table (or grid), less the interval rules' names, and, with --out, write it whole
    as CSV and the records as Parquet."""
    from trusttrace.store import atomic_write_bytes, write_json, write_table

    shown = grid if grid is not None else result.table
    typer.echo(shown.drop(columns="interval", errors="ignore").to_string(index=False))
    if out is None:
        return
    atomic_write_bytes(out / "results.csv", result.table.to_csv(index=False).encode())
    write_table(out / "records.parquet", result.records)
    write_json(out / "settings.json", result.settings)
    if grid is not None:
        atomic_write_bytes(out / "grid.csv", grid.to_csv(index=False).encode())
    else:  # an earlier run's grid would read as this run's
        (out / "grid.csv").unlink(missing_ok=True)
    typer.echo(f"written to {out}/")
