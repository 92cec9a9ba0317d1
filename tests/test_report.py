"""The comparison's text, from synthetic metrics: verdict, baseline changes, fine-tuning."""

from builders import REPO
from tlpipe.config import load_config
from tlpipe.reporting.comparison import changes_markdown, finetune_markdown, verdict


def head(accuracy: float, head_params: int, **extra) -> dict:
    return {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "head_params": head_params, "total_params": 1000 + head_params,
            "train_seconds": 10.0, "inference_images_per_second": 50.0, "epochs_run": 12, **extra}


METRICS = {"flatten": head(0.80, 40_000), "gap": head(0.83, 2_000)}


def test_the_verdict_names_the_winner_and_the_parameter_cost():
    assert verdict(METRICS) == (
        "GAP wins on test accuracy by 3.0 points (83.0% vs 80.0% for Flatten); "
        "Flatten vs GAP: 40,000 vs 2,000 head parameters (20.0x)."
    )
    assert verdict({"flatten": head(0.801, 40_000), "gap": head(0.80, 2_000)}).startswith("Flatten and GAP tie")


def test_changes_show_value_baseline_and_change_per_head():
    before = {"flatten": head(0.75, 40_000), "gap": head(0.83, 4_000)}
    lines = changes_markdown(METRICS, "HEAD", ("abc1234", before))
    assert lines[0] == "Against `HEAD` (commit `abc1234`)."
    assert "| accuracy | 80.0% | 75.0% | +5.0 pts | 83.0% | 83.0% | +0.0 pts |" in lines
    assert "| head parameters | 40,000 | 40,000 | +0 | 2,000 | 4,000 | -2,000 |" in lines


def test_no_baseline_says_so():
    assert changes_markdown(METRICS, "main", None) == ["No baseline: `main` has no committed `reports/metrics.json`."]


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
