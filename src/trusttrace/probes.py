"""Linear probes on every layer at once: how well a layer's states predict the label.

`fit_probes` fits one probe per layer on the same split(s) and reports accuracy with a 95 %
interval, AUROC and the baselines. The default `logreg` probe is scikit-learn's
`LogisticRegression(C=C)` objective (sum of log-losses + ||w||² / (2C), intercept not
penalised) solved to its optimum for all layers together by a batched L-BFGS in torch, in
float64 on every device (the solver is memory-bound, so double precision costs little and
keeps the agreement with scikit-learn tight); `backend="sklearn"` fits one scikit-learn model
per layer instead, with its defaults, as the reference study did. `mass_mean` is the difference of the
class means, thresholded at the midpoint of the two projected class means.

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
from sklearn.linear_model import LogisticRegression

from trusttrace.baselines import bag_of_words_scores, majority_scores
from trusttrace.errors import LayerError, ProbeError
from trusttrace.splits import Split, check_labels, make_splits, resolve_split

METHODS = ("logreg", "mass_mean")
BACKENDS = ("auto", "torch", "sklearn")
BOOTSTRAP_SAMPLES = 1000
LBFGS_HISTORY = 10
CPU_CHUNK_BYTES = 64 * 2**20
TABLE_COLUMNS = [
    "layer", "method", "split", "seed", "folds", "accuracy", "acc_low", "acc_high", "auroc", "n_train", "n_test",
]
BASELINE_COLUMNS = ["baseline"] + TABLE_COLUMNS[2:]


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
    each row of `acts` holds (default 0..n_layers-1); `statements` adds the bag-of-words
    baseline; `device` is where the work runs (default: where `acts` is). See the module
    docstring for the methods and the scaling. Bad input raises ProbeError or LayerError.
    """
    layer_ids = check_shape(acts, layers)
    y = check_labels(labels, acts.shape[1])
    check_options(method, backend, C)
    if statements is not None and len(statements) != len(y):
        raise ProbeError(f"{len(statements)} statements for {len(y)} rows of activations")
    kind = resolve_split(split, groups)
    splits = make_splits(y, split=kind, groups=groups, folds=folds, test_size=test_size, seed=seed)
    states = acts.to(torch.device(device) if device is not None else acts.device)
    check_finite(states, layer_ids)

    fold_scores, fold_labels, n_train = [], [], []
    directions = intercepts = None
    for fold, (train, test) in enumerate(splits):
        x_train = states[:, torch.as_tensor(train, device=states.device)].double()
        mean, std = _scaling(states if kind == "paper" else x_train, paper=kind == "paper")
        x_train.sub_(mean).div_(std)
        y_train = torch.as_tensor(y[train], device=states.device, dtype=torch.float64)
        weights, bias = _fit(x_train, y_train, method=method, C=C, backend=backend)
        del x_train
        x_test = (states[:, torch.as_tensor(test, device=states.device)].double() - mean) / std
        scores = torch.bmm(x_test, weights.unsqueeze(-1)).squeeze(-1) + bias.unsqueeze(-1)
        fold_scores.append(scores.cpu().numpy())
        fold_labels.append(y[test])
        n_train.append(len(train))
        if fold == 0:
            directions = (weights / std.squeeze(1)).float().cpu()
            intercepts = (bias - (mean.squeeze(1) * weights / std.squeeze(1)).sum(-1)).float().cpu()

    summary = summarise(fold_scores, fold_labels, n_train, seed)
    setting = {"method": method, "split": kind, "seed": seed, "folds": len(splits)}
    table = pd.DataFrame({"layer": layer_ids, **setting, **summary})
    baselines = _baselines(y, splits, statements, kind, seed)
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


