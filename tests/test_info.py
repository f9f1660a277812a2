"""Mutual information: the reference nHSIC by hand, known answers, the batched plane, turning points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import trusttrace.info as info
from trusttrace.errors import LayerError, ProbeError
from trusttrace.info import ESTIMATOR_CAVEAT, information_plane, mutual_information, turning_points


def reference_nhsic(x: np.ndarray, y: np.ndarray, sigma=50.0, epsilon=1e-5) -> float:
    """The reference formula, written out step by step with loops (float64)."""
    m = len(x)

    def centred_kernel(a):
        kernel = np.empty((m, m))
        for i in range(m):
            for j in range(m):
                kernel[i, j] = np.exp(-np.sum((a[i] - a[j]) ** 2) / (2 * sigma * sigma * a.shape[1]))
        h = np.eye(m) - np.ones((m, m)) / m
        return kernel @ h

    kx, ky = centred_kernel(x), centred_kernel(y)
    rx = kx @ np.linalg.inv(kx + epsilon * m * np.eye(m))
    ry = ky @ np.linalg.inv(ky + epsilon * m * np.eye(m))
    return float(np.sum(rx * ry.T))


def correlated_pairs(m, rhos, seed=0):
    rng = np.random.default_rng(seed)
    rhos = np.asarray(rhos)
    a = rng.standard_normal((m, len(rhos)))
    b = rhos * a + np.sqrt(1 - rhos**2) * rng.standard_normal((m, len(rhos)))
    return a, b, -0.5 * np.log(1 - rhos**2).sum()


def test_nhsic_two_points_has_a_closed_form():
    """For m = 2, R = r J/2 with r = (1-k)/((1-k) + 2ε), so the score is r_a r_b."""
    a, b = np.array([[0.0, 0.0], [30.0, 40.0]]), np.array([[1.0], [-60.0]])

    def r(x):
        k = np.exp(-np.sum((x[0] - x[1]) ** 2) / (2 * 50.0**2 * x.shape[1]))
        return (1 - k) / ((1 - k) + 2 * 1e-5)

    assert mutual_information(a, b) == pytest.approx(r(a) * r(b), rel=1e-9)


def test_nhsic_matches_the_reference_formula_step_by_step():
    rng = np.random.default_rng(1)
    for m, scale in ((3, 40.0), (7, 80.0), (12, 5.0)):
        x, y = rng.standard_normal((m, 4)) * scale, rng.standard_normal((m, 2)) * scale
        assert mutual_information(x, y, estimator="nhsic") == pytest.approx(reference_nhsic(x, y), rel=1e-8)
    labels = rng.integers(0, 2, 9)
    x = rng.standard_normal((9, 3)) * 60
    assert mutual_information(x, labels) == pytest.approx(reference_nhsic(x, labels[:, None].astype(float)), rel=1e-8)


def test_nhsic_identical_and_constant_inputs():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3)) * 70
    kernel = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * 50.0**2 * 3))
    eigen = np.linalg.eigvals(kernel @ (np.eye(6) - 1 / 6)).real
    ridge = 1e-5 * 6
    assert mutual_information(x, x) == pytest.approx(np.sum((eigen / (eigen + ridge)) ** 2), rel=1e-8)
    assert mutual_information(x, np.ones((6, 2))) == pytest.approx(0.0, abs=1e-12)


def test_known_gaussian_answers_within_ten_percent():
    a, b, truth = correlated_pairs(2000, [0.6, 0.8])
    assert mutual_information(a, b, estimator="gaussian") == pytest.approx(truth, rel=0.1)
    assert mutual_information(a, b, estimator="ksg") == pytest.approx(truth, rel=0.1)
    independent = np.random.default_rng(5).standard_normal((2000, 2))
    assert abs(mutual_information(a, independent, estimator="gaussian")) < 0.01
    assert abs(mutual_information(a, independent, estimator="ksg")) < 0.03


def test_gaussian_is_invariant_to_invertible_linear_maps():
    a, b, _ = correlated_pairs(500, [0.5, 0.3, 0.7], seed=3)
    rng = np.random.default_rng(4)
    mix_a, mix_b = rng.standard_normal((3, 3)) + 2 * np.eye(3), rng.standard_normal((3, 3)) + 2 * np.eye(3)
    base = mutual_information(a, b, estimator="gaussian")
    assert mutual_information(a @ mix_a + 7, b @ mix_b, estimator="gaussian") == pytest.approx(base, rel=1e-3)


def test_discrete_labels_known_answer():
    """T = 2Y + N(0,1), Y a fair coin: I = h(mixture) - h(N(0,1)), integrated numerically."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 3000)
    t = labels * 2.0 + rng.standard_normal(3000)
    grid = np.linspace(-9, 11, 200_001)
    density = 0.5 * (np.exp(-grid**2 / 2) + np.exp(-((grid - 2) ** 2) / 2)) / np.sqrt(2 * np.pi)
    truth = -np.sum(density * np.log(density)) * (grid[1] - grid[0]) - 0.5 * np.log(2 * np.pi * np.e)
    assert mutual_information(t, labels, estimator="ksg") == pytest.approx(truth, rel=0.1)
    assert mutual_information(labels, t, estimator="ksg") == pytest.approx(truth, rel=0.1)  # order does not matter
    # the Gaussian estimate of a two-bump mixture is an approximation: right order of magnitude
    assert mutual_information(t, labels, estimator="gaussian") == pytest.approx(truth, rel=0.2)


