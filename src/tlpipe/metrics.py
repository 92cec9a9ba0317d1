"""Evaluation of one trained head: test-split metrics, confusion matrix, size and inference cost.

The train stage calls `evaluate_head` right after training, in the same process:
a stage of its own would pay TensorFlow's start-up again (about 8 s on 2 CPU
cores) for a second or two of work. Quality is measured by the head on the
cached test features (the same numbers the full model gives, without a second
trunk pass). Inference throughput is measured on the full model, trunk
included, over real test images, through tlpipe.predictor (what `tlpipe predict`
runs): files to probabilities, and the model's share of that time.

reports/eval/<head>/
  metrics.json           accuracy, macro-F1, per-class scores, calibration (and temperature
                         scaling with train.calibrate), parameters, size, img/s (model, predict)
  predictions.csv        path, actual, predicted (DVC's confusion plot reads them), probability (of the
                         prediction), true_probability (of the actual class)
  confusion_matrix.csv   counts, actual classes as rows
  robustness.json        accuracy on the test images shifted by 1/8 of the image size (the features
                         stage caches their features: robustness.shifts), per shift, and the drop
                         from the unshifted ones
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from tlpipe.cache import FeatureBatches, shifted_split
from tlpipe.files import write_json, write_text
from tlpipe.predictor import Predictor
from tlpipe.stats import calibration, scale_temperature

# Enough batches for a stable img/s after the warm-up batch, few enough that evaluating
# does not cost a sizeable share of the one trunk pass.
THROUGHPUT_IMAGES = 128  # the most that inference is timed on
TIMING_SECONDS = 2.0  # the timing runs whole batches until this has passed


def evaluate_head(
    out: Path,
    predictor: Predictor,
    head: keras.Model,
    model_path: Path,
    test: tuple[pd.Series, np.ndarray],
    classes: list[str],
    timing_paths: list[Path],
    device: str,
    temperature: float | None = None,
) -> dict:
    """Write the files of reports/eval/<head>/ into folder `out` for the predictor's model (trunk + `head`,
    saved at `model_path`) and return its metrics.

    `test` is the test split's (paths, labels); `timing_paths`, image files to time inference on;
    `temperature`, one fitted on the validation split, to report the calibration it would give.
    """
    test_paths, y_test = test
    probabilities = head.predict(FeatureBatches("test", batch_size=256), verbose=0)
    y_pred = np.argmax(probabilities, axis=1)
    report = classification_report(
        y_test, y_pred, labels=range(len(classes)), target_names=classes, output_dict=True, zero_division=0
    )
    model = predictor.model
    trunk_params = model.count_params() - head.count_params()
    model_rate, predict_rate = inference_throughput(predictor, timing_paths)
    metrics = {
        **classification_metrics(y_test, y_pred, len(classes)),
        "trunk_params": trunk_params,
        "head_params": head.count_params(),
        "total_params": model.count_params(),
        "model_bytes": model_path.stat().st_size,
        "inference_images_per_second": round(model_rate, 1),
        "predict_images_per_second": round(predict_rate, 1),
        "inference_device": device,
        "per_class": {name: {key: report[name][key] for key in ("precision", "recall", "f1-score", "support")} for name in classes},
        "calibration": calibration(y_test, probabilities),
    }
    if temperature is not None:
        scaled = calibration(y_test, scale_temperature(probabilities, temperature))
        metrics["temperature_scaling"] = {"temperature": temperature, **{key: scaled[key] for key in ("ece", "brier", "log_loss")}}

    write_json(out / "metrics.json", metrics)
    predictions = pd.DataFrame({
        "path": test_paths.to_numpy(),
        "actual": np.array(classes)[y_test],
        "predicted": np.array(classes)[y_pred],
        "probability": probabilities[np.arange(len(y_pred)), y_pred].round(4),  # of the predicted class
        "true_probability": probabilities[np.arange(len(y_test)), y_test].round(4),  # the loss is -log of it
    })
    write_text(out / "predictions.csv", predictions.to_csv(index=False))
    matrix = pd.DataFrame(confusion_matrix(y_test, y_pred, labels=range(len(classes))), index=classes, columns=classes)
    write_text(out / "confusion_matrix.csv", matrix.rename_axis("actual").to_csv())
    return metrics


def evaluate_shifts(out: Path, head: keras.Model, meta: dict, test_accuracy: float) -> dict:
    """Write out/robustness.json: the head's accuracy on the cached features of the test images under each
    shift the features stage ran (meta: the cache's meta.json), beside `test_accuracy` unshifted, and
    the mean drop; return it."""
    if not meta["shifts"]:
        report = {"enabled": False}
    else:
        per_shift = {"none": test_accuracy, **{
            name: _accuracy(head, FeatureBatches(shifted_split(name), batch_size=256)) for name in meta["shifts"]}}
        shifted = float(np.mean([per_shift[name] for name in meta["shifts"]]))
        report = {"enabled": True, "shift_pixels": meta["shift_pixels"], "test_images": meta["split_sizes"]["test"],
                  "accuracy": test_accuracy, "shifted_accuracy": shifted, "drop": test_accuracy - shifted,
                  "per_shift": per_shift}
    write_json(out / "robustness.json", report)
    return report


def _accuracy(head: keras.Model, batches: FeatureBatches) -> float:
    return accuracy_score(batches.labels, np.argmax(head.predict(batches, verbose=0), axis=1))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro-F1 over every class (a class never predicted counts as F1 0)."""
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, average="macro", labels=range(num_classes), zero_division=0),
        "test_images": len(y_true),
    }


def inference_throughput(predictor: Predictor, paths: list[Path]) -> tuple[float, float]:
    """Images per second over the files at `paths`, after one warm-up batch (the first call traces the
    graph): through the model alone, and files to probabilities (`Predictor.predict_files`, decoding included).

    Both from one timed run of predict_files, the model's share of it timed within: a float32 VGG16 at
    224 px (10 img/s on 2 cores) spends seconds on each batch, and a second run would double them.
    """
    size = predictor.batch_size
    batches = [paths[start:start + size] for start in range(0, len(paths), size)]
    predictor.predict_files(batches[0], progress=False)
    runs, seconds = _time_batches(lambda batch: predictor.predict_files(batch, progress=False), batches)
    images = sum(len(predictions.paths) for predictions in runs)
    return images / sum(predictions.model_seconds for predictions in runs), images / seconds


def _time_batches(run: Callable[[Sequence], Any], batches: list[Sequence]) -> tuple[list, float]:
    """run(batch) over whole batches until TIMING_SECONDS have passed: what each returned, and the seconds taken."""
    results, start = [], time.perf_counter()
    for batch in batches:
        results.append(run(batch))
        if time.perf_counter() - start >= TIMING_SECONDS:
            break
    return results, time.perf_counter() - start
