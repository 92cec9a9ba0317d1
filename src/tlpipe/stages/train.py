"""Stage `train@<head>`: train one head on the cached trunk features, then evaluate it.

The features come from disk batch by batch (tlpipe.cache.FeatureBatches), so
memory does not grow with the dataset. Early stopping on validation loss keeps
the best epoch's weights (tlpipe.model.fitting). The head is then put on the
cached trunk and saved as models/<head>.keras, a full model from preprocessed
images to class probabilities. Per-epoch curves and the training summary are
logged with DVCLive under reports/train/<head>/; the test-split evaluation
(tlpipe.metrics) goes to reports/eval/<head>/.

Usage: tlpipe train {flatten,gap}
"""

import numpy as np
from dvclive import Live
from dvclive.keras import DVCLiveCallback
from scmrepo.exceptions import SCMError

from tlpipe import runtime
from tlpipe.cache import FeatureBatches, load_meta, load_trunk, training_rows
from tlpipe.config import MODELS_DIR, RAW_DIR, TRAIN_REPORTS_DIR, head_from_argv, load_config
from tlpipe.data.inputs import image_batches
from tlpipe.data.manifest import read_manifest, split_rows
from tlpipe.data.splitting import nested_subset
from tlpipe.errors import UserError, run_stage
from tlpipe.files import save_atomically
from tlpipe.metrics import THROUGHPUT_IMAGES, evaluate_head
from tlpipe.model.fitting import fit_classifier
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.trunks import preprocess_input


def _live(head_name: str) -> Live:
    """DVCLive logging to reports/train/<head>/; it never rewrites dvc.yaml (dvcyaml=False)."""
    try:
        return Live(dir=str(TRAIN_REPORTS_DIR / head_name), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as error:  # DVCLive 3.49 fails in a git repo without commits
        raise UserError(f"DVCLive: {error}: commit once (git commit) before training") from None


def _training_subset(manifest, config, meta):
    """The cache rows of train.fraction of the training images (all rows at 1.0)."""
    if config.train.fraction == 1:
        return None
    train = manifest[manifest["split"] == "train"]
    images = np.flatnonzero(nested_subset(train, config.train.fraction, config.seed))
    return training_rows(images, len(train), meta["augment_views"])


def main() -> None:
    head_name = head_from_argv("train")
    config = load_config()
    head_config = config.head(head_name)
    device = runtime.setup(config.seed)
    meta = load_meta()
    manifest = read_manifest()
    train_batches = FeatureBatches("train", head_config.batch_size, shuffle_seed=config.seed,
                                   rows=_training_subset(manifest, config, meta))
    val_batches = FeatureBatches("val", head_config.batch_size)

    head = build_head(head_name, tuple(meta["feature_shape"]), len(meta["classes"]), head_config)
    print(f"train@{head_name}: {head.count_params():,} head parameters, {len(train_batches.labels)} training images, on {device}")
    live = _live(head_name)
    fit = fit_classifier(
        head, train_batches, val_batches,
        learning_rate=head_config.learning_rate,
        epochs=head_config.epochs,
        patience=config.train.patience,
        jit_compile=config.train.jit_compile,
        callbacks=[DVCLiveCallback(live=live)],
    )
    live.summary.update({
        "best_epoch": fit.best_epoch,
        "best_val_loss": fit.best_val_loss,
        "best_val_accuracy": fit.best_val_accuracy,
        "best_train_accuracy": fit.best_train_accuracy,
        "overfitting_gap": fit.overfitting_gap,
        "train_rows": len(train_batches.labels),
        "epochs_run": fit.epochs_run,
        "train_seconds": round(fit.seconds, 2),
        "device": device,
    })
    live.make_summary()

    model = assemble(load_trunk(), head)
    model_path = MODELS_DIR / f"{head_name}.keras"
    save_atomically(model_path, model.save)
    print(f"train@{head_name}: best epoch {fit.best_epoch}/{fit.epochs_run}, val accuracy "
          f"{fit.best_val_accuracy:.3f}, {fit.seconds:.1f} s -> {model_path}")

    classes = meta["classes"]
    test_paths, test_labels = split_rows(manifest, "test", classes)
    timing_batches = list(image_batches(
        test_paths[:THROUGHPUT_IMAGES], RAW_DIR, meta["trunk"]["image_size"],
        preprocess_input(meta["trunk"]["name"]), batch_size=config.trunk.batch_size,
    ))
    metrics = evaluate_head(head_name, model, head, model_path, (test_paths, test_labels), classes, timing_batches, device)
    print(f"train@{head_name}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"{metrics['inference_images_per_second']} img/s through the full model on {device}")


if __name__ == "__main__":
    run_stage(main)
