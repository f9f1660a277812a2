"""Mutual information between a layer's states T, the input X and the labels Y.

The information plane plots I(X;T) against I(T;Y) per layer and checkpoint; a rise then fall of
I(X;T) over training is read as "fitting then compression". Four estimators:

- `nhsic`: the reference study's normalised-CCA HSIC, reproduced exactly (see `nhsic_operator`).
  A dependence score, not nats; with σ = 50 on z-scored states its kernels are nearly constant.
- `hsic`: normalised HSIC (kernel alignment of centred gaussian kernels, median-heuristic
  bandwidth), in [0, 1].
- `gaussian`: mutual information in nats if the data were jointly Gaussian, on a PCA reduction,
  from bias-corrected log-determinants (≈ 0 for independent Gaussian samples at any size), on no
  more components than the rows support; I(T;Y) is clipped to [0, H(Y)], and I(X;X) is +inf.
  States are not Gaussian: heavy-tailed ones make the class log-determinants swing, and the
  states of a small random model read I(T;Y) = H(Y) with shuffled labels. Compare with the
  same estimate on shuffled labels before reading a level.
- `ksg`: the Kraskov-Stögbauer-Grassberger k-nearest-neighbour estimator (KSG-1; Ross 2014 for
  discrete labels), in nats, on a PCA reduction.

The nHSIC reading follows the study's published code (TracingLLM, `mi_estimators.py`,
`hsic_normalized_cca`): K = exp(-||a-b||² / (2σ²·d)), σ = 50 for states and labels alike, the
centring matrix multiplied on the right (K_c = K H), R = K_c (K_c + ε m I)⁻¹ with ε = 1e-5, the
score Σ R_X ∘ R_Tᵀ; states z-scored with the mean and (n-1) std of all rows, X = layer 0, on the
probe-training rows. The reference ran in float32; we default to float64, since the score is
ill-conditioned and float32 moves it by up to a few per cent (see bench/mi.py).

Whether a layer "compresses" depends on the estimator: read `ESTIMATOR_CAVEAT`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

from trusttrace.devices import free_memory, to_analysis_device
from trusttrace.errors import LayerError, ProbeError
from trusttrace.probes import check_finite, check_shape
from trusttrace.splits import check_labels, paper_split, row_indices

ESTIMATORS = ("nhsic", "hsic", "gaussian", "ksg")

ESTIMATOR_CAVEAT = (
    "Mutual information between high-dimensional states cannot be measured directly, only "
    "estimated, and the estimators disagree: the reference nHSIC score is a kernel dependence "
    "measure whose value depends on its fixed bandwidth (sigma = 50) and on z-scoring, not a "
    "quantity in nats, and the Gaussian and KSG estimates depend on the PCA reduction and the "
    "sample size. A rise then fall of I(X;T) over checkpoints ('fitting then compression') is "
    "a property of the estimator as much as of the model: check it with more than one. KSG, "
    "even on its 8 PCA components, is biased low (about half the true value for 8 Gaussian "
    "dimensions and 1000 rows), so it shows trends, not levels. The Gaussian estimate is "
    "unbiased only for Gaussian states; heavy-tailed ones can read up to H(Y) with labels "
    "unrelated to them. Every estimate of I(T;Y) therefore comes with the same estimator's "
    "reading on the same rows with the labels shuffled (i_ty_shuffled): what it reads when T "
    "and Y are independent by construction. A peak counts as a rise then "
    "fall only when its fall exceeds the noise between checkpoints (see turning_points)."
)

NHSIC_SIGMA = 50.0
NHSIC_EPSILON = 1e-5
GAUSSIAN_COMPONENTS = 32
KSG_COMPONENTS = 8
KSG_NEIGHBOURS = 3
# A covariance eigenvalue at most this share of the largest counts as zero: the covariance is singular.
SINGULAR_TOLERANCE = 1e-10
MAX_DISCRETE_VALUES = 20
# The roles that seed ksg's jitter apart: X's states and a layer T's.
X_ROLE, T_ROLE = 1, 0
# Seeds the permutation of the labels for i_ty_shuffled apart from the row subsample's draw.
SHUFFLE_STREAM = 2
# Layers of the kernel estimators are processed in chunks of about this many bytes of m x m matrices.
CHUNK_BYTES = 2**30
# m x m matrices one layer holds at once in the kernel estimators (measured: about 9.9 for nhsic),
# besides the three of X, Y and the shuffled Y (REFERENCE_MATRICES).
KERNEL_MATRICES = 10
REFERENCE_MATRICES = 3
# turning_points: a peak is a rise then fall when it exceeds both ends by this many noise SDs
# (about 3-5 % false calls on a flat or saturating series of 6-30 checkpoints, in simulation),
# and noise needs this many checkpoints to be estimated.
FALL_NOISE = 4.0
MIN_TURNING_CHECKPOINTS = 5
OPTIONS = {
    "nhsic": {"sigma", "epsilon", "dtype"},
    "hsic": {"dtype"},
    "gaussian": {"components", "discrete"},
    "ksg": {"k", "components", "discrete", "seed"},
}


def mutual_information(a, b, *, estimator: str = "nhsic", **opts) -> float:
    """The estimated mutual information (or dependence, for the HSIC family) of two samples.

    `a` [m, d_a] and `b` [m, d_b] are matched rows (a vector is one column). For `gaussian` and
    `ksg` a one-column integer `b` with at most 20 values counts as discrete labels (override
    with `discrete=`). Options: `sigma`, `epsilon`, `dtype` (nhsic); `components` (gaussian);
    `components`, `k`, `seed` (ksg). nhsic's kernel width (σ = 50, the study's) is meant for
    z-scored states, as `information_plane` makes them: on raw states, whose distances are far
    larger, its kernel is flat and the estimate near 0, so z-score the columns first.
    """
    x, y = _as_matrix(a, "a"), _as_matrix(b, "b")
    if x.shape[0] != y.shape[0]:
        raise ProbeError(f"samples of different lengths: a has {x.shape[0]} rows, b has {y.shape[0]}")
    if x.shape[0] < 2:
        raise ProbeError(f"mutual information needs at least 2 rows, got {x.shape[0]}")
    if estimator not in ESTIMATORS:
        raise ProbeError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    unknown = set(opts) - OPTIONS[estimator]
    if unknown:
        raise ProbeError(f"unknown option(s) {', '.join(sorted(unknown))} for estimator {estimator!r}")
    for name in ("components", "k"):
        if name in opts and not (isinstance(opts[name], numbers.Integral) and not isinstance(opts[name], bool) and opts[name] >= 1):
            raise ProbeError(f"option {name} of estimator {estimator!r} must be a positive integer, got {opts[name]!r}")
    if estimator == "gaussian":
        return gaussian_mi(x, y, **opts)
    if estimator == "ksg":
        return ksg_mi(x, y, **opts)
    for name in ("sigma", "epsilon"):
        if name in opts and not (isinstance(opts[name], numbers.Real) and 0 < opts[name] < math.inf):
            raise ProbeError(f"option {name} of estimator {estimator!r} must be a finite number above 0, got {opts[name]!r}")
    dtype = check_float_dtype(opts.pop("dtype", torch.float64))
    tx, ty = torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    if estimator == "nhsic":
        return float(nhsic(tx, ty, **opts))
    return float(normalised_hsic(tx.unsqueeze(0), ty)[0])


def check_float_dtype(dtype: object) -> torch.dtype:
    """The dtype of the kernel estimators' arithmetic: float64 (default) or float32, else a ProbeError."""
    if dtype not in (torch.float32, torch.float64):
        raise ProbeError(f"dtype must be torch.float32 or torch.float64 (the kernels' arithmetic), got {dtype!r}")
    return dtype


