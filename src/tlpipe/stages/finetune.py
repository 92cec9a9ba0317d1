"""Stage `finetune@<head>`: the optional fine-tuning phase of one head, after train.

It starts from models/<head>.keras (the frozen trunk under the head trained on the
cached features), unfreezes the trunk from finetune.from_layer up, and trains trunk
and head end to end with a small learning rate. The images come through tf.data,
with augment.layers in the map when finetune.augment is on, so the trunk runs
every epoch: the cost the feature cache otherwise avoids. BatchNormalization
layers stay frozen: in Keras 3 a frozen BatchNormalization layer normalizes with
its moving statistics even in training, and leaves them as they are (MobileNet,
MobileNetV2). Early stopping on val_loss keeps the best epoch's weights.

Every finished epoch is backed up in data/.finetune-<head>.backup/ (git-ignored, no DVC
output; tlpipe.model.fitting.Resumption): a run killed midway (kill -9, a power cut)
resumes from its last finished epoch and ends with the weights and metrics of an
uninterrupted run on the same machine, bit for bit (train_seconds then adds up the runs). The backup records a
key of what it was trained from (the finetune, augment, seed, runtime and trunk params, the
trained model, the manifest, tlpipe's code, the replicas): another key discards it. The
stage removes it once its outputs are written.

Off (finetune.epochs = 0, the default), the stage copies models/<head>.keras to
models/<head>-finetuned.keras: DVC needs every declared output, an identical copy
takes no room in the DVC cache, and <head>-finetuned.keras is then always the
head's final model.

models/<head>-finetuned.keras          the full model, RGB images (0-255) -> class probabilities
models/<head>-finetuned.labels.txt     its class names (tlpipe.model.saving)
reports/finetune/<head>/metrics.json   {"enabled": false} when off; else test accuracy and
                                       macro-F1 (full model on images), trainable parameters in
                                       each phase, epochs, best epoch, wall time

Usage: tlpipe finetune {flatten,gap}
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

import tlpipe
from tlpipe.config import FINETUNE_REPORTS_DIR, MANIFEST, MODELS_DIR, Config, head_from_argv, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.data.labels import labels_path
from tlpipe.files import StagedOutputs, sha256_of, write_json


def main() -> None:
    head_name = head_from_argv("finetune")
    config = load_config()
    frozen_path = MODELS_DIR / f"{head_name}.keras"
    finetuned_path = MODELS_DIR / f"{head_name}-finetuned.keras"
    metrics_path = FINETUNE_REPORTS_DIR / head_name / "metrics.json"
    if not frozen_path.is_file():
        raise UserError(f"{frozen_path}: missing; run the train stage first (dvc repro train@{head_name})")
    backup_dir = Path(f"data/.finetune-{head_name}.backup")
    # The model, its labels and its metrics go in place together, once all are written.
    with StagedOutputs() as outputs:
        finetuned_file = outputs.file(finetuned_path)
        outputs.file(labels_path(finetuned_path))  # written beside the model
        if config.finetune.epochs:
            metrics = finetune_model(frozen_path, finetuned_file, config, backup_dir)
        else:
            shutil.copyfile(frozen_path, finetuned_file)
            shutil.copyfile(labels_path(frozen_path), labels_path(finetuned_file))
            metrics = {"enabled": False}
        write_json(outputs.file(metrics_path), metrics)
        outputs.commit()
    if not config.finetune.epochs:
        print(f"finetune@{head_name}: off (finetune.epochs = 0); {finetuned_path} is a copy of {frozen_path}")
    else:
        shutil.rmtree(backup_dir, ignore_errors=True)
        print(f"finetune@{head_name}: best epoch {metrics['best_epoch']}/{metrics['epochs_run']}, test accuracy "
              f"{metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, {metrics['train_seconds']:.1f} s -> {finetuned_path}")


def finetune_model(frozen_path: Path, finetuned_path: Path, config: Config, backup_dir: Path) -> dict:
    """Fine-tune the model at `frozen_path`, save it at `finetuned_path` and return its metrics.

    Each finished epoch is backed up in `backup_dir`, from which a later call resumes."""
    # TensorFlow is imported here, not at the top: it takes about 8 s, which the off
    # path (the default, run for every head) has no use for.
    import functools

    from tlpipe import runtime
    from tlpipe.config import RAW_DIR
    from tlpipe.data.augment import build_augmentation
    from tlpipe.data.inputs import image_batches
    from tlpipe.data.manifest import class_names, read_manifest, split_rows
    from tlpipe.metrics import classification_metrics
    from tlpipe.model.fitting import fit_classifier, trainable_params
    from tlpipe.model.loading import load_model_file
    from tlpipe.model.saving import save_classifier
    from tlpipe.model.trunks import TRUNK_NAME, unfreeze_top

    finetune = config.finetune
    device = runtime.setup(config.seed, config.runtime.devices)
    # Created first: MultiWorkerMirroredStrategy (TF_CONFIG set) must exist before other TensorFlow ops.
    strategy = runtime.strategy(config.runtime.devices, multi_worker=True)
    distribution = runtime.strategy_summary(strategy)
    if finetune.batch_size % strategy.num_replicas_in_sync:
        # Keras builds the model from the first batch averaged over the replicas: they must get equal shares.
        raise UserError(f"params.yaml: finetune.batch_size = {finetune.batch_size}: the global batch, split across "
                        f"{strategy.num_replicas_in_sync} replicas (runtime.devices); make it a multiple of {strategy.num_replicas_in_sync}")
    manifest = read_manifest()
    classes = class_names(manifest)
    with strategy.scope():  # the variables, and the optimizer's (fit_classifier compiles), on every replica
        model = load_model_file(frozen_path, f"run dvc repro -f train@{frozen_path.stem}")
    frozen_trainable_params = trainable_params(model)
    first_unfrozen = unfreeze_top(model.get_layer(TRUNK_NAME), finetune.from_layer, config.trunk.name)
    print(f"finetune: trunk from {first_unfrozen} up and head, {trainable_params(model):,} trainable "
          f"parameters (frozen phase: {frozen_trainable_params:,}), augmentation {'on' if finetune.augment else 'off'}, "
          f"on {device}, {distribution['strategy']} with {distribution['replicas']} replica(s)")

    batches_of = functools.partial(
        image_batches, root=RAW_DIR, size=config.trunk.image_size, batch_size=finetune.batch_size,
    )
    augmentation = build_augmentation(config.augment, config.trunk.image_size) if finetune.augment else None
    train_paths, train_labels = split_rows(manifest, "train", classes)
    val_paths, val_labels = split_rows(manifest, "val", classes)
    with strategy.scope():
        fit = fit_classifier(
            model,
            batches_of(train_paths, labels=train_labels, augmentation=augmentation, shuffle_seed=config.seed),
            batches_of(val_paths, labels=val_labels),
            learning_rate=finetune.learning_rate,
            epochs=finetune.epochs,
            patience=finetune.patience,
            jit_compile=False,  # the trunk runs in every step, and XLA slows it on CPU (features stage: 2x)
            backup=(backup_dir, backup_key(config, frozen_path, distribution)),
        )

    test_paths, test_labels = split_rows(manifest, "test", classes)
    predicted = np.argmax(model.predict(batches_of(test_paths), verbose=0), axis=1)
    save_classifier(model, finetuned_path, classes)
    return {
        "enabled": True,
        **classification_metrics(test_labels, predicted, len(classes)),
        "trainable_params": trainable_params(model),
        "frozen_trainable_params": frozen_trainable_params,
        "first_unfrozen_layer": first_unfrozen,
        "epochs_run": fit.epochs_run,
        "best_epoch": fit.best_epoch,
        "best_val_loss": fit.best_val_loss,
        "best_val_accuracy": fit.best_val_accuracy,
        "train_seconds": round(fit.seconds, 2),
        "device": device,
        **distribution,
    }


def backup_key(config: Config, frozen_path: Path, distribution: dict) -> str:
    """A digest of everything fine-tuning starts from: a backup made from other params,
    inputs, code or replicas must not be resumed."""
    package = Path(tlpipe.__file__).parent
    sources = sorted(package.rglob("*.py"))
    used = {"seed": True, "finetune": True, "augment": True, "runtime": True, "trunk": {"name", "image_size"}}
    inputs = [frozen_path, labels_path(frozen_path), MANIFEST]  # the manifest holds each image's sha256
    parts = {
        "params": config.model_dump(include=used),
        "distribution": distribution,
        "inputs": {str(path): sha256_of(path) for path in inputs},
        "code": {str(path.relative_to(package)): sha256_of(path) for path in sources},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    run_stage(main)
