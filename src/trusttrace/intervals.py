"""95 % intervals for shares of correct (or flagged) examples, honest about related examples,
and for means of scores in [0, 1] (such as TruthfulQA's MC2), honest about few examples.

Examples of one group (a TruthfulQA question's answers, a StereoSet context's two sentences,
an SST-2 sentence and its twin) tend to be right or wrong together, so n of them carry less
information than n independent ones. The Wilson interval is taken at the effective number of
examples, n over the design effect of cluster sampling; without groups it is the usual one.
A mean of scores is a share whose examples carry more information than 0/1 ones when the scores
vary less: the Wilson interval is taken at that effective number (see `mean_interval`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))

# The name of this rule, recorded with every interval and in the settings of the units that
# compute them, so that a workspace's rows computed under another rule are recomputed, not mixed.
INTERVAL_RULE = "wilson-effective-rows"
MEAN_INTERVAL_RULE = "wilson-score-variance-t"
# Scores in [0, 1] whose sample variance is below this are equal but for rounding (seven scores of
# 0.7 have a variance of about 1e-32, not 0).
EQUAL_SCORES_VARIANCE = 1e-20


def wilson_interval(
    share: np.ndarray | float, n: np.ndarray | float, z: np.ndarray | float = Z95
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval (95 % at the default `z`) of each observed `share` of successes
    among `n` (which may be an effective, non-integer number of examples)."""
    share, n, z = np.asarray(share, dtype=float), np.asarray(n, dtype=float), np.asarray(z, dtype=float)
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def effective_rows(flags: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """The number of independent examples each row of the [rows, n] 0/1 `flags` is worth.

    Without groups, n. With groups, n divided by the design effect: the variance of the share
    estimated from the groups' totals (the ratio estimator's, with the G/(G-1) correction) over
    the binomial variance p(1-p)/n. The design effect is taken as at least 1, so groups never
    narrow an interval; flags all 1 (or all 0) count as n. Rows of a single group are one
    example, whatever their flags: nothing tells their variance.
    """
    flags = np.atleast_2d(np.asarray(flags, dtype=float))
    n = flags.shape[-1]
    if groups is None:
        return np.full(flags.shape[0], float(n))
    codes, _ = pd.factorize(np.asarray(groups))
    n_groups = int(codes.max()) + 1 if n else 0
    if n_groups < 2:
        return np.full(flags.shape[0], float(min(n, 1)))
    share = flags.mean(axis=-1)
    totals = np.zeros((n_groups, flags.shape[0]))
    np.add.at(totals, codes, flags.T)
    sizes = np.bincount(codes, minlength=n_groups)[:, None]
    cluster_variance = n_groups / (n_groups - 1) * ((totals - sizes * share) ** 2).sum(axis=0) / n**2
    binomial_variance = share * (1 - share) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        design_effect = np.where(binomial_variance > 0, cluster_variance / binomial_variance, 1.0)
    return n / np.maximum(design_effect, 1.0)


def share_interval(flags: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % interval of the share of each row of [rows, n] `flags`, at its effective number of examples."""
    flags = np.atleast_2d(np.asarray(flags, dtype=float))
    return wilson_interval(flags.mean(axis=-1), effective_rows(flags, groups))


def mean_interval(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % interval of the mean of each row of [rows, n] `scores` in [0, 1] (NaN below 2 scores).

    The Wilson interval at the effective number of scores, n times the largest variance scores of
    this mean could have, m(1 - m), over their sample variance; with Student's t quantile at n - 1
    degrees of freedom, since that variance is itself estimated. For 0/1 scores it is Wilson's at
    n - 1 with that quantile; for scores that vary less it narrows to about the t interval's width.
    The t interval alone undercovers skewed scores on few questions (about 0.71 at 3 and 0.91 at
    30 of Beta(0.2, 2) scores; 0.39 at 3 of 0/1 ones, where this rule gives 0.83, 0.93 and 1.0),
    and can reach outside [0, 1]. Equal scores (to rounding) show no spread, so they count as n
    0/1 scores would, a conservative width rather than none.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    n = scores.shape[-1]
    if n < 2:
        nan = np.full(scores.shape[0], np.nan)
        return nan, nan.copy()
    mean, variance = scores.mean(axis=-1), scores.var(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # equal scores show no spread: count them as n
        effective = np.where(variance > EQUAL_SCORES_VARIANCE, n * mean * (1 - mean) / variance, n)
    return wilson_interval(mean, effective, stats.t.ppf(0.975, n - 1))
