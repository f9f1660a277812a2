"""Probes: the batched solver against scikit-learn, splits, scaling, intervals, baselines, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from trusttrace import probes
from trusttrace.errors import LayerError, ProbeError
from trusttrace.probes import fit_probes, roc_auc
from trusttrace.splits import held_out_folds, held_out_rule, make_splits


def separable(n_layers=6, n=300, hidden=20, seed=0):
    """Activations whose label signal grows with depth (layer 0 carries none)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.45).long()
    acts = torch.randn(n_layers, n, hidden, generator=g) * torch.linspace(0.5, 3, hidden)
    directions = torch.randn(n_layers, hidden, generator=g)
    strength = torch.linspace(0, 1.5, n_layers)[:, None, None]
    acts += (2 * labels - 1)[None, :, None] * directions[:, None, :] * strength + 5.0
    return acts, labels.numpy()


def test_torch_and_sklearn_backends_agree_on_the_same_split():
    acts, y = separable(n_layers=8)
    for split in ("paper", "random"):
        ours = fit_probes(acts, y, split=split, backend="torch", folds=3)
        ref = fit_probes(acts, y, split=split, backend="sklearn", folds=3)
        n_test = ours.table["n_test"].to_numpy()
        close = np.abs(ours.table["accuracy"] - ref.table["accuracy"]).to_numpy() * n_test <= 1 + 1e-9
        assert close.mean() >= 0.95
        cosine = torch.nn.functional.cosine_similarity(ours.directions, ref.directions, dim=1)
        assert (cosine >= 0.99).all(), cosine


def test_folds_fitted_together_equal_folds_fitted_one_by_one(monkeypatch):
    acts, y = separable(n_layers=4, n=200, hidden=24)
    groups = np.arange(200) // 4
    together = fit_probes(acts, y, groups=groups, folds=5)
    monkeypatch.setattr(probes, "FOLD_BATCH_BYTES", 1)
    one_by_one = fit_probes(acts, y, groups=groups, folds=5)
    pd.testing.assert_frame_equal(together.table, one_by_one.table, rtol=1e-6)
    torch.testing.assert_close(together.directions, one_by_one.directions, rtol=1e-5, atol=1e-6)


def ill_conditioned(n_layers=2, n=400, hidden=256, seed=0):
    """Low-rank, correlated states like a model's, on which lbfgs stops at 100 iterations."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(int)
    basis = rng.normal(size=(16, hidden))
    acts = np.empty((n_layers, n, hidden), np.float32)
    for layer in range(n_layers):
        latent = rng.normal(size=(n, 16)) * np.linspace(5, 0.2, 16)
        acts[layer] = latent @ basis + 0.5 * rng.normal(size=(n, hidden)) + 0.4 * np.outer(labels - 0.5, basis[0] + basis[5])
    return torch.from_numpy(acts), labels


def test_paper_protocol_matches_the_reference_pipeline():
    """First 80 % train, z-scored with all rows' mean and (n-1) std, LogisticRegression() stopped
    where the reference's stops (100 lbfgs iterations), not at the optimum."""
    acts, y = ill_conditioned()
    result = fit_probes(acts, y, split="paper")
    n_train = int(len(y) * 0.8)
    for layer in range(len(acts)):
        x = acts[layer].double()
        x = ((x - x.mean(0)) / x.std(0)).numpy()
        model = LogisticRegression().fit(x[:n_train], y[:n_train])
        assert model.n_iter_[0] == 100  # stopped short: only the same stopped fit reproduces it
        expected = (model.predict(x[n_train:]) == y[n_train:]).mean()
        assert result.table["accuracy"][layer] == pytest.approx(expected)
        direction = torch.as_tensor(model.coef_[0]) / acts[layer].double().std(0)
        torch.testing.assert_close(result.directions[layer].double(), direction, rtol=1e-4, atol=1e-6)
    assert (result.table["n_train"] == n_train).all() and (result.table["folds"] == 1).all()
    assert set(result.table["solver"]) == {"lbfgs_100"}
    assert set(fit_probes(acts, y, split="paper", backend="torch").table["solver"]) == {"optimum"}
    assert set(fit_probes(acts, y, split="paper", method="mass_mean").table["solver"]) == {"closed_form"}


