"""Baselines a probe must beat on the same split: the majority class, a bag of words, the first word.

Each baseline returns decision scores for the test rows (higher means label 1, threshold 0), so
they are summarised exactly like the probes. A probe that barely beats the text baselines reads
the statement's surface, not the model's representation of it. The text baselines keep case:
on some datasets case is the surface (sst2's label 1 is random upper-casing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from trusttrace.data.shortcuts import first_word

BASELINES = ("majority", "bag_of_words", "first_word")


def majority_scores(train_labels: np.ndarray, n_test: int) -> np.ndarray:
    """A constant score predicting the training majority class (label 0 on a tie)."""
    majority = int(np.bincount(train_labels, minlength=2).argmax())
    return np.full(n_test, 1.0 if majority == 1 else -1.0)


def bag_of_words_scores(
    train_statements: Sequence[str], train_labels: np.ndarray, test_statements: Sequence[str]
) -> np.ndarray:
    """Decision scores of a logistic regression (C=1) on case-sensitive word counts."""
    return _text_scores(CountVectorizer(lowercase=False), train_statements, train_labels, test_statements)


def first_word_scores(
    train_statements: Sequence[str], train_labels: np.ndarray, test_statements: Sequence[str]
) -> np.ndarray:
    """Decision scores of a logistic regression (C=1) on the first word alone (confaide's shortcut)."""
    return _text_scores(CountVectorizer(analyzer=first_word), train_statements, train_labels, test_statements)


def _text_scores(
    vectorizer: CountVectorizer, train_statements: Sequence[str], train_labels: np.ndarray, test_statements: Sequence[str]
) -> np.ndarray:
    """Fit a logistic regression on the vectorizer's counts of the training statements; score the test ones.

    Training statements without a single token leave only the majority class to predict.
    """
    try:
        features = vectorizer.fit_transform(list(train_statements))
    except ValueError:  # empty vocabulary
        return majority_scores(train_labels, len(test_statements))
    model = LogisticRegression(max_iter=1000).fit(features, train_labels)
    return model.decision_function(vectorizer.transform(list(test_statements)))
