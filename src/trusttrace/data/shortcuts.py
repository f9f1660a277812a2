"""Shortcut baselines: how far a trivial feature gets on a dataset, to report next to probe accuracies.

A probe that beats chance may only have found a shortcut. The first word of a statement is
one: on the study's confaide.csv it alone predicts most labels.
"""

from __future__ import annotations

import numpy as np

from trusttrace.data.dataset import TrustDataset


def first_word(statement: str) -> list[str]:
    """The first whitespace-separated token of a statement, as a one-token 'document'."""
    return statement.split()[:1]


def first_word_baseline(dataset: TrustDataset, folds: int = 5, seed: int = 0, grouped: bool = True) -> float:
    """Held-out accuracy of a logistic regression on the first word alone (stratified k-fold).

    With `grouped` and a dataset with groups, rows of one group stay in one fold (no leakage).
    """
    # scikit-learn is imported here: it takes seconds, and loading a dataset must not pay for it
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(CountVectorizer(analyzer=first_word), LogisticRegression())
    statements = np.array(dataset.statements, dtype=object)
    if grouped and dataset.groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = cross_val_score(model, statements, dataset.labels, groups=dataset.groups, cv=splitter)
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = cross_val_score(model, statements, dataset.labels, cv=splitter)
    return float(np.mean(scores))