def test_paper_scaling_uses_all_rows_and_directions_undo_it():
    """With test rows on another scale, all-row statistics give different weights than train-only ones."""
    acts, y = separable(n_layers=2, n=250)
    acts[:, 200:] *= 3.0
    result = fit_probes(acts, y, split="paper", backend="torch")  # the optimum, to compare with a converged fit
    for layer in range(2):
        x = acts[layer].double()
        mean, std = x.mean(0), x.std(0)  # all rows, n-1: the reference's z-scoring
        model = LogisticRegression(tol=1e-12, max_iter=10_000, solver="newton-cholesky").fit(((x - mean) / std)[:200].numpy(), y[:200])
        expected = torch.as_tensor(model.coef_[0]) / std
        torch.testing.assert_close(result.directions[layer].double(), expected, rtol=1e-4, atol=1e-6)
        intercept = model.intercept_[0] - float((mean / std) @ torch.as_tensor(model.coef_[0]))
        assert result.intercepts[layer].item() == pytest.approx(intercept, rel=1e-4, abs=1e-5)


def test_directions_in_original_space_reproduce_the_test_predictions():
    acts, y = separable(n_layers=4)
    for method in ("logreg", "mass_mean"):
        result = fit_probes(acts, y, split="random", folds=1, method=method, seed=3)
        train, test = result.splits[0]
        scores = acts[:, test].double() @ result.directions.double().unsqueeze(-1)
        scores = scores.squeeze(-1) + result.intercepts.double().unsqueeze(-1)
        accuracy = ((scores > 0).numpy() == y[test].astype(bool)).mean(axis=1)
        np.testing.assert_allclose(accuracy, result.table["accuracy"], atol=1.01 / len(test))


def test_mass_mean_is_the_difference_of_means_with_a_midpoint_threshold():
    acts = torch.tensor([[[0.0], [2.0], [10.0], [12.0], [1.0], [11.0]]])  # one layer, one feature
    y = np.array([0, 0, 1, 1, 0, 1])
    result = fit_probes(acts, y, split="paper", method="mass_mean")
    # paper split: train rows 0..3 (means 1 and 11, threshold 6), test rows 4 and 5
    threshold = -result.intercepts[0] / result.directions[0, 0]
    assert threshold.item() == pytest.approx(6.0, abs=1e-5)
    assert result.directions[0, 0] > 0 and result.table["accuracy"][0] == 1.0


def test_grouped_split_keeps_groups_together_and_covers_every_row_once():
    y = np.tile([0, 1, 1, 0, 1], 40)
    groups = np.arange(200) // 4
    splits = make_splits(y, split="grouped", groups=groups, folds=5, seed=1)
    seen = np.concatenate([test for _, test in splits])
    assert sorted(seen) == list(range(200))
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert abs(y[test].mean() - y.mean()) < 0.15
    for test_size in (0.25, 0.3, 0.4, 0.6):  # whole group folds: one of four, three of ten, two and three of five
        (train, test), = make_splits(y, split="grouped", groups=groups, folds=1, test_size=test_size, seed=1)
        assert not set(groups[train]) & set(groups[test]) and abs(len(test) / 200 - test_size) < 0.03
    assert held_out_folds(0.2, 50) == (1, 5) and held_out_folds(0.4, 50) == (2, 5) and held_out_folds(0.05, 10) == (1, 10)
    assert held_out_rule(0.2, 50) is None and held_out_rule(0.4, 50) == "2 of 5 group folds"
    assert held_out_rule(0.4, 1) is None and held_out_rule(0.4, 0) is None  # too few groups: make_splits refuses them
    (train, test), = make_splits(y, split="grouped", groups=groups, folds=1, test_size=0.2, seed=1)
    assert np.array_equal(test, np.sort(make_splits(y, split="grouped", groups=groups, folds=5, seed=1)[0][1]))


def test_random_split_is_stratified_and_seeded():
    y = np.array([0] * 70 + [1] * 30)
    first = make_splits(y, split="random", folds=1, test_size=0.2, seed=7)
    again = make_splits(y, split="random", folds=1, test_size=0.2, seed=7)
    other = make_splits(y, split="random", folds=1, test_size=0.2, seed=8)
    assert np.array_equal(first[0][1], again[0][1]) and not np.array_equal(first[0][1], other[0][1])
    assert y[first[0][1]].sum() == 6 and len(first[0][1]) == 20
    paper = make_splits(y, split="paper")
    assert np.array_equal(paper[0][0], np.arange(80)) and np.array_equal(paper[0][1], np.arange(80, 100))