def _as_matrix(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ProbeError(f"{name} must be a matrix [rows, columns] or a vector, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ProbeError(f"{name} contains NaN or inf")
    return array


# ----- the reference estimator: normalised-CCA HSIC --------------------------------------


def gaussian_kernel(x: torch.Tensor, sigma: float = NHSIC_SIGMA) -> torch.Tensor:
    """K_ij = exp(-||x_i - x_j||² / (2 σ² d)) for x [..., m, d]: the reference's kernel."""
    squared = (x * x).sum(-1)
    distances = (squared.unsqueeze(-1) + squared.unsqueeze(-2) - 2 * x @ x.mT).clamp_min(0)
    return torch.exp(-distances / (2 * sigma**2 * x.shape[-1]))


def nhsic_operator(x: torch.Tensor, sigma: float = NHSIC_SIGMA, epsilon: float = NHSIC_EPSILON) -> torch.Tensor:
    """R = K_c (K_c + ε m I)⁻¹ with K_c = K H (centring on the right, as the reference does).

    Computed as I - ε m (K_c + ε m I)⁻¹, which is the same matrix: one inverse, no product.
    (Centring on the left instead gives Rᵀ, and the score Σ R_a ∘ R_bᵀ is the same.)
    """
    m = x.shape[-2]
    kernel = gaussian_kernel(x, sigma)
    centred = kernel - kernel.mean(dim=-1, keepdim=True)
    ridge = epsilon * m
    eye = torch.eye(m, dtype=x.dtype, device=x.device)
    return eye - ridge * inverse(centred + ridge * eye)


def inverse(matrices: torch.Tensor) -> torch.Tensor:
    """torch.linalg.inv of [..., m, m]; on the CPU one matrix at a time, since the batched CPU LU of
    torch 2.13 with MKL fails ("Pivots given to lu_solve must all be greater or equal to 1") on
    invertible matrices once torch.set_num_threads has been called with 2 or more threads."""
    if matrices.device.type != "cpu" or matrices.ndim == 2:
        return torch.linalg.inv(matrices)
    flat = matrices.reshape(-1, *matrices.shape[-2:])
    return torch.stack([torch.linalg.inv(matrix) for matrix in flat]).reshape(matrices.shape)


def nhsic_from_operators(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Σ R_a ∘ R_bᵀ over the last two axes (the reference's score)."""
    return (r_a * r_b.mT).sum(dim=(-2, -1))


def nhsic(a: torch.Tensor, b: torch.Tensor, sigma: float = NHSIC_SIGMA, epsilon: float = NHSIC_EPSILON) -> torch.Tensor:
    """The reference normalised-CCA HSIC of two samples [..., m, d_a] and [..., m, d_b]."""
    return nhsic_from_operators(nhsic_operator(a, sigma, epsilon), nhsic_operator(b, sigma, epsilon))


# ----- normalised HSIC with median-heuristic bandwidth ---------------------------------


def centred_median_kernel(x: torch.Tensor) -> torch.Tensor:
    """H K H for x [..., m, d], K gaussian with σ = median positive pairwise distance (1 if none)."""
    squared = (x * x).sum(-1)
    distances = (squared.unsqueeze(-1) + squared.unsqueeze(-2) - 2 * x @ x.mT).clamp_min(0)
    m = x.shape[-2]
    upper = torch.triu_indices(m, m, offset=1, device=x.device)
    pairs = distances[..., upper[0], upper[1]]
    median = torch.nanmedian(torch.where(pairs > 0, pairs, torch.full_like(pairs, float("nan"))), dim=-1).values
    median = torch.where(torch.isnan(median), torch.ones_like(median), median)  # squared distance
    kernel = torch.exp(-distances / (2 * median[..., None, None]))
    kernel = kernel - kernel.mean(dim=-1, keepdim=True)
    return kernel - kernel.mean(dim=-2, keepdim=True)


def normalised_hsic(t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """HSIC(T, B) / sqrt(HSIC(T, T) HSIC(B, B)) for each of the [L, m, d] samples t; 0 when constant."""
    return kernel_alignment(centred_median_kernel(t), centred_median_kernel(b))


def kernel_alignment(kt: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
    """<K_t, K_b> / (|K_t| |K_b|) of centred kernels over the last two axes (normalised HSIC); 0 when one is 0."""
    inner = (kt * kb).sum(dim=(-2, -1))
    norms = kt.square().sum(dim=(-2, -1)).sqrt() * kb.square().sum(dim=(-2, -1)).sqrt()
    positive = norms > 0
    return torch.where(positive, inner / torch.where(positive, norms, torch.ones_like(norms)), torch.zeros_like(inner))


# ----- Gaussian and KSG estimators (nats) -----------------------------------------------


def pca_scores(x: np.ndarray, components: int) -> np.ndarray:
    """x whitened on its top principal components: centred, projected on at most `components`
    (and m-1) of them, each scaled to unit variance, the leading component last. An invertible
    linear map of x gives the same scores up to rotation and sign, so MI is unchanged; directions
    without variance are dropped."""
    centred = x - x.mean(axis=0)
    k = min(components, x.shape[0] - 1, x.shape[1])
    if x.shape[0] <= x.shape[1]:
        values, vectors = np.linalg.eigh(centred @ centred.T)
        scores = vectors[:, -k:] * np.sqrt(np.clip(values[-k:], 0, None))
    else:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        scores = centred @ vectors[:, -k:]
    keep = values[-k:] > 1e-12 * max(values[-1], 0)
    scores = scores[:, keep]
    return scores / scores.std(axis=0)


def is_discrete(b: np.ndarray) -> bool:
    """One integer-valued column with at most MAX_DISCRETE_VALUES distinct values: labels."""
    return b.shape[1] == 1 and bool(np.all(b == np.round(b))) and len(np.unique(b)) <= MAX_DISCRETE_VALUES


def gaussian_mi(
    a: np.ndarray, b: np.ndarray, *, components: int = GAUSSIAN_COMPONENTS, discrete: bool | None = None
) -> float:
    """I(a;b) in nats under a Gaussian model of the PCA-reduced samples (see `gaussian_mi_scores`)."""
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    a, b, discrete = _orient(a, b, discrete)
    reduced_b = b[:, 0] if discrete else pca_scores(b, components)
    return gaussian_mi_scores(pca_scores(a, components), reduced_b, discrete=discrete)


def _orient(a: np.ndarray, b: np.ndarray, discrete: bool | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Put a discrete sample second (MI is symmetric) and decide whether it is discrete."""
    if discrete is None:
        if is_discrete(a) and not is_discrete(b):
            a, b = b, a
        discrete = is_discrete(b)
    return a, b, discrete


def gaussian_mi_scores(a: np.ndarray, b: np.ndarray, *, discrete: bool) -> float:
    """`gaussian_mi_reduced` on as many leading components of the `pca_scores` a (and b) as the rows support.

    A covariance in d dimensions needs more than d rows: with fewer it is singular, and its
    log-determinant says nothing about the data. So a is cut to fewer components than it has
    where the smallest class of labels b has no more rows than that (`class_components`), or
    where a and b together have more components than m - 1 (`joint_components`), with a warning
    that names the cut; where the rows support no dimension at all, the result is NaN.
    """
    if discrete:
        width = class_components(a.shape[1], b)
        return float("nan") if width is None else gaussian_mi_reduced(leading(a, width), b, discrete=True)
    widths = joint_components(a.shape[1], b.shape[1], len(a))
    if widths is None:
        return float("nan")
    return gaussian_mi_reduced(leading(a, widths[0]), leading(b, widths[1]), discrete=False)


def leading(scores: np.ndarray, k: int) -> np.ndarray:
    """The k leading principal components of `pca_scores` output (its last k columns)."""
    return scores[:, scores.shape[1] - k :]


def class_components(width: int, labels: np.ndarray) -> int | None:
    """How many of `width` components every class's covariance can be estimated in: a class of
    n rows supports n - 1. Warns when that cuts the width; None (with a warning) for a class of one row."""
    classes, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.argmin())
    supported = min(width, int(counts[smallest]) - 1)
    if supported == width:
        return width
    name = f"class {classes[smallest]:g} has {counts[smallest]} row(s)"
    if supported == 0:
        warnings.warn(f"gaussian MI is undefined (NaN): {name}, too few to estimate a covariance", stacklevel=3)
        return None
    warnings.warn(
        f"gaussian MI: {name}, which support a covariance in at most {supported} dimensions; "
        f"T is reduced to its {supported} leading principal components instead of {width}",
        stacklevel=3,
    )
    return supported


def joint_components(width_a: int, width_b: int, rows: int) -> tuple[int, int] | None:
    """Components of a and b whose joint covariance `rows` rows can estimate: rows - 1 in all,
    shared as evenly as the widths allow. Warns when it cuts; None (with a warning) for 2 rows."""
    budget = rows - 1
    if width_a + width_b <= budget:
        return width_a, width_b
    if budget < 2:
        warnings.warn(f"gaussian MI is undefined (NaN): {rows} rows are too few for a joint covariance", stacklevel=3)
        return None
    k_b = min(width_b, max(budget // 2, budget - width_a))
    k_a = budget - k_b
    warnings.warn(
        f"gaussian MI: {rows} rows support a joint covariance in at most {budget} dimensions; a and b are "
        f"reduced to their {k_a} and {k_b} leading principal components instead of {width_a} and {width_b}",
        stacklevel=3,
    )
    return k_a, k_b


def gaussian_mi_reduced(a: np.ndarray, b: np.ndarray, *, discrete: bool) -> float:
    """I(a;b) in nats if the samples were Gaussian, from unbiased log-determinants (`_logdet`).

    Continuous b: ½ log det Σ_a + ½ log det Σ_b − ½ log det Σ_ab. Unbiased for Gaussian data, so
    it is not clipped: for independent samples it falls below 0 about as often as above. An
    exact linear relation between a and b (a singular joint covariance, as for I(X;X)) gives
    +inf, the mutual information of a continuous variable with an invertible function of itself.

    Discrete labels b: ½ log det Σ_a − Σ_y p(y) ½ log det Σ_{a|y} (a Gaussian per class), clipped
    to [0, H(Y)], H(Y) the plug-in entropy of the labels. I(T;Y) lies there but the formula does
    not: it overstates well-separated classes (1.15 nats for two 6σ apart, above ln 2), and
    scatters around 0 for independent labels, so clipped it reads a little above 0 on average
    (about 0.005 nats at m = 1000 in 16 dimensions).

    NaN, with a warning naming the reason, where a covariance has no more rows than dimensions
    or a marginal or class covariance is singular (constant, duplicate or collinear rows).
    """
    if discrete:
        return _label_mi(a, b)
    joint = np.hstack([a, b])
    if len(joint) <= joint.shape[1]:
        return _undefined(f"{len(joint)} rows cannot estimate a covariance in {joint.shape[1]} joint dimensions")
    marginals = _logdet(a) + _logdet(b)
    if not np.isfinite(marginals):
        return _undefined("a or b has a singular covariance (constant or collinear columns)")
    return 0.5 * (marginals - _logdet(joint))


def _label_mi(t: np.ndarray, labels: np.ndarray) -> float:
    """The discrete-label case of `gaussian_mi_reduced`."""
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() <= t.shape[1]:
        smallest = classes[counts.argmin()]
        return _undefined(f"class {smallest:g} has {counts.min()} rows, no more than the {t.shape[1]} dimensions of T")
    marginal = _logdet(t)
    if not np.isfinite(marginal):
        return _undefined("T has a singular covariance (constant or collinear columns)")
    conditional = np.array([_logdet(t[labels == label]) for label in classes])
    if not np.isfinite(conditional).all():
        singular = classes[~np.isfinite(conditional)][0]
        return _undefined(f"class {singular:g} has a singular covariance (duplicate or collinear rows)")
    value = 0.5 * (marginal - counts @ conditional / len(labels))
    return float(np.clip(value, 0.0, label_entropy(counts)))


def label_entropy(counts: np.ndarray) -> float:
    """The plug-in entropy −Σ p log p of labels with these class counts, in nats."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _logdet(x: np.ndarray) -> float:
    """An unbiased estimate of log det Σ from n > d Gaussian rows x [n, d]; -inf if their covariance is singular.

    (n−1)S ~ Wishart_d(n−1, Σ) for the sample covariance S, and E[log det((n−1)S)] =
    log det Σ + d log 2 + Σ_{i=1..d} ψ((n−i)/2) (Ahmed & Gokhale 1989; Misra, Singh & Demchuk 2005),
    so plug-in log det S is low, by about d(d+1)/(2n) for n ≫ d: uncorrected, that bias gave
    independent 64-d samples 3 "nats" of mutual information at m = 200. Singular means an
    eigenvalue at most SINGULAR_TOLERANCE times the largest.
    """
    n, d = x.shape
    if d == 0:
        return 0.0
    eigenvalues = np.linalg.eigvalsh(np.atleast_2d(np.cov(x, rowvar=False)))
    if eigenvalues[0] <= SINGULAR_TOLERANCE * eigenvalues[-1]:
        return -np.inf
    bias = d * np.log(2 / (n - 1)) + digamma((n - np.arange(1, d + 1)) / 2).sum()
    return float(np.log(eigenvalues).sum() - bias)


def _undefined(reason: str) -> float:
    """NaN, after a warning that says why."""
    warnings.warn(f"gaussian MI is undefined (NaN): {reason}", stacklevel=3)
    return float("nan")


def ksg_mi(
    a: np.ndarray, b: np.ndarray, *, k: int = KSG_NEIGHBOURS, components: int = KSG_COMPONENTS,
    discrete: bool | None = None, seed: int = 0,
) -> float:
    """The KSG-1 estimate (Kraskov et al. 2004) of I(a;b) in nats, max-norm, on PCA-reduced samples.

    Discrete labels b use Ross (2014). Like scikit-learn's estimators, a seeded jitter of 1e-10
    standard deviations breaks ties between duplicate rows. Not clipped at 0.
    """
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    a, b, discrete = _orient(a, b, discrete)
    rng = np.random.default_rng(seed)
    ra = _jitter(pca_scores(a, components), rng)
    if discrete:
        return ksg_discrete(ra, b[:, 0], k)
    return ksg_continuous(ra, _jitter(pca_scores(b, components), rng), k)


def _jitter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + 1e-10 * rng.standard_normal(x.shape)


def ksg_continuous(a: np.ndarray, b: np.ndarray, k: int = KSG_NEIGHBOURS) -> float:
    """ψ(k) + ψ(m) − ⟨ψ(n_a + 1) + ψ(n_b + 1)⟩, n counting neighbours strictly inside ε_i."""
    m = len(a)
    k = min(k, m - 1)
    joint = np.hstack([a, b])
    radius = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, -1]
    inside = np.nextafter(radius, 0)
    n_a = cKDTree(a).query_ball_point(a, inside, p=np.inf, return_length=True) - 1
    n_b = cKDTree(b).query_ball_point(b, inside, p=np.inf, return_length=True) - 1
    return float(digamma(k) + digamma(m) - np.mean(digamma(n_a + 1) + digamma(n_b + 1)))


def ksg_discrete(a: np.ndarray, labels: np.ndarray, k: int = KSG_NEIGHBOURS) -> float:
    """Ross (2014): ψ(m) + ⟨ψ(k)⟩ − ⟨ψ(N_y)⟩ − ⟨ψ(m_i)⟩; rows of single-row classes are dropped."""
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, classes[counts > 1])
    a, labels = a[keep], labels[keep]
    radius, class_size, neighbours = np.empty(len(a)), np.empty(len(a)), np.empty(len(a))
    for label in np.unique(labels):
        rows = labels == label
        k_label = min(k, int(rows.sum()) - 1)
        radius[rows] = cKDTree(a[rows]).query(a[rows], k=k_label + 1, p=np.inf)[0][:, -1]
        class_size[rows], neighbours[rows] = rows.sum(), k_label
    within = cKDTree(a).query_ball_point(a, np.nextafter(radius, 0), p=np.inf, return_length=True)
    return float(
        digamma(len(a)) + np.mean(digamma(neighbours)) - np.mean(digamma(class_size)) - np.mean(digamma(within))
    )


# ----- the information plane ------------------------------------------------------------


def information_plane(
    acts: torch.Tensor,
    labels: Sequence,
    *,
    estimator: str = "nhsic",
    x_layer: int = 0,
    rows: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    standardize: bool = True,
    dtype: torch.dtype = torch.float64,
    max_rows: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """I(X;T) and I(T;Y) per layer: X = states of layer `x_layer`, T = each layer's states, Y = labels.

    Columns: layer, i_xt, i_ty, i_ty_shuffled (the same estimate of I(T;Y) with the labels
    permuted once, seeded by `seed`: one draw of the estimator's reading when T and Y are
    independent, which a real I(T;Y) should clear by a wide margin), estimator, n.

    Like the reference: each layer is z-scored with the mean and (n-1) std of all rows
    (`standardize`), then only `rows` are used (default: the `paper` split's training rows, the
    first 80 %; pass the probe-training rows of your split). `layers` names the layers of
    `acts` (default 0..n_layers-1) and `x_layer` is one of those names. The kernel estimators
    (nhsic, hsic) run batched over layers on `device` in `dtype` (float32 drifts by up to a few
    per cent for nhsic); gaussian and ksg run on the CPU layer by layer. gaussian's I(X;T) is
    +inf at T = X (see `gaussian_mi_reduced`). The kernel estimators hold about 13 m x m matrices
    for m rows (and take time as m³); `max_rows` estimates on a subsample of the rows (seeded by
    `seed`, stratified by label), and a set too large for the free memory is refused up front.
    To estimate a set a chunk of layers at a time, build its `plane_reference` once and pass
    each chunk to `plane_layers`: the rows are the same as this function's.
    """
    layer_ids, x_index = _check_plane_acts(acts, layers, x_layer)
    reference = plane_reference(
        acts[x_index], labels, estimator=estimator, x_layer=x_layer, rows=rows, device=device,
        standardize=standardize, dtype=dtype, max_rows=max_rows, seed=seed,
    )
    return plane_layers(reference, acts, layer_ids)


@dataclass(frozen=True)
class PlaneReference:
    """X's and Y's side of an information plane, computed once for every layer T of a set.

    `x` and `y` are what each estimator compares T with: nHSIC operators (nhsic), centred
    kernels (hsic), PCA scores of X and the labels (gaussian, ksg); `y_shuffled` is `y` made
    from the labels permuted (see `shuffled_labels`). `rows` are the rows used, of the `n` a
    set's states hold.
    """

    estimator: str
    n: int
    rows: np.ndarray
    x: torch.Tensor | np.ndarray
    y: torch.Tensor | np.ndarray
    y_shuffled: torch.Tensor | np.ndarray
    device: torch.device
    dtype: torch.dtype
    standardize: bool


def plane_reference(
    x_states: torch.Tensor,
    labels: Sequence,
    *,
    estimator: str = "nhsic",
    x_layer: int = 0,
    rows: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    standardize: bool = True,
    dtype: torch.dtype = torch.float64,
    max_rows: int | None = None,
    seed: int = 0,
) -> PlaneReference:
    """The X (`x_states` [n, hidden], the states of layer `x_layer`) and Y side of an information
    plane, with the options of `information_plane`; its kernel-memory check happens here."""
    if estimator not in ESTIMATORS:
        raise ProbeError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    check_float_dtype(dtype)
    if not isinstance(x_states, torch.Tensor) or x_states.ndim != 2:
        shape = tuple(x_states.shape) if hasattr(x_states, "shape") else type(x_states).__name__
        raise ProbeError(f"the states of x_layer must be a tensor [n, hidden], got {shape}")
    y = check_labels(labels, x_states.shape[0])
    selected = subsample_rows(_check_rows(rows, x_states.shape[0]), y, max_rows, seed)
    x = _standardized(to_analysis_device(x_states.unsqueeze(0), device), [x_layer], selected, dtype, standardize)[0]
    m = len(selected)
    labels_used = y[selected]
    shuffled = shuffled_labels(labels_used, seed)
    if estimator in ("nhsic", "hsic"):
        check_kernel_memory(m, x.element_size(), x.device, estimator)
        kernel = nhsic_operator if estimator == "nhsic" else centred_median_kernel
        y_side, y_shuffled = (kernel(torch.as_tensor(v, device=x.device, dtype=dtype).unsqueeze(-1)) for v in (labels_used, shuffled))
        x_side = kernel(x)
    else:
        x_side, y_side, y_shuffled = _reduce(x.double().cpu().numpy(), x_layer, X_ROLE, estimator), labels_used, shuffled
    return PlaneReference(estimator, len(y), selected, x_side, y_side, y_shuffled, x.device, dtype, standardize)


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """`labels` in a seeded random order: independent of any layer's states by construction, with
    the same class counts (so the same H(Y) and the same per-class sample sizes)."""
    return labels[np.random.default_rng((seed, SHUFFLE_STREAM)).permutation(len(labels))]


def plane_layers(reference: PlaneReference, acts: torch.Tensor, layers: Sequence[int] | None = None) -> pd.DataFrame:
    """The information plane's rows (layer, i_xt, i_ty, i_ty_shuffled, estimator, n) for the layers of `acts`
    [n_layers, n, hidden] (named by `layers`, default 0..n_layers-1), against `reference`."""
    layer_ids = check_shape(acts, layers)
    if acts.shape[1] != reference.n:
        raise ProbeError(f"activations of {acts.shape[1]} rows for a reference of {reference.n}")
    on_device = to_analysis_device(acts, reference.device)
    if reference.estimator in ("nhsic", "hsic"):  # the standardised rows of every layer come on top of the kernels
        m, size = len(reference.rows), reference.x.element_size()
        check_kernel_memory(m, size, on_device.device, reference.estimator, acts.shape[0] * m * acts.shape[2] * size)
    states = _standardized(on_device, layer_ids, reference.rows, reference.dtype, reference.standardize)
    if reference.estimator in ("nhsic", "hsic"):
        i_xt, i_ty, i_ty_shuffled = _kernel_plane(states, reference)
    else:
        i_xt, i_ty, i_ty_shuffled = _sample_plane(states, layer_ids, reference)
    return pd.DataFrame({
        "layer": layer_ids, "i_xt": i_xt, "i_ty": i_ty, "i_ty_shuffled": i_ty_shuffled,
        "estimator": reference.estimator, "n": len(reference.rows),
    })


def _standardized(
    states: torch.Tensor, layer_ids: list[int], rows: np.ndarray, dtype: torch.dtype, standardize: bool
) -> torch.Tensor:
    """`rows` of each layer of `states` in `dtype`, z-scored (when `standardize`) with the mean and
    (n-1) std of all rows, one layer at a time: no float64 copy of the whole set."""
    check_finite(states, layer_ids)
    index = torch.as_tensor(rows, device=states.device)
    if not standardize:
        return states[:, index].to(dtype)
    moments = [torch.std_mean(layer.to(dtype), dim=0) for layer in states]
    std, mean = (torch.stack(parts).unsqueeze(1) for parts in zip(*moments))
    return states[:, index].to(dtype).sub_(mean).div_(torch.where(std > 0, std, torch.ones_like(std)))


def _check_plane_acts(acts: torch.Tensor, layers: Sequence[int] | None, x_layer: int) -> tuple[list[int], int]:
    layer_ids = check_shape(acts, layers)
    if x_layer not in layer_ids:
        raise LayerError(f"x_layer {x_layer} is not among the layers {layer_ids[0]}..{layer_ids[-1]}")
    return layer_ids, layer_ids.index(x_layer)


def _check_rows(rows: Sequence[int] | None, n: int) -> np.ndarray:
    selected = paper_split(n)[0] if rows is None else row_indices(rows, n)
    if len(selected) < 3:
        raise ProbeError(f"the information plane needs at least 3 rows, got {len(selected)}")
    return selected


def _kernel_plane(states: torch.Tensor, reference: PlaneReference) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """I(X;T), I(T;Y) and I(T;Y) with shuffled labels for every layer of `states`, in chunks of
    layers that fit CHUNK_BYTES."""
    m = states.shape[1]
    chunk = max(1, CHUNK_BYTES // (KERNEL_MATRICES * m * m * states.element_size()))
    score = nhsic_from_operators if reference.estimator == "nhsic" else kernel_alignment
    columns: list[list[torch.Tensor]] = [[], [], []]
    for start in range(0, states.shape[0], chunk):
        block = states[start : start + chunk]
        t_side = nhsic_operator(block) if reference.estimator == "nhsic" else centred_median_kernel(block)
        for column, other in zip(columns, (reference.x, reference.y, reference.y_shuffled)):
            column.append(score(other, t_side))
    i_xt, i_ty, i_ty_shuffled = (torch.cat(column).cpu().numpy() for column in columns)
    return i_xt, i_ty, i_ty_shuffled


def check_kernel_memory(m: int, element_size: int, device: torch.device, estimator: str, states_bytes: int = 0) -> None:
    """A ProbeError, before any work, when the kernel matrices of `m` rows (and `states_bytes` of
    states beside them) cannot fit in the memory `device` has free: memory grows as m² (and time
    as m³), so a large set would otherwise end in an out-of-memory crash, or a kill that a resumed
    sweep would meet again."""
    need = (KERNEL_MATRICES + REFERENCE_MATRICES) * m * m * element_size + states_bytes
    free = free_memory(device)
    if free is not None and need > free:
        raise ProbeError(
            f"{estimator} on {m} rows needs about {need / 1e9:.1f} GB of {device.type} memory ({KERNEL_MATRICES + REFERENCE_MATRICES} "
            f"{m}x{m} matrices{' and the layers’ standardised rows' if states_bytes else ''}) and {free / 1e9:.1f} GB "
            "is free: estimate on a subsample with max_rows "
            "(mi.max_rows in a config, --max-rows for trusttrace mi), or use the gaussian or ksg estimator"
        )


def check_max_rows(max_rows: int | None) -> None:
    """A ProbeError unless `max_rows` is None (every row) or a whole number of at least 3."""
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, numbers.Integral) or max_rows < 3):
        raise ProbeError(f"max_rows {max_rows!r} must be a whole number of at least 3 (or None: every row)")


def subsample_rows(rows: np.ndarray, labels: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """At most `max_rows` of `rows` (sorted): all of them when they are fewer, else a seeded
    subsample stratified by label (each label keeps its share, largest remainders rounded up)."""
    check_max_rows(max_rows)
    if max_rows is None or len(rows) <= max_rows:
        return rows
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels[rows], return_counts=True)
    quotas = counts * max_rows / len(rows)
    keep = np.floor(quotas).astype(int)
    keep[np.argsort(-(quotas - keep), kind="stable")[: max_rows - keep.sum()]] += 1
    kept = [rng.choice(rows[labels[rows] == value], size=k, replace=False) for value, k in zip(values, keep)]
    return np.sort(np.concatenate(kept))


def _reduce(sample: np.ndarray, layer: int, role: int, estimator: str) -> np.ndarray:
    """The PCA scores a sample estimator compares; ksg's tie-breaking jitter is seeded by the
    layer's number and role (X or T), so a layer's estimate does not depend on which other layers
    are estimated with it."""
    scores = pca_scores(sample, GAUSSIAN_COMPONENTS if estimator == "gaussian" else KSG_COMPONENTS)
    return _jitter(scores, np.random.default_rng((role, layer % 2**64))) if estimator == "ksg" else scores


def _sample_plane(
    states: torch.Tensor, layer_ids: list[int], reference: PlaneReference
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gaussian / ksg layer by layer on the CPU (gaussian's I(X;X) is +inf): I(X;T), I(T;Y) and
    I(T;Y) with shuffled labels."""
    gaussian = reference.estimator == "gaussian"
    rows = []
    for layer, sample in zip(layer_ids, states):
        t = _reduce(sample.double().cpu().numpy(), layer, T_ROLE, reference.estimator)
        if gaussian:
            row = [gaussian_mi_scores(reference.x, t, discrete=False), gaussian_mi_scores(t, reference.y, discrete=True)]
        else:
            row = [ksg_continuous(reference.x, t), ksg_discrete(t, reference.y)]
        with warnings.catch_warnings():  # the same class sizes as the real labels: their warnings were given
            warnings.simplefilter("ignore")
            row.append(gaussian_mi_scores(t, reference.y_shuffled, discrete=True) if gaussian else ksg_discrete(t, reference.y_shuffled))
        rows.append(row)
    i_xt, i_ty, i_ty_shuffled = (np.array(column, dtype=float) for column in zip(*rows))
    return i_xt, i_ty, i_ty_shuffled


# ----- turning points -------------------------------------------------------------------


def turning_points(mi_table: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the training step where I(X;T) peaks, and whether that is a rise then a fall
    beyond the estimator's noise.

    `fall` is the peak's height over the higher of the first and last values; `noise` the
    checkpoint-to-checkpoint noise of the layer's values (`series_noise`); `interior` is True
    only when the peak lies between the first and last step and `fall` exceeds FALL_NOISE times
    `noise`. With nothing tested against noise, the highest of a dozen noisy values lies inside
    most of the time, even when the true I(X;T) is flat or only rises. Fewer than
    MIN_TURNING_CHECKPOINTS checkpoints cannot tell a fall from noise: `noise` is NaN and
    `interior` False. Ties go to the earliest step. Infinite values (I(X;X) of the layer that
    stands for X, under some estimators) have no peak: skipped.
    """
    missing = {"step", "layer", "i_xt"} - set(mi_table.columns)
    if missing:
        raise ProbeError(f"MI table lacks column(s) {', '.join(sorted(missing))}")
    counts = mi_table.groupby(["layer", "step"]).size()
    if (counts > 1).any():
        (layer, step), count = next((key, n) for key, n in counts.items() if n > 1)
        raise ProbeError(
            f"the MI table holds {count} rows of layer {layer} at step {step}: pass the rows of one series "
            "(one model, dataset, estimator, x_layer and split), as the report does"
        )
    finite = mi_table[np.isfinite(mi_table["i_xt"].astype(float))]
    rows = []
    for layer, group in finite.dropna(subset=["step"]).sort_values("step", kind="stable").groupby("layer"):
        values = group["i_xt"].to_numpy(dtype=float)
        top = int(np.argmax(values))
        fall = float(values[top] - max(values[0], values[-1]))
        noise = series_noise(values)
        interior = bool(0 < top < len(values) - 1 and np.isfinite(noise) and fall > FALL_NOISE * noise)
        rows.append({
            "layer": layer, "peak_step": group["step"].iloc[top], "peak_i_xt": float(values[top]),
            "fall": fall, "noise": noise, "interior": interior,
        })
    return pd.DataFrame(rows, columns=["layer", "peak_step", "peak_i_xt", "fall", "noise", "interior"])


def series_noise(values: np.ndarray) -> float:
    """The noise standard deviation of a series measured at successive checkpoints, from its
    second differences (which a smooth trend barely moves): 1.4826 × their median absolute
    deviation / √6. Where more than half of them are equal (a plateau, a saturated estimator, a
    straight stretch) that is 0, which would make any dip a fall beyond noise: then 1.2533 × their
    mean absolute deviation / √6 (both are σ for Gaussian noise). NaN below MIN_TURNING_CHECKPOINTS values."""
    if len(values) < MIN_TURNING_CHECKPOINTS:
        return math.nan
    second = np.diff(values, n=2)
    robust = 1.4826 * np.median(np.abs(second - np.median(second)))
    spread = robust if robust > 0 else 1.2533 * np.mean(np.abs(second - np.mean(second)))
    return float(spread / math.sqrt(6))
