"""The comparison's text, from synthetic metrics: verdict, baseline changes, calibration, fine-tuning."""

from builders import REPO
from tlpipe.config import load_config
from tlpipe.reporting.comparison import calibration_sentence, changes_markdown, finetune_markdown, verdict


def head(accuracy: float, head_params: int, **extra) -> dict:
    return {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "head_params": head_params, "total_params": 1000 + head_params,
            "train_seconds": 10.0, "inference_images_per_second": 50.0, "epochs_run": 12, "test_images": 300,
            "accuracy_std": 0.01, "macro_f1_std": 0.01, "ece": 0.05, **extra}


METRICS = {"flatten": head(0.80, 40_000), "gap": head(0.83, 2_000, ece=0.02)}


def test_the_verdict_states_the_interval_and_the_test_and_claims_no_win_inside_the_noise():
    paired = {"ci_low": -0.07, "ci_high": 0.01, "mcnemar_p": 0.12, "test_images": 300}
    assert verdict(METRICS, paired) == (
        "GAP ahead by 3.0 points, 80.0% vs 83.0% (95% CI of Flatten − GAP −7.0 to +1.0 points; McNemar p = 0.12): "
        "no significant difference on 300 test images; Flatten has 20.0× GAP's head parameters."
    )


def test_changes_mark_each_quality_delta_within_or_beyond_the_noise():
    before = {"flatten": head(0.70, 40_000), "gap": head(0.82, 4_000)}
    lines = changes_markdown(METRICS, "HEAD", ("abc1234", before))
    assert lines[0].startswith("Against `HEAD` (commit `abc1234`). A difference Δ is beyond the noise when")
    # Flatten: ±1.96·√(0.01² + 0.01² + 0.8·0.2/300 + 0.7·0.3/300) = ±7.4 points; GAP likewise ±6.7
    assert "| accuracy | 80.0% | 70.0% | +10.0 pts (beyond ±7.4 pts) | 83.0% | 82.0% | +1.0 pts (within ±6.7 pts) |" in lines
    assert "| macro-F1 | 0.790 | 0.690 | +0.100 (beyond ±0.075) | 0.820 | 0.810 | +0.010 (within ±0.068) |" in lines
    assert "| head parameters | 40,000 | 40,000 | +0 | 2,000 | 4,000 | -2,000 |" in lines
    assert not any("head training" in line for line in lines)  # timings: reports/cost.json


def test_a_baseline_on_another_test_split_shows_no_deltas():
    before = {"flatten": head(0.70, 40_000, test_images=200), "gap": head(0.82, 4_000, test_images=200)}
    lines = changes_markdown(METRICS, "main", ("abc1234", before))
    assert len(lines) == 1 and "not comparable, its test split differs" in lines[0]


def test_no_baseline_says_so():
    assert changes_markdown(METRICS, "main", None) == ["No baseline: `main` has no committed `reports/metrics.json`."]


def test_the_better_calibrated_head_is_named():
    assert calibration_sentence(METRICS) == "GAP is the better calibrated head (ECE 0.020 vs 0.050)."
    scaled = {**METRICS, "flatten": head(0.80, 40_000, temperature_scaling={"temperature": 1.7, "ece": 0.03})}
    assert calibration_sentence(scaled).endswith("Flatten, temperature 1.70 fitted on validation: ECE 0.050 → 0.030.")


def test_fine_tuning_off_is_one_line():
    config = load_config(REPO / "params.yaml")
    assert finetune_markdown(config, METRICS, {"flatten": {"enabled": False}, "gap": {"enabled": False}}) == [
        "Off (`finetune.epochs: 0`): the models are the frozen-trunk ones above."
    ]


def test_fine_tuning_on_is_side_by_side_with_the_frozen_head():
    config = load_config(REPO / "params.yaml")
    tuned = {name: {"enabled": True, "first_unfrozen_layer": "block4_conv3", "trainable_params": 2_400_000 + metrics["head_params"],
                    "accuracy": metrics["accuracy"] + 0.02, "macro_f1": 0.8, "train_seconds": 300.0, "epochs_run": 3}
             for name, metrics in METRICS.items()}
    lines = finetune_markdown(config, METRICS, tuned)
    assert lines[0].startswith("Trunk layers from `block4_conv3` up unfrozen")
    assert "| accuracy | 80.0% | 82.0% | 83.0% | 85.0% |" in lines
    assert "| trainable parameters | 40,000 | 2,440,000 | 2,000 | 2,402,000 |" in lines