def label_entropy(labels) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_gaussian_is_unbiased_for_independent_samples():
    """Uncorrected log-determinants gave 0.12 nats for I(a;b) and 0.065 for I(a;labels) here."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        a, b, labels = rng.standard_normal((1000, 64)), rng.standard_normal((1000, 64)), rng.integers(0, 2, 1000)
        assert abs(mutual_information(a, b, estimator="gaussian", components=16)) < 0.05
        assert 0 <= mutual_information(a, labels, estimator="gaussian", components=16) < 0.05


def test_gaussian_recovers_the_closed_form_without_small_sample_bias():
    """-½ Σ log(1 - ρ²) for 16 pairs with ρ = 0.5 at m = 500: the plug-in estimate was 12 % high."""
    a, b, truth = correlated_pairs(4000, [0.6, 0.8, 0.3, 0.9])
    assert mutual_information(a, b, estimator="gaussian") == pytest.approx(truth, rel=0.05)
    samples = [correlated_pairs(500, [0.5] * 16, seed=seed) for seed in range(10)]
    estimates = [mutual_information(a, b, estimator="gaussian") for a, b, _ in samples]
    assert np.mean(estimates) == pytest.approx(samples[0][2], rel=0.05)


def test_gaussian_label_mi_stays_within_zero_and_the_label_entropy():
    """Two classes 6σ apart: the Gaussian formula gives 1.16 nats, above H(Y) = ln 2; the truth is 0.689."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    t = 6.0 * labels + rng.standard_normal(4000)
    estimate = mutual_information(t, labels, estimator="gaussian")
    assert estimate == pytest.approx(label_entropy(labels), abs=1e-12)
    assert estimate == pytest.approx(0.689, abs=0.01)
    three = rng.integers(0, 3, 600)
    t = rng.standard_normal((600, 5)) + three[:, None] * 9.0
    assert 0 <= mutual_information(t, three, estimator="gaussian") <= label_entropy(three)


def test_gaussian_tiny_classes_are_reduced_or_undefined():
    """A class of 20 rows cannot estimate a covariance in 32 dimensions (the ridge gave 3.7 nats)."""
    rng = np.random.default_rng(2)
    labels = np.zeros(400, dtype=int)
    labels[:20] = 1
    with pytest.warns(UserWarning, match="class 1 has 20 row.*reduced to its 19 leading principal components instead of 32"):
        estimate = mutual_information(rng.standard_normal((400, 64)), labels, estimator="gaussian")
    assert 0 <= estimate <= label_entropy(labels)
    labels = np.zeros(50, dtype=int)
    labels[7] = 1
    with pytest.warns(UserWarning, match="undefined \\(NaN\\): class 1 has 1 row"):
        assert np.isnan(mutual_information(rng.standard_normal((50, 4)), labels, estimator="gaussian"))


