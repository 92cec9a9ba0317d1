"""tlpipe.stats on constructed predictions whose answers are known."""

import numpy as np
import pytest

from tlpipe.stats import (
    binomial_interval, calibration, fit_temperature, mcnemar_p, median_run, noise_margin, paired_difference,
    repeat_summary, scale_temperature, verdict_line,
)

RNG = np.random.default_rng(0)
CORRECT = RNG.random(300) < 0.8


def test_identical_predictions_give_p_1_and_an_interval_around_0():
    assert mcnemar_p(CORRECT, CORRECT) == 1.0
    difference, low, high = paired_difference(CORRECT, CORRECT)
    assert difference == 0 and low <= 0 <= high


def test_a_large_one_sided_difference_is_significant_and_its_interval_excludes_0():
    better = CORRECT.copy()
    better[np.flatnonzero(~CORRECT)[:40]] = True  # 40 images only the first classifier gets right
    assert mcnemar_p(better, CORRECT) < 0.01
    difference, low, high = paired_difference(better, CORRECT)
    assert difference == pytest.approx(40 / 300)
    assert 0 < low < difference < high


def test_mcnemar_counts_only_discordant_pairs():
    # 16 vs 8 discordant images (the hand computation on the committed default): p = 0.15.
    a = np.array([True] * 16 + [False] * 8 + [True] * 200)
    b = np.array([False] * 16 + [True] * 8 + [True] * 200)
    assert mcnemar_p(a, b) == pytest.approx(0.152, abs=0.001)


def test_a_perfectly_calibrated_toy_has_ece_0():
    # Every image predicted with confidence 0.8, and 80% of them right.
    probabilities = np.tile([0.8, 0.2], (1000, 1))
    labels = np.array([0] * 800 + [1] * 200)
    result = calibration(labels, probabilities)
    assert result["ece"] == pytest.approx(0, abs=1e-9)
    assert result["bins"] == {"confidence": [0.8], "accuracy": [0.8], "count": [1000]}


def test_labels_drawn_from_the_predicted_probabilities_are_nearly_calibrated_and_overconfidence_is_not():
    probabilities = RNG.dirichlet([0.5, 0.5, 0.5], size=20_000)
    labels = np.array([RNG.choice(3, p=row) for row in probabilities])
    assert calibration(labels, probabilities)["ece"] < 0.02
    overconfident = scale_temperature(probabilities, 0.5)
    assert calibration(labels, overconfident)["ece"] > 0.05
    # Temperature scaling undoes the sharpening: T close to 0.5's inverse recovers the calibrated model.
    temperature = fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert calibration(labels, scale_temperature(overconfident, temperature))["ece"] < 0.02


def test_brier_and_log_loss_of_certain_right_answers_are_0():
    result = calibration(np.array([0, 1, 2]), np.eye(3))
    assert result["brier"] == 0 and result["log_loss"] == pytest.approx(0, abs=1e-9) and result["ece"] == 0


def test_repeat_summary_gives_mean_std_and_t_interval():
    summary = repeat_summary([0.80, 0.82, 0.84])
    assert summary["mean"] == pytest.approx(0.82) and summary["std"] == pytest.approx(0.02)
    # t(0.975, 2 df) = 4.303: the mean ± 4.303 · 0.02 / √3
    assert summary["low"] == pytest.approx(0.82 - 4.303 * 0.02 / 3**0.5, abs=1e-4)
    assert repeat_summary([0.8, 0.8])["low"] == repeat_summary([0.8, 0.8])["high"] == 0.8
    assert repeat_summary([0.8]) == {"mean": 0.8, "std": None, "low": None, "high": None, "runs": 1}


def test_the_saved_run_is_the_median_validation_loss():
    assert median_run([0.5, 0.3, 0.4]) == 2
    assert median_run([0.5, 0.3, 0.4, 0.2]) == 1  # the lower middle of 0.2, 0.3, 0.4, 0.5
    assert median_run([0.7]) == 0


def test_binomial_interval_contains_the_rate_and_narrows_with_more_images():
    low, high = binomial_interval(80, 100)
    wide = high - low
    assert low < 0.8 < high
    low, high = binomial_interval(800, 1000)
    assert high - low < wide / 3


def test_noise_margin_grows_with_repeat_spread():
    sampling_only = noise_margin(0.8, None, 300, 0.8, None, 300)
    assert sampling_only == pytest.approx(1.96 * (2 * 0.8 * 0.2 / 300) ** 0.5, rel=1e-3)
    assert noise_margin(0.8, 0.02, 300, 0.8, 0.02, 300) > sampling_only


def test_the_verdict_never_claims_what_the_test_does_not_show():
    line = verdict_line(0.843, 0.817, (-0.006, 0.058), 0.152, 0.06, 312, 15.7)
    assert line == (
        "Flatten ahead by 2.6 points, 84.3% vs 81.7% (95% CI of Flatten − GAP −0.6 to +5.8 points; McNemar p = 0.15): "
        "no significant difference on 312 test images; Flatten has 15.7× GAP's head parameters."
    )
    assert "win" not in line
    significant = verdict_line(0.70, 0.85, (-0.2, -0.1), 0.0001, 0.06, 312, 15.7)
    assert significant.startswith("GAP ahead by 15.0 points") and "McNemar p < 0.001): significant on 312 test images, beyond" in significant
    within_repeats = verdict_line(0.85, 0.80, (0.01, 0.09), 0.03, 0.08, 312, 15.7)
    assert "but within the noise of retraining (±8.0 points)" in within_repeats
    assert verdict_line(0.8, 0.8, (-0.01, 0.01), 1.0, 0.06, 312, 1.0).startswith("Flatten and GAP level on test accuracy, 80.0%")
