"""Stage `train@<head>`: train one head on the cached trunk features, then evaluate it.

The features come from the cache (tlpipe.cache.FeatureBatches): a split held in
memory up to a budget, a larger one read batch by batch, so memory does not grow
with the dataset. Early stopping on validation loss keeps
the best epoch's weights (tlpipe.model.fitting). The head trains train.repeats
times with consecutive seeds; every run's figures go to the training summary and
the run with the median validation loss is kept. That head is then put on the
cached trunk (in float32) and saved as models/<head>.keras, a full model from RGB images
(0-255) to class probabilities, with its class names (tlpipe.model.saving).
Per-epoch curves and the training summary are logged with DVCLive under
reports/train/<head>/ (the curves: the kept run's); the test-split evaluation
(tlpipe.metrics), calibration and shifted test images included, goes to reports/eval/<head>/. All of them go in place
together once every one is written (tlpipe.files.StagedOutputs): an interrupted run leaves the
previous set.

Usage: tlpipe train {flatten,gap}
"""

from pathlib import Path

import keras
import numpy as np
from dvclive import Live
from dvclive.utils import standardize_metric_name
from scmrepo.exceptions import SCMError

from tlpipe import runtime
from tlpipe.cache import FeatureBatches, load_meta, load_trunk, training_rows
from tlpipe.config import EVAL_REPORTS_DIR, MODELS_DIR, RAW_DIR, TRAIN_REPORTS_DIR, head_from_argv, load_config
from tlpipe.data.labels import labels_path
from tlpipe.data.manifest import read_manifest, split_rows
from tlpipe.data.splitting import nested_subset
from tlpipe.errors import UserError, run_stage
from tlpipe.files import StagedOutputs
from tlpipe.metrics import THROUGHPUT_IMAGES, classification_metrics, evaluate_head, evaluate_shifts
from tlpipe.model.fitting import fit_classifier
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.precision import in_float32
from tlpipe.model.saving import save_classifier
from tlpipe.predictor import Predictor
from tlpipe.stats import fit_temperature, median_run


def _live(directory: Path) -> Live:
    """DVCLive logging to `directory`; it never rewrites dvc.yaml (dvcyaml=False)."""
    try:
        return Live(dir=str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as error:  # DVCLive 3.49 fails in a git repo without commits
        raise UserError(f"DVCLive: {error}: commit once (git commit) before training") from None


def _training_subset(manifest, config, meta):
    """The cache rows of train.fraction of the training images (all rows at 1.0)."""
    if config.train.fraction == 1:
        return None
    train = manifest[manifest["split"] == "train"]
    images = np.flatnonzero(nested_subset(train, config.train.fraction, config.seed))
    return training_rows(images, len(train), meta["augment_views"])


def train_runs(head_name: str, config, meta: dict, rows: np.ndarray | None) -> tuple[keras.Model, list[dict], int, dict]:
    """Train the head train.repeats times, with seeds seed, seed+1, ... (initialisation, shuffling,
    dropout), and keep the run with the median validation loss: never a choice made on test.

    Returns the kept head, every run's figures (validation and test) and the kept run's
    per-epoch history.
    """
    head_config = config.head(head_name)
    val_batches = FeatureBatches("val", head_config.batch_size)
    test_batches = FeatureBatches("test", batch_size=256)
    runs, weights, histories = [], [], []
    for run in range(config.train.repeats):
        seed = config.seed + run
        keras.utils.set_random_seed(seed)
        train_batches = FeatureBatches("train", head_config.batch_size, shuffle_seed=seed, rows=rows)
        head = build_head(head_name, tuple(meta["feature_shape"]), len(meta["classes"]), head_config)
        fit = fit_classifier(
            head, train_batches, val_batches,
            learning_rate=head_config.learning_rate,
            epochs=head_config.epochs,
            patience=config.train.patience,
            jit_compile=config.train.jit_compile,
            steps_per_epoch=len(train_batches),  # one compiled call per epoch
            fused_adam=True,  # measured: half of each Flatten step was Keras's Adam; the head is not saved compiled
        )
        predicted = np.argmax(head.predict(test_batches, verbose=0), axis=1)
        test = classification_metrics(test_batches.labels, predicted, len(meta["classes"]))
        runs.append({"seed": seed, **fit.summary(), "train_rows": len(train_batches.labels), "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"]})
        weights.append(head.get_weights())
        histories.append(head.history.history)  # set by model.fit: the kept run's curves go to DVCLive
        print(f"train@{head_name}: run {run + 1}/{config.train.repeats} (seed {seed}): val loss {fit.best_val_loss:.4f}, "
              f"test accuracy {test['accuracy']:.3f}, {fit.seconds:.1f} s")
    kept = median_run([run["best_val_loss"] for run in runs])
    head.set_weights(weights[kept])
    return head, runs, kept, histories[kept]


