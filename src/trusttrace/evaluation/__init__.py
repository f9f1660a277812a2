"""Trust evaluations of a (steered) model, their side effects, and grids of steering settings.

    result = evaluate(model, tok, task="stereoset", data_dir="shared/datasets")
    result = evaluate(model, tok, task="toxigen", steering=Steering({16: vec}, alpha=4.0))
    result.table      # task, metric, value, low, high, n (+ layers, alpha, positions)
    result.records    # one row per example
    grid = steering_grid(model, tok, {12: v12, 16: v16}, alphas=[1, 2, 4], task="stereoset")
"""

from trusttrace.evaluation.grid import GridResult, steering_grid
from trusttrace.evaluation.results import EvalResult
from trusttrace.evaluation.runner import ALIASES, TASKS, Task, evaluate, get_task
from trusttrace.evaluation.side_effects import side_effects

__all__ = ["ALIASES", "EvalResult", "GridResult", "TASKS", "Task", "evaluate", "get_task", "side_effects", "steering_grid"]
