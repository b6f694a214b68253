"""The latent-space measures on constructed cases whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.analysis.measures import (
    DEFINITIONS,
    decodability,
    frechet_distance,
    gap_fraction,
    interpolation_smoothness,
    median_nn_distance,
    nearest_distances,
)


def _pairs(n: int = 5, dim: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)


# --- decodability ---------------------------------------------------------------------------


def test_decodability_of_known_probabilities():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.95, 0.05], [0.9, 0.1]])
    scores = decodability(probs)
    assert scores.fraction == pytest.approx(0.75)  # 0.9 itself counts as recognised
    assert scores.confidence == pytest.approx((1 + 0.5 + 0.95 + 0.9) / 4)
    entropies = [
        0.0,
        math.log(2),
        -(0.95 * math.log(0.95) + 0.05 * math.log(0.05)),
        -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)),
    ]
    assert scores.entropy == pytest.approx(sum(entropies) / 4, rel=1e-6)


def test_decodability_extremes_and_threshold():
    uniform = torch.full((7, 10), 0.1)
    assert decodability(uniform).fraction == 0
    assert decodability(uniform).entropy == pytest.approx(math.log(10))
    assert decodability(torch.eye(10)).fraction == 1
    assert decodability(torch.eye(10)).entropy == 0
    assert decodability(uniform, threshold=0.1).fraction == 1


def test_decodability_rejects_empty_input():
    with pytest.raises(ValueError):
        decodability(torch.zeros(0, 10))


# --- gaps -----------------------------------------------------------------------------------


def test_two_far_clusters_leave_most_of_the_box_empty():
    generator = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [
            torch.randn(500, 2, generator=generator) * 0.1 - 10,
            torch.randn(500, 2, generator=generator) * 0.1 + 10,
        ]
    )
    low, high = codes.min(dim=0).values, codes.max(dim=0).values
    box = low + torch.rand(4000, 2, generator=generator) * (high - low)
    assert gap_fraction(codes, box) > 0.95


def test_a_regular_grid_has_no_gaps():
    axis = torch.linspace(0, 1, 30)
    codes = torch.cartesian_prod(axis, axis)  # spacing s: the median NN distance is s
    box = torch.rand(4000, 2, generator=torch.Generator().manual_seed(0))
    # No point of the square is farther than s / sqrt(2) from the nearest grid node.
    assert gap_fraction(codes, box) == 0


def test_a_uniform_random_cloud_scores_about_one_half():
    generator = torch.Generator().manual_seed(0)
    codes = torch.rand(3000, 2, generator=generator)
    box = torch.rand(4000, 2, generator=generator)
    # Poisson: P(no code within the median NN radius) = exp(-ln 2); edges push it up a little.
    assert 0.4 < gap_fraction(codes, box) < 0.6


def test_nearest_distances_exclude_only_the_point_itself():
    codes = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [10.0, 0.0]])
    own = nearest_distances(codes, codes, exclude_self=True)
    assert own.tolist() == pytest.approx([5.0, 0.0, 0.0, math.sqrt(65)])
    assert median_nn_distance(codes) == pytest.approx(0.0)  # torch's lower median of 4
    chunked = nearest_distances(codes, codes, exclude_self=True, chunk=1)
    assert torch.equal(own, chunked)
    assert nearest_distances(torch.tensor([[0.0, 1.0]]), codes).item() == pytest.approx(1.0)


def test_median_nn_distance_needs_two_codes():
    with pytest.raises(ValueError):
        median_nn_distance(torch.zeros(1, 2))


# --- interpolation smoothness ---------------------------------------------------------------


def test_a_constant_decoder_has_zero_jump():
    z_a, z_b = _pairs()
    image = torch.rand(1, 1, 4, 4)
    jumps = interpolation_smoothness(lambda z: image.expand(len(z), -1, -1, -1), z_a, z_b, 16)
    assert torch.equal(jumps, torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("steps", [2, 5, 16])
def test_a_linear_decoder_along_a_line_changes_evenly(steps):
    z_a, z_b = _pairs()
    weight = torch.randn(3, 12, generator=torch.Generator().manual_seed(1))
    jumps = interpolation_smoothness(lambda z: (z @ weight).view(-1, 3, 2, 2), z_a, z_b, steps)
    assert jumps.tolist() == pytest.approx([1 / (steps - 1)] * 5, rel=1e-5)  # float32 frames


def test_a_step_decoder_puts_the_whole_path_in_one_jump():
    z_a, z_b = torch.full((2, 1), -1.0), torch.full((2, 1), 1.0)
    step = lambda z: (z > 0.05).double().view(-1, 1, 1, 1)  # noqa: E731
    assert interpolation_smoothness(step, z_a, z_b, 8).tolist() == [1.0, 1.0]


def test_interpolation_checks_its_inputs():
    z_a, z_b = _pairs()
    with pytest.raises(ValueError):
        interpolation_smoothness(lambda z: z, z_a, z_b, 1)
    with pytest.raises(ValueError):
        interpolation_smoothness(lambda z: z, z_a, z_b[:, :2], 4)


# --- Frechet distance -----------------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero():
    feats = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_a_mean_shift_adds_its_squared_length():
    feats = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)).double()
    shift = torch.arange(8, dtype=torch.float64) / 4
    expected = float(shift.square().sum())
    assert frechet_distance(feats, feats + shift) == pytest.approx(expected, rel=1e-8)


def test_a_scaled_set_matches_the_closed_form():
    # S_b = 4 S_a: Tr(S_a + 4 S_a - 2 (4 S_a^2)^(1/2)) = Tr(S_a).
    feats = torch.randn(400, 6, generator=torch.Generator().manual_seed(0)).double()
    feats = feats - feats.mean(dim=0)  # so that scaling leaves the mean alone
    expected = float(torch.cov(feats.T).trace())
    assert frechet_distance(feats, 2 * feats) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_symmetric_and_checks_shapes():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 5, generator=generator), torch.rand(200, 5, generator=generator)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :4])
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_every_measure_has_a_one_sentence_definition():
    for name, text in DEFINITIONS.items():
        assert text and not text.endswith("."), name  # the report adds the full stop