def test_grouped_without_groups_is_reported_as_random():
    acts, y = separable(n_layers=2)
    table = fit_probes(acts, y, folds=2).table
    assert set(table["split"]) == {"random"}


def test_one_split_interval_is_the_wilson_interval_and_never_collapses():
    acts, y = separable(n_layers=6)
    one = fit_probes(acts, y, split="random", folds=1, seed=4)
    assert one.table.equals(fit_probes(acts, y, split="random", folds=1, seed=4).table)
    for row in one.table.itertuples():
        correct = round(row.accuracy * row.n_test)
        expected = stats.binomtest(correct, row.n_test).proportion_ci(method="wilson")
        assert (row.acc_low, row.acc_high) == pytest.approx((expected.low, expected.high))
    perfect = one.table[one.table["accuracy"] == 1.0]
    assert len(perfect) and (perfect["acc_low"] < 0.95).all()  # 60 of 60 right is not certainty


def test_rows_of_a_group_count_as_fewer_independent_rows():
    from trusttrace.intervals import effective_rows, wilson_interval

    for successes, n in ((0, 7), (3, 10), (60, 60), (517, 1000)):
        expected = stats.binomtest(successes, n).proportion_ci(method="wilson")
        assert [float(bound) for bound in wilson_interval(successes / n, n)] == pytest.approx([expected.low, expected.high])

    groups = np.repeat(np.arange(20), 5)
    together = np.repeat(np.arange(20) % 3 == 0, 5)[None]  # each group all right or all wrong
    assert effective_rows(together, groups)[0] == pytest.approx(19.0)  # 20 groups, G/(G-1) corrected
    assert effective_rows(together, None)[0] == 100
    rng = np.random.default_rng(1)
    independent = rng.random((1, 100)) < 0.7
    assert 95 <= effective_rows(independent, groups)[0] <= 100  # no clustering: about n, never more
    assert effective_rows(np.ones((1, 100), dtype=bool), groups)[0] == 100


