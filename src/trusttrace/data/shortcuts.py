"""Shortcut baselines: how far a trivial feature gets on a dataset, to report next to probe accuracies.

A probe that beats chance may only have found a shortcut. The first word of a statement is
one: on the study's confaide.csv it alone predicts most labels.
"""

from __future__ import annotations

import numbers

import numpy as np

from trusttrace.data.dataset import TrustDataset
from trusttrace.errors import DatasetError


def first_word(statement: str) -> list[str]:
    """The first whitespace-separated token of a statement, as a one-token 'document'."""
    return statement.split()[:1]


def first_word_baseline(dataset: TrustDataset, folds: int = 5, seed: int = 0, grouped: bool = True) -> float:
    """Held-out accuracy of a logistic regression on the first word alone (stratified k-fold).

    With `grouped` and a dataset with groups, rows of one group stay in one fold (no leakage).
    A DatasetError when `folds` is not a whole number of at least 2, or when a class has fewer
    rows (or, grouped, groups) than folds: some fold would then hold none of it.
    """
    use_groups = grouped and dataset.groups is not None
    _check_folds(dataset, folds, use_groups)
    # scikit-learn is imported here: it takes seconds, and loading a dataset must not pay for it
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(CountVectorizer(analyzer=first_word), LogisticRegression())
    statements = np.array(dataset.statements, dtype=object)
    if use_groups:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        groups = dataset.groups
    else:
        splitter, groups = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), None
    try:
        scores = cross_val_score(model, statements, dataset.labels, groups=groups, cv=splitter, error_score="raise")
    except ValueError as error:  # a training fold with one class: groups that hold both labels can cause it
        raise DatasetError(f"first_word_baseline: {dataset.name} cannot be split into {folds} folds ({str(error).splitlines()[0]})") from error
    return float(np.mean(scores))


def _check_folds(dataset: TrustDataset, folds: int, grouped: bool) -> None:
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise DatasetError(f"first_word_baseline: folds must be a whole number of at least 2, got {folds!r}")
    for label in (0, 1):
        members = dataset.labels == label
        count = len(np.unique(dataset.groups[members])) if grouped else int(members.sum())
        if count < folds:
            unit = "groups" if grouped else "rows"
            raise DatasetError(f"first_word_baseline: {dataset.name} has {count} {unit} of label {label}, fewer than {folds} folds")