def test_gaussian_joint_is_reduced_to_what_the_rows_support():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((40, 64))
    with pytest.warns(UserWarning, match="at most 39 dimensions; a and b are reduced to their 20 and 19 leading"):
        estimate = mutual_information(a, a[:, :32] + rng.standard_normal((40, 32)), estimator="gaussian")
    assert np.isfinite(estimate)
    with pytest.warns(UserWarning, match="2 rows are too few"):
        assert np.isnan(mutual_information([0.5, 1.5], [0.3, 1.7], estimator="gaussian"))


def test_gaussian_self_information_is_infinite():
    """I(X;X) of a continuous X is infinite; the ridge made it 16 nats here and 173 on a plane."""
    x = np.random.default_rng(0).standard_normal((60, 3))
    assert mutual_information(x, x, estimator="gaussian") == np.inf
    assert mutual_information(x, x @ np.array([[2.0, 1, 0], [0, 1, 0], [1, 0, 3]]) + 5, estimator="gaussian") == np.inf
    plane = information_plane(*plane_data(), estimator="gaussian", x_layer=1)
    assert plane["i_xt"][1] == np.inf and np.isfinite(plane["i_xt"].drop(index=1)).all()


def test_normalised_hsic_range():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 3))
    assert mutual_information(x, x, estimator="hsic") == pytest.approx(1.0)
    assert mutual_information(x, rng.standard_normal((200, 2)), estimator="hsic") < 0.05
    assert mutual_information(x, np.ones(200), estimator="hsic") == 0.0
    assert mutual_information(x, x[:, :1] ** 2, estimator="hsic") > 0.1  # a dependence with no correlation


def plane_data(n_layers=4, n=60, hidden=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.5).long()
    acts = torch.randn(n_layers, n, hidden, generator=g) * 3 + 1
    acts[2] += labels[:, None] * 4.0
    return acts, labels.numpy()


def test_batched_plane_equals_pairwise_estimates(monkeypatch):
    acts, labels = plane_data()
    rows = np.arange(10, 50)
    plane = information_plane(acts, labels, rows=rows, x_layer=1, layers=[3, 1, 5, 7])
    acts64 = acts.double()
    z = (acts64 - acts64.mean(1, keepdim=True)) / acts64.std(1, keepdim=True)
    for i in range(4):
        t = z[i, rows].numpy()
        assert plane["i_xt"][i] == pytest.approx(reference_nhsic(z[1, rows].numpy(), t), rel=1e-8)
        assert plane["i_ty"][i] == pytest.approx(reference_nhsic(labels[rows, None].astype(float), t), rel=1e-8)
    assert list(plane["layer"]) == [3, 1, 5, 7] and (plane["n"] == 40).all()
    monkeypatch.setattr(info, "CHUNK_BYTES", 1)  # one layer per chunk: same numbers
    pd.testing.assert_frame_equal(information_plane(acts, labels, rows=rows, x_layer=1, layers=[3, 1, 5, 7]), plane)


def test_plane_survives_an_explicit_thread_count():
    """torch 2.13's batched CPU inverse fails once set_num_threads(>=2) was called (MKL); the
    operator inverts one matrix at a time there and gives the batched answer."""
    threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 400, 16, generator=generator, dtype=torch.float64)
    labels = np.arange(400) % 2
    try:
        torch.set_num_threads(2)
        plane = information_plane(acts, labels, rows=np.arange(400))
    finally:
        torch.set_num_threads(threads)
    assert np.isfinite(plane["i_ty"]).all()
    one_by_one = [float(info.nhsic_operator(acts[i]).trace()) for i in range(3)]
    assert info.nhsic_operator(acts).diagonal(dim1=-2, dim2=-1).sum(-1).tolist() == pytest.approx(one_by_one, rel=1e-12)


