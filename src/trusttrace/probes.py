"""Linear probes on every layer at once: how well a layer's states predict the label.

`fit_probes` fits one probe per layer on the same split(s) and reports accuracy with a 95 %
interval, AUROC and the baselines. The default `logreg` probe is scikit-learn's
`LogisticRegression(C=C)` objective (sum of log-losses + ||w||² / (2C), intercept not
penalised) solved to its optimum in float64 for all layers and folds together by
`trusttrace.logistic` (Newton on the CPU, L-BFGS on a GPU), so it agrees tightly with a
converged scikit-learn fit; `backend="sklearn"` fits one scikit-learn model per layer and fold
instead, with its defaults, as the reference study did. On the `paper` split `auto` means
`sklearn`: the reference's lbfgs stops at 100 iterations, short of the optimum on real states,
and only the same stopped fit reproduces its accuracies (`torch` asks for the optimum there).
`mass_mean` is the difference of the class means, thresholded at the midpoint of the two
projected class means.

Features are z-scored with the training rows' mean and standard deviation, except for the
`paper` split, which, like the reference, uses the mean and (n-1) standard deviation of all
rows, test rows included. A constant feature is left unscaled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from trusttrace.baselines import bag_of_words_scores, first_word_scores, majority_scores
from trusttrace.devices import to_analysis_device
from trusttrace.errors import LayerError, ProbeError
from trusttrace.intervals import INTERVAL_RULE, share_interval
from trusttrace.logistic import fit_logistic
from trusttrace.splits import Split, check_labels, make_splits, resolve_split

METHODS = ("logreg", "mass_mean")
BACKENDS = ("auto", "torch", "sklearn")
STOPPED = "lbfgs_100"  # the `solver` of scikit-learn's LogisticRegression fit with its defaults
FOLD_BATCH_BYTES = 256 * 2**20
TABLE_COLUMNS = [
    "layer", "method", "solver", "split", "seed", "folds", "accuracy", "acc_low", "acc_high", "auroc", "n_train", "n_test",
    "interval",
]
BASELINE_COLUMNS = ["baseline"] + TABLE_COLUMNS[3:]


@dataclass
class ProbeResults:
    """Per-layer probe scores and the fitted directions.

    `directions[i]` and `intercepts[i]` give the probe of row i of `table` in the original
    activation space (scaling undone): score = acts @ direction + intercept, label 1 when > 0.
    They are fitted on the training rows of the first split in `splits`.
    """

    table: pd.DataFrame
    directions: torch.Tensor
    intercepts: torch.Tensor
    baselines: pd.DataFrame
    splits: list[Split]


def fit_probes(
    acts: torch.Tensor,
    labels: Sequence,
    *,
    split: str = "grouped",
    groups: Sequence | None = None,
    folds: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
    method: str = "logreg",
    C: float = 1.0,
    backend: str = "auto",
    device: str | torch.device | None = None,
    statements: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
) -> ProbeResults:
    """Fit one linear probe per layer of `acts` [n_layers, n, hidden] to 0/1 `labels`.

    The rows are split by `make_splits` (`grouped` without groups is `random`; `paper` is one
    fixed 80/20 split); k folds report the mean accuracy over folds. `layers` names the layer
    each row of `acts` holds (default 0..n_layers-1); `statements` adds the bag-of-words and
    first-word baselines to the majority class; `device` is where the work runs (default: where `acts` is). See the module
    docstring for the methods and the scaling. Bad input raises ProbeError or LayerError.
    """
    layer_ids = check_shape(acts, layers)
    y = check_labels(labels, acts.shape[1])
    check_options(method, backend, C)
    if statements is not None and len(statements) != len(y):
        raise ProbeError(f"{len(statements)} statements for {len(y)} rows of activations")
    kind = resolve_split(split, groups)
    splits = make_splits(y, split=kind, groups=groups, folds=folds, test_size=test_size, seed=seed)
    states = to_analysis_device(acts, device)
    check_finite(states, layer_ids)

    paper = kind == "paper"
    fitted_by = solver(method, backend, kind)
    backend = "sklearn" if fitted_by == STOPPED else "torch"
    scalings = [_scaling(states if paper else states[:, _index(train, states)], paper=paper) for train, _ in splits]
    fits = _fit_folds(states, y, splits, scalings, method=method, C=C, backend=backend)
    fold_scores, fold_labels = [], []
    for (_, test), (mean, std), (weights, bias) in zip(splits, scalings, fits):
        x_test = (states[:, _index(test, states)].double() - mean) / std
        scores = torch.bmm(x_test, weights.unsqueeze(-1)).squeeze(-1) + bias.unsqueeze(-1)
        fold_scores.append(scores.cpu().numpy())
        fold_labels.append(y[test])
    (mean, std), (weights, bias) = scalings[0], fits[0]
    directions = (weights / std.squeeze(1)).float().cpu()
    intercepts = (bias - (mean.squeeze(1) * weights / std.squeeze(1)).sum(-1)).float().cpu()
    n_train = [len(train) for train, _ in splits]

    test_groups = None if groups is None else [np.asarray(groups)[test] for _, test in splits]
    summary = summarise(fold_scores, fold_labels, n_train, test_groups)
    setting = {"method": method, "solver": fitted_by, "split": kind, "seed": seed, "folds": len(splits)}
    table = pd.DataFrame({"layer": layer_ids, **setting, **summary})
    baselines = _baselines(y, splits, statements, kind, seed, test_groups)
    return ProbeResults(table[TABLE_COLUMNS], directions, intercepts, baselines, splits)


def check_shape(acts: torch.Tensor, layers: Sequence[int] | None) -> list[int]:
    """The layer names of `acts` [n_layers, n, hidden] (default 0..n_layers-1)."""
    if not isinstance(acts, torch.Tensor) or acts.ndim != 3:
        shape = tuple(acts.shape) if hasattr(acts, "shape") else type(acts).__name__
        raise ProbeError(f"activations must be a tensor [n_layers, n, hidden], got {shape}")
    layer_ids = list(range(acts.shape[0])) if layers is None else [int(layer) for layer in layers]
    if len(layer_ids) != acts.shape[0]:
        raise LayerError(f"{len(layer_ids)} layer indices given for {acts.shape[0]} layers of activations")
    return layer_ids


def check_finite(acts: torch.Tensor, layer_ids: Sequence[int]) -> None:
    """A ProbeError naming the first layer holding NaN or inf, if any."""
    finite = torch.isfinite(acts).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise ProbeError(f"activations of layer {layer_ids[int(torch.nonzero(~finite)[0, 0])]} contain NaN or inf")


def solver(method: str, backend: str, split: str) -> str:
    """What fits the probes, as their rows' `solver` column: STOPPED (one scikit-learn model per
    layer with its defaults, stopped at lbfgs's 100 iterations, as the reference did), "optimum"
    (the objective solved to its optimum) or "closed_form" (mass_mean). The two logistic fits give
    different accuracies, so their rows are kept apart. `auto` is STOPPED on the `paper` split only."""
    if method == "mass_mean":
        return "closed_form"
    if backend == "auto":
        backend = "sklearn" if split == "paper" else "torch"
    return STOPPED if backend == "sklearn" else "optimum"


def check_options(method: str, backend: str, C: float) -> None:
    """A ProbeError for an unknown method or backend, or a C that is not positive."""
    if method not in METHODS:
        raise ProbeError(f"unknown probe method {method!r}; choose one of {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise ProbeError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not C > 0:
        raise ProbeError(f"C must be positive, got {C}")


def _scaling(rows: torch.Tensor, *, paper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer float64 mean and std [n_layers, 1, hidden] of `rows` (n-1 in the std for paper)."""
    rows = rows.double()
    mean = rows.mean(dim=1, keepdim=True)
    std = rows.std(dim=1, keepdim=True, correction=1 if paper else 0)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _index(rows: np.ndarray, states: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(rows, device=states.device)


def _fit_folds(
    states: torch.Tensor,
    y: np.ndarray,
    splits: list[Split],
    scalings: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    method: str,
    C: float,
    backend: str,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weights [n_layers, hidden], intercepts [n_layers]) of each fold, fitted on its scaled training rows.

    With the torch solver, folds are fitted together in one padded batch (each fold's rows
    masked) while it stays under FOLD_BATCH_BYTES, so k folds cost about one solve, not k.
    """
    folds = [(train, scaling) for (train, _), scaling in zip(splits, scalings)]
    if method != "logreg" or backend == "sklearn":
        return [
            _fit(_scaled(states, train, scaling), _targets(y[train], states), method=method, C=C, backend=backend)
            for train, scaling in folds
        ]
    per_fold = states.shape[0] * max(len(train) for train, _ in folds) * states.shape[2] * 8
    size = max(1, FOLD_BATCH_BYTES // per_fold)
    fits: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(folds), size):
        fits += _fit_together(states, y, folds[start : start + size], C)
    return fits


def _fit_together(
    states: torch.Tensor, y: np.ndarray, folds: list[tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor]]], C: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logistic probes of several folds in one batch: training rows padded to one length and masked."""
    width = max(len(train) for train, _ in folds)
    xs, targets, masks = [], [], []
    for train, scaling in folds:
        padding = width - len(train)
        xs.append(torch.nn.functional.pad(_scaled(states, train, scaling), (0, 0, 0, padding)))
        fold_targets = _targets(y[train], states)
        targets.append(torch.nn.functional.pad(fold_targets, (0, padding)).expand(len(states), -1))
        masks.append(torch.nn.functional.pad(torch.ones_like(fold_targets), (0, padding)).expand(len(states), -1))
    weights, bias = fit_logistic(torch.cat(xs), torch.cat(targets), mask=torch.cat(masks), C=C)
    return list(zip(weights.split(len(states)), bias.split(len(states))))


def _scaled(states: torch.Tensor, rows: np.ndarray, scaling: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The chosen rows of every layer in float64, z-scored with the fold's (mean, std)."""
    mean, std = scaling
    return states[:, _index(rows, states)].double().sub_(mean).div_(std)


def _targets(labels: np.ndarray, states: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(labels, device=states.device, dtype=torch.float64)


def _fit(
    x: torch.Tensor, y: torch.Tensor, *, method: str, C: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [n_layers, hidden] and intercepts [n_layers] of one probe per layer, one fold."""
    if method == "mass_mean":
        return mass_mean(x, y)
    if backend == "sklearn":
        return logreg_sklearn(x, y, C=C)
    return fit_logistic(x, y, C=C)


def mass_mean(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference of class means, with the threshold midway between the projected class means."""
    positive, negative = x[:, y == 1].mean(dim=1), x[:, y == 0].mean(dim=1)
    weights = positive - negative
    bias = -(weights * (positive + negative) / 2).sum(-1)
    return weights, bias


def logreg_sklearn(x: torch.Tensor, y: torch.Tensor, *, C: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One scikit-learn `LogisticRegression(C=C)` (its defaults otherwise) per layer: the reference.

    Like the reference, it stops at lbfgs's 100 iterations whether or not it has converged;
    scikit-learn's ConvergenceWarning about that is silenced, since it is the behaviour asked for.
    """
    targets = y.cpu().numpy().astype(np.int64)
    weights, biases = [], []
    for layer in x.cpu().double().numpy():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=C).fit(layer, targets)
        weights.append(model.coef_[0])
        biases.append(model.intercept_[0])
    return (torch.as_tensor(np.stack(weights), dtype=x.dtype, device=x.device),
            torch.as_tensor(np.array(biases), dtype=x.dtype, device=x.device))


def summarise(
    fold_scores: list[np.ndarray], fold_labels: list[np.ndarray], n_train: list[int],
    test_groups: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Accuracy, its 95 % interval, AUROC and sizes per row of the [rows, n_test] fold scores.

    Accuracy is the mean over folds. The interval is the Wilson score interval of all test
    predictions (correct ones out of all tested), which is never narrower than the test rows
    allow, not even at 0 or 100 %. Rows of one group (`test_groups`, per fold) tend to be
    right or wrong together, so they count as fewer independent rows: the Wilson interval is
    taken at the effective number of rows (see trusttrace.intervals). With k folds it is widened,
    where they vary more than that, to a t-interval over the fold accuracies whose variance
    is corrected for the training rows the folds share (Nadeau & Bengio 2003: 1/k +
    n_test/n_train in place of 1/k). n_train and n_test are per-fold means, rounded.
    """
    correct = [(scores > 0) == labels.astype(bool) for scores, labels in zip(fold_scores, fold_labels)]
    aurocs = np.stack([roc_auc(labels, scores) for scores, labels in zip(fold_scores, fold_labels)])
    per_fold = np.stack([c.mean(axis=-1) for c in correct])
    accuracy = per_fold.mean(axis=0)
    groups = None if test_groups is None else np.concatenate(test_groups)
    low, high = share_interval(np.concatenate(correct, axis=-1), groups)
    k = len(correct)
    if k > 1:
        n_test = np.mean([len(labels) for labels in fold_labels])
        spread = per_fold.std(axis=0, ddof=1) * np.sqrt(1 / k + n_test / np.mean(n_train))
        half = stats.t.ppf(0.975, k - 1) * spread
        low, high = np.minimum(low, np.clip(accuracy - half, 0, 1)), np.maximum(high, np.clip(accuracy + half, 0, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all folds single-class: AUROC undefined
        auroc = np.nanmean(aurocs, axis=0)
    return {
        "accuracy": accuracy, "acc_low": low, "acc_high": high, "auroc": auroc,
        "n_train": int(round(np.mean(n_train))), "n_test": int(round(np.mean([len(lab) for lab in fold_labels]))),
        "interval": INTERVAL_RULE,
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each row of `scores` [rows, n] (Mann-Whitney, ties count half).

    NaN when the labels hold one class only.
    """
    positive = labels.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[0], np.nan)
    ranks = stats.rankdata(scores, axis=-1)
    return (ranks[:, positive].sum(axis=-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _baselines(
    y: np.ndarray, splits: list[Split], statements: Sequence[str] | None, kind: str, seed: int,
    test_groups: list[np.ndarray] | None,
) -> pd.DataFrame:
    """The majority class and, with statements, the bag of words and the first word, on the probes' splits."""
    text_baselines = {"bag_of_words": bag_of_words_scores, "first_word": first_word_scores} if statements is not None else {}
    names = ["majority", *text_baselines]
    fold_scores = []
    for train, test in splits:
        rows = [majority_scores(y[train], len(test))]
        if text_baselines:
            train_text, test_text = [statements[i] for i in train], [statements[i] for i in test]
            rows += [scores(train_text, y[train], test_text) for scores in text_baselines.values()]
        fold_scores.append(np.stack(rows))
    summary = summarise(fold_scores, [y[test] for _, test in splits], [len(train) for train, _ in splits], test_groups)
    frame = pd.DataFrame({"baseline": names, "split": kind, "seed": seed, "folds": len(splits), **summary})
    return frame[BASELINE_COLUMNS]
