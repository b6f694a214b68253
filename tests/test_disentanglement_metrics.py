"""vaelab's own disentanglement metrics on constructed cases whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vaelab.disentanglement import (
    dci,
    entropy,
    factorvae_score,
    fit_stumps,
    mig,
    mutual_info,
    sap,
    score_all,
)
from vaelab.disentanglement.binning import equal_width_bins
from vaelab.errors import VaelabError

SIZES = (3, 6, 8, 8)  # shape (categorical), then three ordinal factors
CATEGORICAL = [True, False, False, False]
NAMES = ["shape", "scale", "x", "y"]
LOG2 = math.log(2)


def _grid(sizes: tuple[int, ...] = SIZES) -> np.ndarray:
    """Every combination of factor values: (prod(sizes), F) int64."""
    return np.array(list(itertools.product(*map(range, sizes))), dtype=np.int64)


def _permuted_rescaled(factors: np.ndarray) -> np.ndarray:
    """Codes that are the factors up to column order, sign, scale and shift."""
    scale = np.array([-2.0, 0.5, 3.0, -0.7])
    shift = np.array([1.0, -3.0, 0.2, 7.0])
    return factors[:, [2, 0, 3, 1]] * scale + shift


def _noise(n: int, dims: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dims))


@pytest.fixture(scope="module")
def grid() -> np.ndarray:
    return _grid()


@pytest.fixture(scope="module")
def mixed() -> tuple[np.ndarray, np.ndarray]:
    """Factors a, b uniform on {0, 1} (full grid, 50 copies) and codes z1 = a, z2 = a + b."""
    factors = np.tile(_grid((2, 2)), (50, 1))
    codes = np.stack([factors[:, 0], factors[:, 0] + factors[:, 1]], axis=1).astype(float)
    return codes, factors


# --- mutual information ---------------------------------------------------------------------


def test_mutual_info_matches_a_hand_computed_table():
    # joint counts [[2, 1], [0, 1]] over 4 samples, labels deliberately not 0..K-1
    a = np.array([5, 5, 5, 9])
    b = np.array([-1, -1, 3, 3])
    # p(a) = (3/4, 1/4), p(b) = (1/2, 1/2)
    expected = (
        0.5 * math.log(0.5 / (0.75 * 0.5))
        + 0.25 * math.log(0.25 / (0.75 * 0.5))
        + 0.25 * math.log(0.25 / (0.25 * 0.5))
    )
    assert mutual_info(a, b) == pytest.approx(expected, abs=1e-15)
    assert entropy(a) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert entropy(b) == pytest.approx(LOG2)


@pytest.mark.parametrize("seed", range(5))
def test_mutual_info_is_symmetric_and_at_most_either_entropy(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=300)
    b = (a + rng.integers(0, 3, size=300)) % 5  # dependent on a, but not a function of it
    assert mutual_info(a, b) == mutual_info(b, a)
    assert 0 < mutual_info(a, b) <= min(entropy(a), entropy(b)) + 1e-12
    assert mutual_info(a, a) == entropy(a)  # exact: the same terms, summed exactly


def test_independent_factors_on_a_full_grid_have_exactly_zero_information(grid):
    assert mutual_info(grid[:, 1], grid[:, 2]) == 0.0


@pytest.mark.parametrize("count", range(2, 21))
def test_evenly_spaced_values_land_in_distinct_bins(count):
    rng = np.random.default_rng(count)
    for _ in range(20):
        scale = rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 3)
        values = np.arange(count) * scale + rng.uniform(-1e4, 1e4)
        binned = equal_width_bins(values[:, None], 20)[:, 0]
        assert len(np.unique(binned)) == count
        assert binned.min() == 0 and binned.max() == 19


def test_a_constant_code_goes_to_one_bin():
    assert (equal_width_bins(np.full((5, 1), 3.5), 20) == 0).all()


# --- MIG ------------------------------------------------------------------------------------


def test_mig_is_one_for_codes_equal_to_the_factors(grid):
    for codes in (grid.astype(float), _permuted_rescaled(grid)):
        result = mig(codes, grid, names=NAMES)
        assert result.score == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(result.per_factor, 1.0, atol=1e-12)
    assert list(result.top_code) == [1, 3, 0, 2]  # where the permutation put each factor


def test_mig_of_a_code_mixing_two_factors_by_hand(mixed):
    codes, factors = mixed
    result = mig(codes, factors)
    # I(z1; a) = log 2, I(z1; b) = 0; z2 = a + b in {0, 1, 2} w.p. (1/4, 1/2, 1/4):
    # I(z2; a) = H(z2) - H(z2 | a) = 1.5 log 2 - log 2 = 0.5 log 2, and the same for b
    expected = np.array([[1.0, 0.0], [0.5, 0.5]]) * LOG2
    np.testing.assert_allclose(result.mutual_info, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(result.factor_entropy, [LOG2, LOG2])
    # gaps: a: (log 2 - 0.5 log 2) / log 2, b: (0.5 log 2 - 0) / log 2
    np.testing.assert_allclose(result.per_factor, [0.5, 0.5], atol=1e-15)
    assert result.score == pytest.approx(0.5, abs=1e-15)


def test_mig_is_near_zero_for_noise(grid):
    assert mig(_noise(len(grid)), grid).score < 0.05


# --- DCI ------------------------------------------------------------------------------------


def test_dci_of_codes_equal_to_the_factors(grid):
    for codes in (grid.astype(float), _permuted_rescaled(grid)):
        result = dci(codes, grid)
        assert result.disentanglement == pytest.approx(1.0, abs=1e-12)
        assert result.completeness == pytest.approx(1.0, abs=1e-12)
        assert result.informativeness == 1.0
        np.testing.assert_allclose(result.importance.sum(axis=0), 1.0)
    assert list(np.argmax(result.importance, axis=0)) == [1, 3, 0, 2]


def test_dci_of_noise_is_small_and_near_chance(grid):
    result = dci(_noise(len(grid)), grid)
    chance = np.mean([1 / size for size in SIZES])  # 0.1875
    assert result.disentanglement < 0.2
    assert result.informativeness < chance + 0.07


def test_dci_accepts_a_held_out_set(grid):
    codes = grid.astype(float)
    result = dci(codes[::2], grid[::2], test=(codes[1::2], grid[1::2]))
    assert result.settings["train_samples"] == result.settings["test_samples"] == len(grid) // 2
    assert result.settings["split"] == "given"
    assert result.disentanglement > 0.99


# --- SAP ------------------------------------------------------------------------------------


def test_sap_is_high_for_codes_equal_to_the_factors(grid):
    for codes in (grid.astype(float), _permuted_rescaled(grid)):
        result = sap(codes, grid, CATEGORICAL)
        assert result.score > 0.99
        assert ((result.matrix >= 0) & (result.matrix <= 1)).all()


def test_sap_of_the_mixing_code_by_hand(mixed):
    codes, factors = mixed
    # on the full grid corr(z2, a)^2 = cov(a, a+b)^2 / (var a var(a+b)) = (1/4)^2 / (1/4 * 1/2)
    # = 1/2, likewise for b, so both gaps are 1/2; train on the full grid to make this exact
    result = sap(codes, factors, [False, False], test=(codes, factors))
    np.testing.assert_allclose(result.matrix, [[1.0, 0.0], [0.5, 0.5]], atol=1e-12)
    assert result.score == pytest.approx(0.5, abs=1e-12)
    # as categorical factors: z1 tells a exactly; z2 = 0 or 2 tells a (and b), z2 = 1 is a tie
    # that goes to class 0: recalls 1 and 1/2, balanced accuracy 3/4, chance-corrected 1/2
    result = sap(codes, factors, [True, True], test=(codes, factors))
    np.testing.assert_allclose(result.matrix, [[1.0, 0.0], [0.5, 0.5]], atol=1e-12)


def test_sap_is_near_zero_for_noise(grid):
    assert sap(_noise(len(grid)), grid, CATEGORICAL).score < 0.05


# --- FactorVAE score ------------------------------------------------------------------------


def test_factorvae_score_is_one_for_codes_equal_to_the_factors(grid):
    for codes in (grid.astype(float), _permuted_rescaled(grid)):
        result = factorvae_score(codes, grid, n_train=2000, n_eval=1000)
        assert result.score == 1.0
        assert result.train_accuracy == 1.0
    assert list(result.assignment) == [2, 0, 3, 1]


def test_factorvae_score_of_the_mixing_code_by_hand(mixed):
    codes, factors = mixed
    result = factorvae_score(codes, factors, n_train=1000, n_eval=500)
    # fixing a makes z1 constant: vote z1; fixing b leaves z1 = a and z2 = a + b varying alike,
    # and z2 has twice the overall variance, so its scaled variance is half: vote z2
    assert result.votes[0, 1] == result.votes[1, 0] == 0
    assert list(result.assignment) == [0, 1]
    assert result.score == 1.0  # a perfect score although z2 mixes both factors


def test_factorvae_score_of_noise_is_near_chance(grid):
    result = factorvae_score(_noise(len(grid)), grid, n_train=3000, n_eval=2000)
    # chance is 1/F = 0.25; with only 1152 fixed noise codes a value's rows have slightly
    # uneven variances, which the classifier picks up (about 0.27 over seeds)
    assert 0.2 < result.score < 0.32


def test_factorvae_score_of_collapsed_codes_is_zero_with_a_note(grid):
    result = factorvae_score(1e-3 * _noise(len(grid)), grid)
    assert result.score == 0.0
    assert not result.active.any()
    assert "std < 0.05" in result.settings["note"]


def test_factorvae_score_leaves_out_collapsed_dimensions(grid):
    codes = np.concatenate([1e-3 * _noise(len(grid), 2), grid.astype(float)], axis=1)
    result = factorvae_score(codes, grid, n_train=1000, n_eval=500)
    assert list(result.active) == [False, False, True, True, True, True]
    assert list(result.assignment) == [-1, -1, 0, 1, 2, 3]
    assert result.score == 1.0


# --- all metrics: determinism, row order, reporting -----------------------------------------


def _assert_same(first, second):
    for key, value in vars(first).items():
        np.testing.assert_array_equal(value, getattr(second, key), err_msg=key)


def test_same_seed_same_results(grid):
    codes = grid + 0.5 * _noise(len(grid), 4)
    first = score_all(codes, grid, CATEGORICAL, names=NAMES, seed=3)
    second = score_all(codes, grid, CATEGORICAL, names=NAMES, seed=3)
    for key in first:
        _assert_same(first[key], second[key])
    other = factorvae_score(codes, grid, seed=4)
    assert not np.array_equal(other.votes, first["factorvae"].votes)


def test_results_do_not_depend_on_row_order(grid):
    codes = grid + 0.5 * _noise(len(grid), 4)
    shuffle = np.random.default_rng(7).permutation(len(grid))
    for metric in (
        lambda c, f: mig(c, f),
        lambda c, f: sap(c, f, CATEGORICAL),
        lambda c, f: dci(c, f, rounds=20),
        lambda c, f: factorvae_score(c, f, n_train=500, n_eval=200),
    ):
        _assert_same(metric(codes, grid), metric(codes[shuffle], grid[shuffle]))


def test_score_all_reports_definitions_and_settings(grid):
    results = score_all(grid.astype(float), grid, CATEGORICAL, names=NAMES)
    assert list(results) == ["mig", "dci", "sap", "factorvae"]
    for result in results.values():
        assert 0 <= result.score <= 1
        assert "2018" in result.definition
        assert result.settings
    assert results["mig"].settings["bins"] == 20
    assert results["dci"].settings["train_samples"] == round(0.8 * len(grid))
    assert results["factorvae"].settings["batch_size"] == 64
    assert results["mig"].mutual_info.shape == results["sap"].matrix.shape == (4, 4)


# --- boosting -------------------------------------------------------------------------------


def test_boosting_fits_a_step_function_exactly():
    x = np.repeat(np.linspace(0, 1, 16), 10)[:, None]  # (160, 1)
    y = np.digitize(x[:, 0], [0.2, 0.5, 0.8])  # four classes
    model = fit_stumps(x, y, rounds=500)
    assert (model.predict(x) == y).all()
    np.testing.assert_allclose(model.decision_function(x), np.eye(4)[y], atol=1e-3)
    # the three steps, each at the midpoint between the grid values on either side of it
    ends = [(x[y == c, 0].max() + x[y == c + 1, 0].min()) / 2 for c in range(3)]
    np.testing.assert_allclose(sorted(set(model.threshold)), ends)


def test_boosting_gives_the_importance_to_the_informative_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5))
    y = (x[:, 3] > 0.3).astype(int) + 2 * (x[:, 3] > 1.0)
    model = fit_stumps(x, y)
    share = model.importance / model.importance.sum()
    assert share[3] > 0.99
    assert (model.predict(x) == y).mean() > 0.97


def test_boosting_keeps_the_original_class_labels():
    x = np.arange(6.0)[:, None]
    model = fit_stumps(x, np.array([7, 7, 7, -2, -2, -2]))
    assert list(model.predict(x)) == [7, 7, 7, -2, -2, -2]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "factors", "message"),
    [
        (np.zeros((10, 2)), np.zeros((9, 1), dtype=int), "10 rows but factors have 9"),
        (np.zeros(10), np.zeros((10, 1), dtype=int), "2-D"),
        (np.zeros((10, 2)), np.zeros((10, 1)), "integer"),
        (np.full((10, 2), np.nan), np.arange(10)[:, None] % 2, "NaN"),
        (np.zeros((10, 2)), np.zeros((10, 1), dtype=int), "'factor 0' takes a single value"),
        (np.zeros((1, 2)), np.zeros((1, 1), dtype=int), "at least 2 samples"),
        (np.zeros((10, 1)), np.arange(10)[:, None] % 2, "2 code dimensions"),
    ],
)
def test_mig_rejects_bad_input(codes, factors, message):
    with pytest.raises(VaelabError, match=message) as caught:
        mig(codes, factors)
    assert "\n" not in str(caught.value)


def test_bad_input_names_the_factor_and_metric(grid):
    factors = grid.copy()
    factors[:, 2] = 4
    with pytest.raises(VaelabError, match="FactorVAE score: factor 'x' takes a single value"):
        factorvae_score(grid.astype(float), factors, names=NAMES)
    with pytest.raises(VaelabError, match="categorical must hold one bool per factor"):
        sap(grid.astype(float), grid, [True, False])
    with pytest.raises(VaelabError, match="3 factor names for 4 factors"):
        dci(grid.astype(float), grid, names=NAMES[:3])
    with pytest.raises(VaelabError, match="same D"):
        dci(grid.astype(float), grid, test=(np.zeros((5, 3)), grid[:5]))
    with pytest.raises(VaelabError, match="at least 3 samples"):
        sap(np.zeros((2, 2)), np.array([[0], [1]]), [True])
    with pytest.raises(VaelabError, match="bins must be at least 2"):
        mig(grid.astype(float), grid, bins=1)