def _fit(
    x: torch.Tensor, y: torch.Tensor, *, method: str, C: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [n_layers, hidden] and intercepts [n_layers] of one probe per layer."""
    if method == "mass_mean":
        return mass_mean(x, y)
    if backend == "sklearn":
        return logreg_sklearn(x, y, C=C)
    return logreg_torch(x, y, C=C)


def mass_mean(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference of class means, with the threshold midway between the projected class means."""
    positive, negative = x[:, y == 1].mean(dim=1), x[:, y == 0].mean(dim=1)
    weights = positive - negative
    bias = -(weights * (positive + negative) / 2).sum(-1)
    return weights, bias


def logreg_sklearn(x: torch.Tensor, y: torch.Tensor, *, C: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One scikit-learn `LogisticRegression(C=C)` (its defaults otherwise) per layer: the reference."""
    targets = y.cpu().numpy().astype(np.int64)
    weights, biases = [], []
    for layer in x.cpu().double().numpy():
        model = LogisticRegression(C=C).fit(layer, targets)
        weights.append(model.coef_[0])
        biases.append(model.intercept_[0])
    return (torch.as_tensor(np.stack(weights), dtype=x.dtype, device=x.device),
            torch.as_tensor(np.array(biases), dtype=x.dtype, device=x.device))


def logreg_torch(
    x: torch.Tensor, y: torch.Tensor, *, C: float = 1.0, tol: float | None = None, max_iter: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 logistic regression for every layer at once, by a batched L-BFGS (one history per layer).

    Minimises sum_i log(1 + exp(-s_i z_i)) + ||w||² / (2C) with z = x w + b, s = ±1, for each
    layer independently. Stops a layer when its largest gradient entry falls below `tol` times
    the one at w = 0 (default 1e-6 in float64, 1e-5 in float32). On the CPU the layers are
    solved in groups of about CPU_CHUNK_BYTES (measured on 2 cores: 32 x 1561 x 512 float64 in
    one batch ran 10x slower than in such groups); on a GPU they all go in one batch.
    """
    per_layer = x[0].numel() * x.element_size()
    chunk = x.shape[0] if x.is_cuda else max(1, CPU_CHUNK_BYTES // per_layer)
    parts = [_lbfgs(x[start : start + chunk], y, C, tol, max_iter) for start in range(0, x.shape[0], chunk)]
    return torch.cat([w for w, _ in parts]), torch.cat([b for _, b in parts])


def _lbfgs(
    x: torch.Tensor, y: torch.Tensor, C: float, tol: float | None, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batched L-BFGS itself: Armijo backtracking per layer, converged layers frozen."""
    tol = tol if tol is not None else (1e-6 if x.dtype == torch.float64 else 1e-5)
    n_layers, _, hidden = x.shape
    theta = x.new_zeros(n_layers, hidden + 1)
    z = x.new_zeros(n_layers, x.shape[1])
    value, grad = _objective(x, y, theta, z, C), _gradient(x, y, theta, z, C)
    threshold = tol * grad.abs().amax(dim=1)
    active = grad.abs().amax(dim=1) > threshold
    steps: list[torch.Tensor] = []
    changes: list[torch.Tensor] = []
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        direction = -_two_loop(grad, steps, changes)
        x_direction = _predict(x, direction)
        slope = (grad * direction).sum(-1)
        size = _backtrack(x, y, theta, z, direction, x_direction, value, slope, active, C)
        active &= size > 0
        step = size.unsqueeze(-1) * direction
        theta = theta + step
        z = z + size.unsqueeze(-1) * x_direction
        new_value, new_grad = _objective(x, y, theta, z, C), _gradient(x, y, theta, z, C)
        steps.append(step)
        changes.append(torch.where(active.unsqueeze(-1), new_grad - grad, torch.zeros_like(grad)))
        if len(steps) > LBFGS_HISTORY:
            steps.pop(0)
            changes.pop(0)
        value, grad = new_value, new_grad
        active &= grad.abs().amax(dim=1) > threshold
    if bool(active.any()):
        unfinished = int(active.sum())
        warnings.warn(f"batched logistic regression stopped after {max_iter} iterations on {unfinished} layer(s)")
    return theta[:, :hidden], theta[:, hidden]


def _predict(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """z = x w + b for every layer: [n_layers, n]."""
    hidden = x.shape[2]
    return _matvec(x, theta[:, :hidden]) + theta[:, hidden:]


def _matvec(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x[l] @ v[l] for every layer. On CPU a loop of `mv` runs about 3x faster than `bmm`."""
    if x.is_cuda:
        return torch.bmm(x, v.unsqueeze(-1)).squeeze(-1)
    return torch.stack([torch.mv(layer, vector) for layer, vector in zip(x, v)])


def _rmatvec(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """r[l] @ x[l] for every layer (the transposed product of `_matvec`)."""
    if x.is_cuda:
        return torch.bmm(r.unsqueeze(1), x).squeeze(1)
    return torch.stack([torch.mv(layer.T, vector) for layer, vector in zip(x, r)])


def _objective(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, z: torch.Tensor, C: float) -> torch.Tensor:
    weights = theta[:, : x.shape[2]]
    return (torch.nn.functional.softplus(z) - y * z).sum(-1) + (weights * weights).sum(-1) / (2 * C)


def _gradient(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, z: torch.Tensor, C: float) -> torch.Tensor:
    residual = torch.sigmoid(z) - y
    grad_w = _rmatvec(x, residual) + theta[:, : x.shape[2]] / C
    return torch.cat([grad_w, residual.sum(-1, keepdim=True)], dim=-1)


def _two_loop(grad: torch.Tensor, steps: list[torch.Tensor], changes: list[torch.Tensor]) -> torch.Tensor:
    """The L-BFGS product H⁻¹ grad per layer from the stored (step, gradient change) pairs."""
    if not steps:
        return grad / grad.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    curvatures = [(s * c).sum(-1) for s, c in zip(steps, changes)]
    rhos = [torch.where(k > 0, 1 / k, torch.zeros_like(k)) for k in curvatures]
    q = grad.clone()
    alphas = []
    for s, c, rho in zip(reversed(steps), reversed(changes), reversed(rhos)):
        alpha = rho * (s * q).sum(-1)
        q -= alpha.unsqueeze(-1) * c
        alphas.append(alpha)
    c_last, k_last = changes[-1], curvatures[-1]
    c_norm = (c_last * c_last).sum(-1)
    usable = (k_last > 0) & (c_norm > 0)
    gamma = torch.where(usable, k_last / torch.where(usable, c_norm, torch.ones_like(c_norm)), torch.ones_like(k_last))
    r = gamma.unsqueeze(-1) * q
    for s, c, rho, alpha in zip(steps, changes, rhos, reversed(alphas)):
        beta = rho * (c * r).sum(-1)
        r += (alpha - beta).unsqueeze(-1) * s
    return r


def _backtrack(
    x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, z: torch.Tensor, direction: torch.Tensor,
    x_direction: torch.Tensor, value: torch.Tensor, slope: torch.Tensor, active: torch.Tensor, C: float,
    c1: float = 1e-4, tries: int = 50,
) -> torch.Tensor:
    """Per-layer Armijo step sizes (halving from 1); 0 for inactive layers or where none decreases.

    A step must also lower the objective strictly, so a layer at its rounding floor stops
    instead of wandering (which float32 otherwise does).
    """
    size = torch.ones_like(value)
    accepted = ~active | (slope >= 0)
    size = torch.where(accepted, torch.zeros_like(size), size)
    for _ in range(tries):
        if bool(accepted.all()):
            break
        trial = theta + size.unsqueeze(-1) * direction
        trial_value = _objective(x, y, trial, z + size.unsqueeze(-1) * x_direction, C)
        good = ~accepted & (trial_value <= value + c1 * size * slope) & (trial_value < value)
        accepted |= good
        size = torch.where(accepted, size, size / 2)
    return torch.where(accepted, size, torch.zeros_like(size))


def summarise(
    fold_scores: list[np.ndarray], fold_labels: list[np.ndarray], n_train: list[int], seed: int
) -> dict[str, np.ndarray]:
    """Accuracy, its 95 % interval, AUROC and sizes per row of the [rows, n_test] fold scores.

    One split: accuracy on the test rows, a seeded percentile bootstrap over test rows.
    k folds: the mean of the fold accuracies and a t-interval over folds (clipped to [0, 1]).
    n_train and n_test are per-fold means, rounded.
    """
    correct = [(scores > 0) == labels.astype(bool) for scores, labels in zip(fold_scores, fold_labels)]
    aurocs = np.stack([roc_auc(labels, scores) for scores, labels in zip(fold_scores, fold_labels)])
    if len(correct) == 1:
        accuracy = correct[0].mean(axis=-1)
        rng = np.random.default_rng(seed)
        n_test = correct[0].shape[-1]
        resampled = correct[0][:, rng.integers(0, n_test, size=(BOOTSTRAP_SAMPLES, n_test))].mean(axis=-1)
        low, high = np.percentile(resampled, [2.5, 97.5], axis=-1)
    else:
        per_fold = np.stack([c.mean(axis=-1) for c in correct])
        accuracy = per_fold.mean(axis=0)
        half = stats.t.ppf(0.975, len(correct) - 1) * per_fold.std(axis=0, ddof=1) / np.sqrt(len(correct))
        low, high = np.clip(accuracy - half, 0, 1), np.clip(accuracy + half, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all folds single-class: AUROC undefined
        auroc = np.nanmean(aurocs, axis=0)
    return {
        "accuracy": accuracy, "acc_low": low, "acc_high": high, "auroc": auroc,
        "n_train": int(round(np.mean(n_train))), "n_test": int(round(np.mean([len(lab) for lab in fold_labels]))),
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
    y: np.ndarray, splits: list[Split], statements: Sequence[str] | None, kind: str, seed: int
) -> pd.DataFrame:
    """The majority class and, with statements, the bag of words, on the probes' splits."""
    names = ["majority"] + (["bag_of_words"] if statements is not None else [])
    fold_scores = []
    for train, test in splits:
        rows = [majority_scores(y[train], len(test))]
        if statements is not None:
            rows.append(bag_of_words_scores([statements[i] for i in train], y[train], [statements[i] for i in test]))
        fold_scores.append(np.stack(rows))
    summary = summarise(fold_scores, [y[test] for _, test in splits], [len(train) for train, _ in splits], seed)
    frame = pd.DataFrame({"baseline": names, "split": kind, "seed": seed, "folds": len(splits), **summary})
    return frame[BASELINE_COLUMNS]