def _log_curves(live: Live, history: dict) -> None:
    """The kept run's per-epoch metrics, logged as DVCLiveCallback would have during its fit."""
    for epoch in range(len(history["loss"])):
        for metric, values in history.items():
            live.log_metric(standardize_metric_name(metric, "dvclive.keras"), values[epoch])
        live.next_step()


def main() -> None:
    head_name = head_from_argv("train")
    config = load_config()
    device = runtime.setup(config.seed)
    meta = load_meta()
    manifest = read_manifest()
    rows = _training_subset(manifest, config, meta)
    print(f"train@{head_name}: {config.train.repeats} run(s) on {device}")
    head, runs, kept, history = train_runs(head_name, config, meta, rows)
    fit = runs[kept]
    # The model, its evaluation and the training reports go in place together, once all are written:
    # an interrupted run leaves the previous set, never a new model beside the old one's reports.
    with StagedOutputs() as outputs:
        _log_training(outputs.folder(TRAIN_REPORTS_DIR / head_name), runs, kept, history, device)
        _save_and_evaluate(head_name, head, fit, kept, config, manifest, meta, device, outputs)
        outputs.commit()


def _log_training(live_dir: Path, runs: list[dict], kept: int, history: dict, device: str) -> None:
    """The kept run's curves and the training summary, every run's figures included, with DVCLive
    (which empties `live_dir` when it starts: a scratch folder)."""
    fit = runs[kept]
    live = _live(live_dir)
    _log_curves(live, history)
    live.summary.update({
        "best_epoch": fit["best_epoch"],
        "best_val_loss": fit["best_val_loss"],
        "best_val_accuracy": fit["best_val_accuracy"],
        "best_train_accuracy": fit["best_train_accuracy"],
        "overfitting_gap": fit["overfitting_gap"],
        "train_rows": fit["train_rows"],
        "epochs_run": fit["epochs_run"],
        "train_seconds": round(sum(run["seconds"] for run in runs), 2),
        "device": device,
        "saved_run": kept + 1,
        "runs": runs,
    })
    live.end()  # writes the summary


def _save_and_evaluate(head_name: str, head: keras.Model, fit: dict, kept: int, config, manifest, meta: dict, device: str,
                       outputs: StagedOutputs) -> None:
    """Put the kept head on the cached trunk, save the full model, evaluate it on the test split (into `outputs`)."""
    classes = meta["classes"]
    # The head anew, with the trained weights but not its compiled state: a nested FusedAdam
    # would need tlpipe to load the classifier.
    # (clone_model compiles the clone like the original: from_config does not.)
    saved_head = keras.Model.from_config(head.get_config())
    saved_head.set_weights(head.get_weights())
    model = assemble(in_float32(load_trunk()), saved_head)  # float32 whatever the trunk pass ran in: portable, exportable
    model_path = MODELS_DIR / f"{head_name}.keras"
    model_file = outputs.file(model_path)
    outputs.file(labels_path(model_path))  # save_classifier writes it beside the model
    save_classifier(model, model_file, classes)
    print(f"train@{head_name}: kept run {kept + 1} (seed {fit['seed']}, median val loss), best epoch "
          f"{fit['best_epoch']}/{fit['epochs_run']}, val accuracy {fit['best_val_accuracy']:.3f} -> {model_path}")

    test_paths, test_labels = split_rows(manifest, "test", classes)
    timing_paths = [RAW_DIR / path for path in test_paths[:THROUGHPUT_IMAGES]]
    temperature = None
    if config.train.calibrate:
        val_batches = FeatureBatches("val", batch_size=256)
        temperature = fit_temperature(val_batches.labels, head.predict(val_batches, verbose=0))
    predictor = Predictor(model, classes, config.trunk.batch_size)
    eval_dir = outputs.folder(EVAL_REPORTS_DIR / head_name)
    metrics = evaluate_head(eval_dir, predictor, head, model_file, (test_paths, test_labels),
                            classes, timing_paths, device, temperature)
    robustness = evaluate_shifts(eval_dir, head, meta, metrics["accuracy"])
    print(f"train@{head_name}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"{metrics['inference_images_per_second']} img/s through the full model on {device} "
          f"({metrics['predict_images_per_second']} img/s files to classes, as tlpipe predict)")
    if robustness["enabled"]:
        print(f"train@{head_name}: {robustness['shifted_accuracy']:.3f} on the test images shifted by "
              f"{robustness['shift_pixels']} px (drop {robustness['drop'] * 100:+.1f} pts)")


if __name__ == "__main__":
    run_stage(main)