def test_one_split_interval_covers_when_groups_share_their_fate():
    """Per-question difficulty makes a group's rows right or wrong together: Wilson over rows
    undercovers (the audit measured 0.79 for groups of 5); over the effective rows it does not."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(80), 5)
    labels = np.tile([0, 1], 200)
    truth = np.mean(1 / (1 + np.exp(-(1.0 - rng.normal(0, 1.5, 200_000)))))  # the expected accuracy
    covered = {"rows": 0, "groups": 0}
    for _ in range(400):
        difficulty = rng.normal(0, 1.5, 80)[groups]
        right = rng.random(400) < 1 / (1 + np.exp(-(1.0 - difficulty)))
        scores = np.where(right == labels.astype(bool), 1.0, -1.0)[None]
        for name, test_groups in (("rows", None), ("groups", [groups])):
            summary = probes.summarise([scores], [labels], [1000], test_groups)
            covered[name] += summary["acc_low"][0] <= truth <= summary["acc_high"][0]
    assert covered["rows"] / 400 < 0.85 and covered["groups"] / 400 >= 0.92


def test_fold_interval_is_the_wider_of_wilson_and_a_corrected_t_interval():
    acts, y = separable(n_layers=5)
    k = fit_probes(acts, y, split="random", folds=4, seed=4)
    layer = 2
    per_fold, correct, tested = [], 0, 0
    for train, test in k.splits:
        x = acts[layer]
        mean, std = x[train].mean(0), x[train].std(0, unbiased=False)
        model = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(((x[train] - mean) / std).numpy(), y[train])
        right = model.predict(((x[test] - mean) / std).numpy()) == y[test]
        per_fold.append(right.mean())
        correct, tested = correct + right.sum(), tested + len(test)
    per_fold = np.array(per_fold)
    n_train, n_test = np.mean([len(a) for a, _ in k.splits]), np.mean([len(b) for _, b in k.splits])
    half = stats.t.ppf(0.975, 3) * per_fold.std(ddof=1) * np.sqrt(1 / 4 + n_test / n_train)
    wilson = stats.binomtest(int(correct), tested).proportion_ci(method="wilson")
    row = k.table.iloc[layer]
    assert row["accuracy"] == pytest.approx(per_fold.mean())
    assert row["acc_low"] == pytest.approx(min(wilson.low, max(0, per_fold.mean() - half)))
    assert row["acc_high"] == pytest.approx(max(wilson.high, min(1, per_fold.mean() + half)))


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = np.round(rng.standard_normal((3, 50)) + labels, 1)
    expected = [roc_auc_score(labels, row) for row in scores]
    np.testing.assert_allclose(roc_auc(labels, scores), expected)
    assert np.isnan(roc_auc(np.zeros(5, int), scores[:, :5])).all()


def test_signal_shows_in_the_table_and_baselines():
    acts, y = separable(n_layers=4, n=240)
    statements = [f"{'alpha' if label else 'beta'} item{i % 5}" for i, label in enumerate(y)]
    result = fit_probes(acts, y, split="random", folds=3, statements=statements)
    table = result.table
    assert list(table.columns) == ["layer", "method", "solver", "split", "seed", "folds", "accuracy", "acc_low",
                                   "acc_high", "auroc", "n_train", "n_test", "interval"]
    assert set(table["solver"]) == {"optimum"}
    assert table["accuracy"].iloc[-1] > 0.9 and table["accuracy"].iloc[0] < 0.7
    assert table["auroc"].iloc[-1] > 0.95
    base = result.baselines.set_index("baseline")
    assert base.loc["bag_of_words", "accuracy"] == 1.0
    assert base.loc["majority", "accuracy"] == pytest.approx(1 - y.mean(), abs=0.03)
    assert base.loc["majority", "auroc"] == 0.5


def test_text_baselines_see_case_and_the_first_word():
    """sst2's label is random upper-casing: a case-blind bag of words would call it chance."""
    acts, y = separable(n_layers=1, n=200)
    words = ["river", "stone", "cloud", "field", "light", "north"]
    rng = np.random.default_rng(0)
    plain = [" ".join(rng.choice(words, 4)) for _ in y]
    cased = [s.upper() if label else s for s, label in zip(plain, y)]
    base = fit_probes(acts, y, split="random", folds=2, statements=cased).baselines.set_index("baseline")
    assert base.loc["bag_of_words", "accuracy"] == 1.0 and base.loc["first_word", "accuracy"] == 1.0
    first = [("Report" if label else "Share") + " " + s for s, label in zip(plain, y)]
    base = fit_probes(acts, y, split="random", folds=2, statements=first).baselines.set_index("baseline")
    assert base.loc["first_word", "accuracy"] == 1.0
    base = fit_probes(acts, y, split="random", folds=2, statements=plain).baselines.set_index("baseline")
    assert base.loc["first_word", "accuracy"] < 0.65 and base.loc["bag_of_words", "accuracy"] < 0.65


def test_layer_labels_are_reported():
    acts, y = separable(n_layers=3)
    assert list(fit_probes(acts, y, folds=2, layers=[4, 8, 12]).table["layer"]) == [4, 8, 12]
    with pytest.raises(LayerError, match="2 layer indices given for 3 layers"):
        fit_probes(acts, y, layers=[0, 1])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"labels": np.zeros(10, int)}, ProbeError, "10 labels for 300 rows"),
        ({"method": "svm"}, ProbeError, "unknown probe method 'svm'"),
        ({"split": "time"}, ProbeError, "unknown split 'time'"),
        ({"backend": "jax"}, ProbeError, "unknown backend 'jax'"),
        ({"groups": np.arange(300) // 100}, ProbeError, "needs at least 5 groups, found 3"),
        ({"groups": np.zeros(300, int), "folds": 1}, ProbeError, "needs at least 2 groups, found 1"),
        ({"statements": ["a"] * 3}, ProbeError, "3 statements for 300 rows"),
        ({"labels": np.full(300, 2)}, ProbeError, "label 2 at row 0 is not 0 or 1"),
    ],
)
def test_bad_input_raises_one_clear_error(kwargs, error, message):
    acts, y = separable(n_layers=2)
    args = {"labels": y} | kwargs
    labels = args.pop("labels")
    with pytest.raises(error, match=message):
        fit_probes(acts, labels, **args)


def test_single_class_training_fold_and_nan_layer_are_refused():
    acts, _ = separable(n_layers=3, n=100)
    y = np.array([0] * 80 + [1] * 20)  # the paper split trains on label 0 only
    with pytest.raises(ProbeError, match="trains on one class only"):
        fit_probes(acts, y, split="paper")
    acts[2, 5, 3] = float("nan")
    with pytest.raises(ProbeError, match="layer 2 contain NaN"):
        fit_probes(acts, np.arange(100) % 2)
