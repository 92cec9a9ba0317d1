"""Stage `train@<head>`: train one head on the cached trunk features, then evaluate it.

The features come from disk batch by batch (FeatureBatches), so memory does not
grow with the dataset. Early stopping on validation loss keeps the best epoch's
weights. The head is then put on the cached trunk and saved as
models/<head>.keras, a full model from preprocessed images to class
probabilities. Per-epoch curves and the training summary are logged with
DVCLive under reports/train/<head>/; the test-split evaluation
(tlpipe.evaluate) goes to reports/eval/<head>/.

Usage: python -m tlpipe.train {flatten,gap}
"""

import time

import keras
from dvclive import Live
from dvclive.keras import DVCLiveCallback
from scmrepo.exceptions import SCMError

from tlpipe import runtime
from tlpipe.config import FEATURES_DIR, MODELS_DIR, TRAIN_REPORTS_DIR, head_from_argv, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.evaluate import evaluate_head
from tlpipe.features import FeatureBatches, load_meta, read_manifest
from tlpipe.files import save_atomically
from tlpipe.heads import assemble, build_head


def _live(head_name: str) -> Live:
    """DVCLive logging to reports/train/<head>/; it never rewrites dvc.yaml (dvcyaml=False)."""
    try:
        return Live(dir=str(TRAIN_REPORTS_DIR / head_name), dvcyaml=False, save_dvc_exp=False, report=None)
    except SCMError as error:  # DVCLive 3.49 fails in a git repo without commits
        raise UserError(f"DVCLive: {error}: commit once (git commit) before training") from None


def main() -> None:
    head_name = head_from_argv("train")
    config = load_config()
    head_config = config.head(head_name)
    device = runtime.setup(config.seed)
    meta = load_meta()
    train_batches = FeatureBatches("train", head_config.batch_size, shuffle_seed=config.seed)
    val_batches = FeatureBatches("val", head_config.batch_size)

    head = build_head(head_name, tuple(meta["feature_shape"]), len(meta["classes"]), head_config)
    head.compile(
        optimizer=keras.optimizers.Adam(head_config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=config.train.jit_compile,
    )
    print(f"train@{head_name}: {head.count_params():,} head parameters, {len(train_batches.labels)} training images, on {device}")

    live = _live(head_name)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.train.patience, restore_best_weights=True
    )
    start = time.perf_counter()
    history = head.fit(
        train_batches,
        validation_data=val_batches,
        epochs=head_config.epochs,
        shuffle=False,  # train_batches shuffles its rows every epoch
        callbacks=[early_stopping, DVCLiveCallback(live=live)],
        verbose=2,
    )
    seconds = time.perf_counter() - start

    val_loss = history.history["val_loss"]
    best = min(range(len(val_loss)), key=val_loss.__getitem__)
    live.summary.update({
        "best_epoch": best + 1,
        "best_val_loss": val_loss[best],
        "best_val_accuracy": history.history["val_accuracy"][best],
        "epochs_run": len(val_loss),
        "train_seconds": round(seconds, 2),
        "device": device,
    })
    live.make_summary()

    trunk = keras.models.load_model(FEATURES_DIR / "trunk.keras")
    model = assemble(trunk, head)
    model_path = MODELS_DIR / f"{head_name}.keras"
    save_atomically(model_path, model.save)
    print(f"train@{head_name}: best epoch {best + 1}/{len(val_loss)}, val accuracy "
          f"{history.history['val_accuracy'][best]:.3f}, {seconds:.1f} s -> {model_path}")

    metrics = evaluate_head(head_name, model, model_path, read_manifest(), config, device)
    print(f"train@{head_name}: test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"{metrics['inference_images_per_second']} img/s through the full model on {device}")


if __name__ == "__main__":
    run_stage(main)
