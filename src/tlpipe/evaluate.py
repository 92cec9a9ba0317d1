"""Stage `evaluate@<head>`: test-split metrics, confusion matrix, size and inference cost of one head.

Quality is measured by the head on the cached test features (the same numbers
the full model gives, without a second trunk pass). Inference throughput is
measured on the full model, trunk included, over real test images.

reports/eval/<head>/
  metrics.json           accuracy, macro-F1, per-class scores, parameters, size, img/s
  predictions.csv        path, actual, predicted (DVC's confusion plot reads it)
  confusion_matrix.csv   counts, actual classes as rows

Usage: python -m tlpipe.evaluate {flatten,gap}
"""

import time

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from tlpipe import runtime
from tlpipe.config import EVAL_REPORTS_DIR, MANIFEST, MODELS_DIR, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.features import image_batches, load_meta, load_split
from tlpipe.files import write_json, write_text
from tlpipe.heads import head_from_argv, head_layer_name
from tlpipe.trunks import TRUNK_NAME

# Enough batches for a stable img/s after the warm-up batch, few enough that evaluating
# does not cost a sizeable share of the one trunk pass.
THROUGHPUT_IMAGES = 128


def main() -> None:
    head_name = head_from_argv("evaluate")
    config = load_config()
    device = runtime.setup(config.seed)
    meta = load_meta()
    classes = meta["classes"]
    model_path = MODELS_DIR / f"{head_name}.keras"
    if not model_path.is_file():
        raise UserError(f"{model_path}: missing; run the train stage first (dvc repro train@{head_name})")
    model = keras.models.load_model(model_path)
    trunk, head = model.get_layer(TRUNK_NAME), model.get_layer(head_layer_name(head_name))

    x_test, y_test = load_split("test")
    y_pred = np.argmax(head.predict(x_test, batch_size=256, verbose=0), axis=1)
    test_paths = pd.read_csv(MANIFEST, keep_default_na=False).query("split == 'test'")["path"]
    report = classification_report(
        y_test, y_pred, labels=range(len(classes)), target_names=classes, output_dict=True, zero_division=0
    )
    metrics = {
        "accuracy": accuracy_score(y_test, y_pred),
        "macro_f1": f1_score(y_test, y_pred, average="macro", labels=range(len(classes)), zero_division=0),
        "test_images": len(y_test),
        "trunk_params": trunk.count_params(),
        "head_params": head.count_params(),
        "total_params": model.count_params(),
        "model_bytes": model_path.stat().st_size,
        "inference_images_per_second": round(inference_throughput(model, test_paths, config), 1),
        "inference_device": device,
        "per_class": {name: {key: report[name][key] for key in ("precision", "recall", "f1-score", "support")} for name in classes},
    }

    out = EVAL_REPORTS_DIR / head_name
    write_json(out / "metrics.json", metrics)
    predictions = pd.DataFrame({
        "path": test_paths.to_numpy(),
        "actual": np.array(classes)[y_test],
        "predicted": np.array(classes)[y_pred],
    })
    write_text(out / "predictions.csv", predictions.to_csv(index=False))
    matrix = pd.DataFrame(confusion_matrix(y_test, y_pred, labels=range(len(classes))), index=classes, columns=classes)
    write_text(out / "confusion_matrix.csv", matrix.rename_axis("actual").to_csv())
    print(f"evaluate@{head_name}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"{metrics['inference_images_per_second']} img/s on {device}")


def inference_throughput(model: keras.Model, test_paths: pd.Series, config) -> float:
    """Images per second through the full model, decoding excluded, after one warm-up batch."""
    model.compile(jit_compile=False)  # as for the trunk pass: XLA slows the trunk on CPU
    batches = list(image_batches(test_paths[:THROUGHPUT_IMAGES], config.trunk))
    model.predict_on_batch(batches[0])
    start = time.perf_counter()
    for batch in batches:
        model.predict_on_batch(batch)
    return sum(len(batch) for batch in batches) / (time.perf_counter() - start)


if __name__ == "__main__":
    run_stage(main)
