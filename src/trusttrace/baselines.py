"""Baselines a probe must beat on the same split: the majority class and a bag of words.

Each baseline returns decision scores for the test rows (higher means label 1, threshold 0), so
they are summarised exactly like the probes. A probe that barely beats the bag of words reads
the statement's surface, not the model's representation of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

BASELINES = ("majority", "bag_of_words")


def majority_scores(train_labels: np.ndarray, n_test: int) -> np.ndarray:
    """A constant score predicting the training majority class (label 0 on a tie)."""
    majority = int(np.bincount(train_labels, minlength=2).argmax())
    return np.full(n_test, 1.0 if majority == 1 else -1.0)


def bag_of_words_scores(
    train_statements: Sequence[str], train_labels: np.ndarray, test_statements: Sequence[str]
) -> np.ndarray:
    """Decision scores of a word-count logistic regression (scikit-learn defaults, C=1).

    Training statements without a single word leave only the majority class to predict.
    """
    vectorizer = CountVectorizer()
    try:
        features = vectorizer.fit_transform(list(train_statements))
    except ValueError:  # empty vocabulary
        return majority_scores(train_labels, len(test_statements))
    model = LogisticRegression(max_iter=1000).fit(features, train_labels)
    return model.decision_function(vectorizer.transform(list(test_statements)))