def test_plane_defaults_to_the_paper_training_rows_and_finds_the_signal():
    acts, labels = plane_data(n=50)
    for estimator in ("nhsic", "hsic", "gaussian", "ksg"):
        plane = information_plane(acts, labels, estimator=estimator)
        assert (plane["n"] == 40).all() and (plane["estimator"] == estimator).all()
        assert plane["i_ty"].idxmax() == 2, estimator
        assert plane["i_xt"].idxmax() == 0, estimator  # X is layer 0 itself
    hsic = information_plane(acts, labels, estimator="hsic")
    layer = acts[2].double()
    expected = mutual_information(((layer - layer.mean(0)) / layer.std(0))[:40].numpy(), labels[:40], estimator="hsic")
    assert hsic["i_ty"][2] == pytest.approx(expected, rel=1e-9)


def test_plane_bad_input():
    acts, labels = plane_data()
    with pytest.raises(LayerError, match="x_layer 9 is not among the layers 0..3"):
        information_plane(acts, labels, x_layer=9)
    with pytest.raises(ProbeError, match="unknown estimator 'mine'"):
        information_plane(acts, labels, estimator="mine")
    with pytest.raises(ProbeError, match="row 60 is outside the 60 rows"):
        information_plane(acts, labels, rows=[0, 1, 60])
    with pytest.raises(ProbeError, match="59 labels for 60 rows"):
        information_plane(acts, labels[:-1])
    acts[3, 0, 0] = float("inf")
    with pytest.raises(ProbeError, match="layer 3 contain NaN or inf"):
        information_plane(acts, labels)


def test_mutual_information_bad_input():
    with pytest.raises(ProbeError, match="a has 5 rows, b has 4"):
        mutual_information(np.ones((5, 2)), np.ones(4))
    with pytest.raises(ProbeError, match="unknown option\\(s\\) bandwidth"):
        mutual_information(np.ones((5, 2)), np.ones(5), estimator="gaussian", bandwidth=2)
    with pytest.raises(ProbeError, match="unknown option\\(s\\) ridge"):
        mutual_information(np.ones((5, 2)), np.ones(5), estimator="gaussian", ridge=1e-5)
    with pytest.raises(ProbeError, match="b contains NaN"):
        mutual_information(np.ones((5, 2)), np.array([1, 2, np.nan, 3, 4]))
    for estimator, option in (("gaussian", "components"), ("ksg", "components"), ("ksg", "k")):
        with pytest.raises(ProbeError, match=f"option {option} .* must be a positive integer, got 0"):
            mutual_information(np.random.rand(9, 2), np.random.rand(9), estimator=estimator, **{option: 0})


def test_turning_points():
    steps = [0, 10, 20, 30, 40, 50, 60]
    series = {
        0: [1, 2, 3, 5, 3, 2, 1],  # a rise then a fall well beyond the noise
        1: [1, 2, 3, 4, 5, 6, 7],
        2: [1.0, 1.2, 0.9, 1.25, 1.1, 0.95, 1.05],  # flat and noisy: an inside peak, but no fall
        3: [5, 5, 1, 0, 0, 0, 0],
    }
    table = pd.DataFrame([
        {"step": step, "layer": layer, "i_xt": value} for layer, values in series.items() for step, value in zip(steps, values)
    ]).sample(frac=1, random_state=0)
    points = turning_points(table).set_index("layer")
    assert points.loc[0, "peak_step"] == 30 and bool(points.loc[0, "interior"]) and points.loc[0, "fall"] == 4
    assert points.loc[0, "noise"] == pytest.approx(1.4826 / np.sqrt(6))  # second differences 0, 1, -4, 1, 0
    assert points.loc[1, "peak_step"] == 60 and not points.loc[1, "interior"]
    assert points.loc[2, "peak_step"] == 30 and not points.loc[2, "interior"] and points.loc[2, "fall"] == pytest.approx(0.2)
    assert points.loc[3, "peak_step"] == 0 and not points.loc[3, "interior"]  # tie: earliest step
    assert points.loc[0, "peak_i_xt"] == 5
    few = turning_points(table[table["step"] <= 30]).set_index("layer")  # 4 checkpoints cannot tell a fall from noise
    assert few["noise"].isna().all() and not few["interior"].any()
    unbounded = pd.concat([table, pd.DataFrame({"step": [0, 10], "layer": [9, 9], "i_xt": [np.inf, np.inf]})])
    assert 9 not in set(turning_points(unbounded)["layer"])  # I(X;X) = inf has no peak
    with pytest.raises(ProbeError, match="lacks column\\(s\\) step"):
        turning_points(table.drop(columns="step"))
    with pytest.raises(ProbeError, match="2 rows of layer 0 at step 0: pass the rows of one series"):
        turning_points(pd.concat([table, table.assign(i_xt=0.0)]))  # two settings' rows, say: never one series


