"""The comparison's text, from synthetic metrics: verdict, baseline changes, calibration, fine-tuning."""

import hashlib
import json

import pandas as pd

from builders import REPO, write_params
from tlpipe.config import load_config
from tlpipe.reporting.baseline import measured_on
from tlpipe.reporting.comparison import calibration_sentence, changes_markdown, finetune_markdown, verdict


def head(accuracy: float, head_params: int, **extra) -> dict:
    return {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "head_params": head_params, "total_params": 1000 + head_params,
            "train_seconds": 10.0, "inference_images_per_second": 50.0, "epochs_run": 12, "test_images": 300,
            "accuracy_std": 0.01, "macro_f1_std": 0.01, "ece": 0.05, **extra}


METRICS = {"flatten": head(0.80, 40_000), "gap": head(0.83, 2_000, ece=0.02)}
CONFIG = load_config(REPO / "params.yaml")


def manifest(classes: list[str], per_split: dict[str, int]) -> pd.DataFrame:
    """A split manifest: per_split[split] images of each class in each split."""
    rows = [{"path": f"{label}/{split}_{index}.png", "label": label, "split": split,
             "sha256": hashlib.sha256(f"{label}/{split}_{index}".encode()).hexdigest()}
            for label in classes for split, count in per_split.items() for index in range(count)]
    return pd.DataFrame(rows)


CLASSES = ["coat", "dress", "shirt", "sneaker"]
IDENTITY = measured_on(CONFIG, manifest(CLASSES, {"train": 5, "val": 2, "test": 75}))


def committed(metrics: dict, identity: dict) -> dict:
    """A baseline's metrics as the report reads them back from git: JSON, with what they were measured on."""
    return json.loads(json.dumps({**metrics, "measured_on": identity}))


def test_the_verdict_states_the_interval_and_the_test_and_claims_no_win_inside_the_noise():
    paired = {"ci_low": -0.07, "ci_high": 0.01, "mcnemar_p": 0.12, "test_images": 300}
    assert verdict(METRICS, paired) == (
        "GAP ahead by 3.0 points, 80.0% vs 83.0% (95% CI of Flatten − GAP −7.0 to +1.0 points; McNemar p = 0.12): "
        "no significant difference on 300 test images; Flatten has 20.0× GAP's head parameters."
    )


def test_changes_mark_each_quality_delta_within_or_beyond_the_noise():
    before = {"flatten": head(0.70, 40_000), "gap": head(0.82, 4_000)}
    lines = changes_markdown(METRICS, IDENTITY, "HEAD", ("abc1234", committed(before, IDENTITY)))
    assert lines[0].startswith("Against `HEAD` (commit `abc1234`). A difference Δ is beyond the noise when")
    # Flatten: ±1.96·√(0.01² + 0.01² + 0.8·0.2/300 + 0.7·0.3/300) = ±7.4 points; GAP likewise ±6.7
    assert "| accuracy | 80.0% | 70.0% | +10.0 pts (beyond ±7.4 pts) | 83.0% | 82.0% | +1.0 pts (within ±6.7 pts) |" in lines
    assert "| macro-F1 | 0.790 | 0.690 | +0.100 (beyond ±0.075) | 0.820 | 0.810 | +0.010 (within ±0.068) |" in lines
    assert "| head parameters | 40,000 | 40,000 | +0 | 2,000 | 4,000 | -2,000 |" in lines
    assert not any("head training" in line for line in lines)  # timings: reports/cost.json


BEFORE = {"flatten": head(0.70, 40_000), "gap": head(0.82, 4_000)}


def test_a_baseline_on_other_classes_shows_no_deltas():
    ten_classes = measured_on(CONFIG, manifest([f"class_{index}" for index in range(10)], {"train": 5, "val": 2, "test": 30}))
    lines = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", committed(BEFORE, ten_classes)))
    assert lines == ["Against `main` (commit `abc1234`): the baseline was measured on another version of "
                     "`data/samples/fashion-mnist-mini.tar.gz`, other classes (10 vs 4) and another test split (300 test images then, 300 now): no deltas shown."]


def test_a_baseline_on_other_class_names_names_them():
    renamed = measured_on(CONFIG, manifest(["coat", "dress", "shirt", "trainer"], {"train": 5, "val": 2, "test": 75}))
    [line] = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", committed(BEFORE, renamed)))
    assert "other classes (trainer instead of sneaker) and another test split" in line


def test_a_baseline_on_another_test_split_of_the_same_data_shows_no_deltas():
    images = manifest(CLASSES, {"train": 5, "val": 2, "test": 75})
    resplit = images.assign(split=images["split"].where(images.index != 0, "test"))  # one training image moved to test
    lines = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", committed(BEFORE, measured_on(CONFIG, resplit))))
    assert lines == ["Against `main` (commit `abc1234`): the baseline was measured on another test split "
                     "(300 test images then, 300 now): no deltas shown."]


def test_a_baseline_from_another_dataset_with_other_test_images_shows_no_deltas(tmp_path):
    other = load_config(write_params(tmp_path, **{"dataset.url": "data/other", "dataset.sha256": ""}))
    other_data = measured_on(other, manifest(CLASSES, {"train": 6, "val": 2, "test": 70}))
    [line] = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", committed(BEFORE, other_data)))
    assert line == ("Against `main` (commit `abc1234`): the baseline was measured on another dataset (`data/other`) and "
                    "another test split (300 test images then, 300 now): no deltas shown.")


def test_a_baseline_trained_on_other_images_with_the_same_test_split_shows_deltas_and_says_so():
    more_training = measured_on(CONFIG, manifest(CLASSES, {"train": 9, "val": 2, "test": 75}))
    lines = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", committed(BEFORE, more_training)))
    assert lines[0].startswith("Against `main` (commit `abc1234`; the baseline trained on another version of "
                               "`data/samples/fashion-mnist-mini.tar.gz`, tested on the same test split). A difference")
    assert "| accuracy | 80.0% | 70.0% | +10.0 pts (beyond ±7.4 pts) | 83.0% | 82.0% | +1.0 pts (within ±6.7 pts) |" in lines


def test_a_baseline_that_does_not_record_what_it_measured_shows_no_deltas():
    lines = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", BEFORE))
    assert lines == ["Against `main` (commit `abc1234`): its `reports/metrics.json` does not record what it was measured on "
                     "(dataset, classes, test split), so it cannot be compared: no deltas shown."]


def test_a_baseline_on_another_trunk_shows_deltas_and_names_both_trunks(tmp_path):
    mobilenet = load_config(write_params(tmp_path, **{"trunk.name": "mobilenet_v2", "trunk.weights": "none", "trunk.image_size": 96}))
    other_trunk = measured_on(mobilenet, manifest(CLASSES, {"train": 5, "val": 2, "test": 75}))
    lines = changes_markdown(METRICS, IDENTITY, "main", ("abc1234", committed(BEFORE, other_trunk)))
    assert lines[0].startswith("Against `main` (commit `abc1234`; trunk mobilenet_v2 at 96 px then, vgg16 at 64 px now). A difference")
    assert "| accuracy | 80.0% | 70.0% | +10.0 pts (beyond ±7.4 pts) | 83.0% | 82.0% | +1.0 pts (within ±6.7 pts) |" in lines


def test_no_baseline_says_so():
    assert changes_markdown(METRICS, IDENTITY, "main", None) == ["No baseline: `main` has no committed `reports/metrics.json`."]


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
