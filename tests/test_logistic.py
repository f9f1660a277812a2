"""The batched logistic-regression solvers against scikit-learn run to convergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from trusttrace.errors import ProbeError
from trusttrace.logistic import fit_logistic


def problems(n_problems: int, n: int, hidden: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Standardised, correlated features [P, n, hidden] and labels with a signal growing with p."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.45).double()
    mixing = torch.randn(hidden, hidden, generator=g, dtype=torch.float64) / hidden**0.5
    x = torch.randn(n_problems, n, hidden, generator=g, dtype=torch.float64) @ mixing
    direction = torch.randn(n_problems, 1, hidden, generator=g, dtype=torch.float64)
    x += (2 * labels - 1)[None, :, None] * direction * torch.linspace(0, 0.5, n_problems, dtype=torch.float64)[:, None, None]
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    return x, labels.numpy()


def objective(w, b, x, y, C):
    z = x @ w + b
    return np.logaddexp(0, z).sum() - (y * z).sum() + (w @ w) / (2 * C)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("n, hidden", [(300, 20), (60, 100)], ids=["more-rows", "fewer-rows"])
@pytest.mark.parametrize("C", [1.0, 0.05])
def test_solvers_reach_the_sklearn_optimum(solver, n, hidden, C):
    x, y = problems(4, n, hidden)
    w, b = fit_logistic(x, torch.as_tensor(y), C=C, solver=solver)
    for p in range(x.shape[0]):
        xs = x[p].numpy()
        ref = LogisticRegression(C=C, tol=1e-12, max_iter=100_000, solver="newton-cholesky").fit(xs, y)  # converges on every scikit-learn version
        ours = w[p].numpy()
        assert np.linalg.norm(ours - ref.coef_[0]) <= 1e-4 * np.linalg.norm(ref.coef_[0])
        assert abs(b[p].item() - ref.intercept_[0]) < 1e-4
        assert objective(ours, b[p].item(), xs, y, C) <= objective(ref.coef_[0], ref.intercept_[0], xs, y, C) + 1e-8


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_masked_rows_are_left_out(solver):
    """A problem padded with masked rows has the optimum of the problem without them."""
    x, y = problems(3, 80, 30)
    keep = np.arange(80) % 3 != 0
    mask = torch.as_tensor(keep, dtype=torch.float64)
    w_masked, b_masked = fit_logistic(x, torch.as_tensor(y), mask=mask, solver=solver)
    w_cut, b_cut = fit_logistic(x[:, keep], torch.as_tensor(y[keep]), solver=solver)
    torch.testing.assert_close(w_masked, w_cut, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b_masked, b_cut, rtol=1e-5, atol=1e-6)


def test_problems_are_independent_of_their_batch():
    """Solving problems together, with per-problem targets, equals solving each alone."""
    x, y = problems(3, 70, 90)
    targets = torch.stack([torch.as_tensor(np.roll(y, shift)) for shift in range(3)])
    w_all, b_all = fit_logistic(x, targets)
    for p in range(3):
        w, b = fit_logistic(x[p : p + 1], targets[p])
        torch.testing.assert_close(w_all[p : p + 1], w, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(b_all[p : p + 1], b, rtol=1e-6, atol=1e-8)


def test_float32_solver_close_to_float64():
    x, y = problems(3, 300, 20)
    w64, _ = fit_logistic(x, torch.as_tensor(y))
    w32, _ = fit_logistic(x.float(), torch.as_tensor(y).float())
    assert torch.nn.functional.cosine_similarity(w64, w32.double(), dim=1).min() > 0.9999


def test_unknown_solver_is_refused():
    x, y = problems(1, 10, 3)
    with pytest.raises(ProbeError, match="unknown solver 'sag'"):
        fit_logistic(x, torch.as_tensor(y), solver="sag")