def test_a_dip_on_a_plateau_is_no_fall_beyond_noise():
    """Where most second differences are 0 their median deviation is 0 too: any dip would pass."""
    steps = list(range(0, 1200, 100))
    series = {
        0: [1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5 - 1e-9],  # saturates, then a rounding dip
        1: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 10.999],  # rises straight, the last value a little lower
        2: [0.98, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.99999],  # HSIC-like saturation
    }
    table = pd.DataFrame([{"step": s, "layer": layer, "i_xt": v} for layer, values in series.items() for s, v in zip(steps, values)])
    points = turning_points(table)
    assert (points["noise"] > 0).all() and not points["interior"].any()


def test_a_flat_or_rising_noisy_series_rarely_counts_as_a_rise_then_fall():
    """The audit found 60-100 % of layers marked as rise-then-fall when the true I(X;T) was flat
    or only rose; with the noise test, a few percent, while a real fall is still found."""
    rng = np.random.default_rng(0)
    steps = np.arange(12)
    shapes = {"flat": np.zeros(12), "rising": 10 * (1 - np.exp(-(steps + 1) / 2.4)), "fall": 8 * np.sin(np.pi * steps / 11)}
    rates = {}
    for name, shape in shapes.items():
        table = pd.DataFrame([
            {"step": step, "layer": layer, "i_xt": value}
            for layer in range(300) for step, value in zip(steps, shape + rng.standard_normal(12))
        ])
        rates[name] = turning_points(table)["interior"].mean()
    assert rates["flat"] < 0.08 and rates["rising"] < 0.08 and rates["fall"] > 0.9


def test_caveat_is_stated():
    assert "estimator" in ESTIMATOR_CAVEAT and "compression" in ESTIMATOR_CAVEAT
    assert "ESTIMATOR_CAVEAT" in info.__doc__


