"""The statistics a verdict rests on: repeat spread, the paired comparison of two heads,
calibration, and the one rule that tells a real change from noise.

Pure functions of arrays and numbers (no files, no TensorFlow), on maintained
implementations: scipy.stats for the tests and intervals, scikit-learn for the scores.
"""

import numpy as np
from scipy import optimize, special
from scipy.stats import binomtest, bootstrap, norm, t

CONFIDENCE = 0.95
SIGNIFICANCE = 1 - CONFIDENCE
Z = float(norm.ppf(1 - SIGNIFICANCE / 2))  # 1.96
ECE_BINS = 15  # equal-width bins of the top-class probability, as in Guo et al. (2017)
BOOTSTRAP_SEED = 0

NOISE_RULE = (
    "A difference Δ is beyond the noise when |Δ| > 1.96·√(s₁² + s₂² + p₁(1−p₁)/n₁ + p₂(1−p₂)/n₂): "
    "s is the standard deviation over a side's training runs (0 for a single run), "
    "p(1−p)/n the binomial variance of a rate p on n test images."
)


def repeat_summary(values: list[float]) -> dict:
    """Mean, standard deviation and 95% t-interval of the mean over repeated runs (no spread from one run)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "std": None, "low": None, "high": None, "runs": len(values)}
    std = float(values.std(ddof=1))
    # t.interval gives NaN for a zero scale: identical runs have the mean as their interval.
    low, high = t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=std / np.sqrt(len(values))) if std else (mean, mean)
    return {"mean": mean, "std": std, "low": float(low), "high": float(high), "runs": len(values)}


def median_run(val_losses: list[float]) -> int:
    """Index of the run with the median validation loss (the lower middle one for an even count)."""
    return int(np.argsort(val_losses, kind="stable")[(len(val_losses) - 1) // 2])


def binomial_interval(correct: int, total: int) -> tuple[float, float]:
    """Wilson 95% interval of a rate of `correct` out of `total` test images."""
    interval = binomtest(correct, total).proportion_ci(CONFIDENCE, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact test: a two-sided binomial test on the discordant pairs of two classifiers
    judged on the same images (`correct_*`: one bool per image)."""
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    if a_only + b_only == 0:  # no discordant pair: nothing tells the two apart (binomtest needs n >= 1)
        return 1.0
    return float(binomtest(a_only, a_only + b_only).pvalue)


def _accuracy_difference(correct_a, correct_b, axis=-1):
    return np.mean(correct_a, axis=axis) - np.mean(correct_b, axis=axis)


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b on the same images, with its paired bootstrap 95% interval
    (images resampled with their pair of outcomes; percentile method, which stays defined when
    every resample gives the same difference)."""
    result = bootstrap(
        (correct_a.astype(float), correct_b.astype(float)), _accuracy_difference,
        paired=True, vectorized=True, confidence_level=CONFIDENCE, method="percentile", rng=seed,
    )
    interval = result.confidence_interval
    return float(_accuracy_difference(correct_a, correct_b)), float(interval.low), float(interval.high)


def calibration(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Expected calibration error (top-class probability, ECE_BINS equal-width bins), Brier score
    (summed over classes: 0 best, 2 worst) and log loss, with the bins of a reliability diagram."""
    from sklearn.metrics import brier_score_loss, log_loss  # here: the report stage needs none of it (0.15 s to import)

    classes = range(probabilities.shape[1])
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    counts, _ = np.histogram(confidence, edges)
    confidence_sums, _ = np.histogram(confidence, edges, weights=confidence)
    correct_sums, _ = np.histogram(confidence, edges, weights=correct)
    filled = counts > 0
    return {
        "ece": float(np.abs(correct_sums - confidence_sums).sum() / len(labels)),
        "brier": float(brier_score_loss(labels, probabilities, labels=classes)),
        "log_loss": float(log_loss(labels, probabilities, labels=classes)),
        "bins": {
            "confidence": (confidence_sums[filled] / counts[filled]).round(4).tolist(),
            "accuracy": (correct_sums[filled] / counts[filled]).round(4).tolist(),
            "count": counts[filled].tolist(),
        },
    }


def _log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    # The log of a softmax output is its logits up to a per-row constant, which softmax ignores.
    return np.log(np.clip(probabilities, np.finfo(np.float32).tiny, 1))


def scale_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    return special.softmax(_log_probabilities(probabilities) / temperature, axis=1)


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature T minimising the log loss of softmax(logits / T) on (labels, probabilities)."""
    from sklearn.metrics import log_loss  # here, as in calibration()

    classes = range(probabilities.shape[1])
    result = optimize.minimize_scalar(
        lambda log_t: log_loss(labels, scale_temperature(probabilities, np.exp(log_t)), labels=classes),
        bounds=(np.log(0.05), np.log(20)), method="bounded",
    )
    return float(np.exp(result.x))


def noise_margin(rate_a: float, std_a: float | None, n_a: int, rate_b: float, std_b: float | None, n_b: int) -> float:
    """The half-width of NOISE_RULE for a difference between two rates (std None: a single run, 0)."""
    variance = (std_a or 0) ** 2 + (std_b or 0) ** 2 + rate_a * (1 - rate_a) / n_a + rate_b * (1 - rate_b) / n_b
    return Z * float(np.sqrt(variance))


def _points(value: float) -> str:
    return f"{value * 100:+.1f}".replace("-", "−")


def verdict_line(
    flatten_accuracy: float, gap_accuracy: float, interval: tuple[float, float], p_value: float,
    margin: float, test_images: int, params_ratio: float,
) -> str:
    """What the paired comparison supports, in one sentence. "Significant" needs both McNemar's
    p < 0.05 and a difference beyond NOISE_RULE's `margin`; the leader is only ever "ahead"."""
    difference = flatten_accuracy - gap_accuracy
    if round(difference * 100, 1) == 0:
        lead = f"Flatten and GAP level on test accuracy, {flatten_accuracy:.1%}"
    else:
        leader = "Flatten" if difference > 0 else "GAP"
        lead = f"{leader} ahead by {abs(difference) * 100:.1f} points, {flatten_accuracy:.1%} vs {gap_accuracy:.1%}"
    p_text = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2f}"
    evidence = f"95% CI of Flatten − GAP {_points(interval[0])} to {_points(interval[1])} points; McNemar {p_text}"
    if p_value >= SIGNIFICANCE:
        finding = f"no significant difference on {test_images:,} test images"
    elif abs(difference) <= margin:
        finding = f"significant on these {test_images:,} test images, but within the noise of retraining (±{margin * 100:.1f} points)"
    else:
        finding = f"significant on {test_images:,} test images, beyond the noise (±{margin * 100:.1f} points)"
    return f"{lead} ({evidence}): {finding}; Flatten has {params_ratio:,.1f}× GAP's head parameters."