@pytest.mark.parametrize("estimator, copies", [("nhsic", 1), ("gaussian", 1), ("ksg", 5)])
def test_a_layer_s_estimate_does_not_depend_on_the_layers_estimated_with_it(estimator, copies):
    acts, labels = plane_data(n=50)
    rows = np.arange(50) // copies  # ksg on rows in fives: which tie its jitter breaks first matters
    acts, labels = acts[:, rows], labels[rows]
    full = information_plane(acts, labels, estimator=estimator, layers=[0, 1, 2, 3], x_layer=1)
    part = information_plane(acts[[1, 3]], labels, estimator=estimator, layers=[1, 3], x_layer=1)
    np.testing.assert_allclose(part[["i_xt", "i_ty"]].to_numpy(), full.iloc[[1, 3]][["i_xt", "i_ty"]].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("estimator", ["nhsic", "hsic", "gaussian", "ksg"])
def test_a_plane_built_from_one_reference_chunk_by_chunk_equals_the_whole(estimator):
    acts, labels = plane_data(n=50)
    rows = np.arange(0, 50, 2)
    whole = information_plane(acts, labels, estimator=estimator, x_layer=2, rows=rows, layers=[0, 1, 2, 3])
    reference = info.plane_reference(acts[2], labels, estimator=estimator, x_layer=2, rows=rows)
    chunks = pd.concat([info.plane_layers(reference, acts[[0, 1]], [0, 1]), info.plane_layers(reference, acts[[2, 3]], [2, 3])])
    np.testing.assert_allclose(chunks[["i_xt", "i_ty"]].to_numpy(), whole[["i_xt", "i_ty"]].to_numpy(), rtol=1e-12)
    assert (chunks["n"] == len(rows)).all()
    with pytest.raises(ProbeError, match="40 rows for a reference of 50"):
        info.plane_layers(reference, acts[:, :40])
    with pytest.raises(ProbeError, match=r"tensor \[n, hidden\]"):
        info.plane_reference(acts, labels)


def test_the_kernel_memory_check_counts_a_chunk_s_states(monkeypatch):
    acts, labels = plane_data(n_layers=4, n=50, hidden=40)
    reference = info.plane_reference(acts[0], labels, rows=np.arange(50))
    kernels = (info.KERNEL_MATRICES + info.REFERENCE_MATRICES) * 50 * 50 * 8
    monkeypatch.setattr(info, "free_memory", lambda device: kernels + 4 * 50 * 40 * 8 - 1)  # one byte short
    with pytest.raises(ProbeError, match="and the layers’ standardised rows"):
        info.plane_layers(reference, acts)
    info.plane_layers(reference, acts[:3])  # three layers fit


@pytest.mark.parametrize("estimator", ["nhsic", "hsic", "gaussian", "ksg"])
def test_the_shuffled_baseline_is_i_ty_with_the_labels_permuted(estimator):
    """i_ty_shuffled is the estimator's I(T;Y) on the same rows with the labels in a seeded order."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 120)
    acts = torch.tensor(rng.normal(size=(3, 120, 24)) + 2.0 * labels[None, :, None] * (np.arange(24) < 2), dtype=torch.float32)
    plane = information_plane(acts, labels, estimator=estimator, rows=range(120), seed=5)
    permuted = information_plane(acts, info.shuffled_labels(labels, 5), estimator=estimator, rows=range(120), seed=5)
    np.testing.assert_allclose(plane["i_ty_shuffled"], permuted["i_ty"], rtol=1e-12)
    np.testing.assert_allclose(plane["i_xt"], permuted["i_xt"], rtol=1e-12)
    other_seed = information_plane(acts, labels, estimator=estimator, rows=range(120), seed=6)
    np.testing.assert_allclose(other_seed["i_ty"], plane["i_ty"], rtol=1e-12)
    assert not np.allclose(other_seed["i_ty_shuffled"], plane["i_ty_shuffled"])


def test_shuffled_labels_keep_the_class_counts_and_are_seeded():
    labels = np.array([0] * 30 + [1] * 10)
    shuffled = info.shuffled_labels(labels, 0)
    assert np.bincount(shuffled).tolist() == [30, 10] and not np.array_equal(shuffled, labels)
    assert np.array_equal(info.shuffled_labels(labels, 0), shuffled)
    assert not np.array_equal(info.shuffled_labels(labels, 1), shuffled)


def test_the_shuffled_baseline_exposes_a_saturated_gaussian_estimate():
    """Heavy-tailed states with unrelated labels: the Gaussian estimate reads H(Y), and so does its
    baseline; states that carry the label read well above theirs."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    entropy = info.label_entropy(np.bincount(labels))
    heavy_states = torch.tensor(rng.standard_t(1.2, size=(2, 400, 64)), dtype=torch.float32)
    heavy = information_plane(heavy_states, labels, estimator="gaussian", rows=range(400))
    np.testing.assert_allclose(heavy["i_ty"], entropy, rtol=1e-6)
    np.testing.assert_allclose(heavy["i_ty_shuffled"], entropy, rtol=1e-6)
    states = rng.normal(size=(2, 400, 64))
    states[:, :, 0] += 3 * labels
    for estimator in ("gaussian", "nhsic"):
        plane = information_plane(torch.tensor(states, dtype=torch.float32), labels, estimator=estimator, rows=range(400))
        assert (plane["i_ty"] > plane["i_ty_shuffled"] + 0.1).all(), plane


def test_the_shuffled_estimate_does_not_repeat_the_warnings_of_the_real_one():
    import warnings

    rng = np.random.default_rng(0)
    labels = np.array([0] * 16 + [1] * 24)
    acts = torch.tensor(rng.normal(size=(3, 40, 40)), dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plane = information_plane(acts, labels, estimator="gaussian", rows=range(40))
    reduced = [w for w in caught if "T is reduced to its 15 leading principal components" in str(w.message)]
    assert len(reduced) == 3  # one per layer, for the real labels
    assert plane["i_ty_shuffled"].notna().all()
