"""The one training recipe: compile, fit with early stopping on val_loss, keep the best epoch's weights.

The train stage (a head on cached features), the finetune stage (trunk and head on
images) and the benchmark's usual approach all train through `fit_classifier`.
"""

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlpipe.cache import FeatureBatches
from tlpipe.files import remove_stale_partials, replace_dir, temporary_dir_for


@dataclass(frozen=True)
class FitResult:
    best_epoch: int  # 1-based: the epoch whose weights the model holds after fit_classifier
    epochs_run: int
    best_val_loss: float
    best_val_accuracy: float
    best_train_accuracy: float  # over the epoch's batches, dropout on, as Keras reports it
    seconds: float

    @property
    def overfitting_gap(self) -> float:
        """Train minus validation accuracy at the best epoch."""
        return self.best_train_accuracy - self.best_val_accuracy

    def summary(self) -> dict:
        return {**asdict(self), "overfitting_gap": self.overfitting_gap, "seconds": round(self.seconds, 2)}


@keras.saving.register_keras_serializable(package="tlpipe")
class FusedAdam(keras.optimizers.Adam):
    """Keras's Adam, each variable's update in TensorFlow's one fused kernel (ResourceApplyAdam).

    The same maths in the same order (m, v, then var -= lr_t * m / (sqrt(v) + epsilon)),
    but one pass over the weight, gradient and moments instead of a dozen element-wise
    ops with temporaries: on a CPU, Keras's Adam took about half of each step of the
    Flatten head (2.1 M parameters). Only Adam's defaults (no amsgrad) are supported.
    """

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.convert_to_tensor(gradient),
        )


def compile_classifier(model: keras.Model, learning_rate: float, jit_compile: bool = False, steps_per_execution: int = 1,
                       fused_adam: bool = False) -> None:
    """Adam on sparse categorical cross-entropy, with accuracy.

    `fused_adam` only for a model that is not saved compiled: a saved FusedAdam would need
    tlpipe to load (the train stage saves a clone of its head, uncompiled, on the trunk).
    """
    model.compile(
        optimizer=(FusedAdam if fused_adam else keras.optimizers.Adam)(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def fit_classifier(
    model: keras.Model,
    train,
    val,
    *,
    learning_rate: float,
    epochs: int,
    patience: int | None,
    jit_compile: bool = False,
    steps_per_epoch: int | None = None,
    fused_adam: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 2,
    backup: tuple[Path, str] | None = None,
) -> FitResult:
    """Compile `model` and train it on `train` (which shuffles itself), validating on `val` every epoch.

    With `patience`, training stops after that many epochs without a lower val_loss and
    the model keeps the best epoch's weights (Keras 3 restores them at the end of
    training, stopped early or not). Without, it trains exactly `epochs` epochs and
    keeps the last one's.

    With `steps_per_epoch` (a FeatureBatches' length), each epoch's steps run in one compiled
    call (steps_per_execution), which saves the per-step Python and dispatch; the same maths.
    A FeatureBatches (`train` or `val`) goes in as its tf.data pipeline: the same batches in
    the same order, without Keras's Python call per batch (FeatureBatches.dataset).
    `fused_adam`: see compile_classifier.

    With `backup` = (folder, key), every finished epoch is backed up in that folder
    (Resumption), and a fit killed midway resumes from its last finished epoch when
    called again with the same key; the caller removes the folder once it has saved the model.
    """
    compile_classifier(model, learning_rate, jit_compile, steps_per_epoch or 1, fused_adam)
    train, val = (data.dataset() if isinstance(data, FeatureBatches) else data for data in (train, val))
    stopping = None
    if patience is not None:
        stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        callbacks = [stopping, *callbacks]
    if backup:
        # Its length hidden: Keras's fit makes one iterator per epoch of a dataset of unknown length, but two of
        # one of known length (the second dropped unread), which Resumption's one per finished epoch would miss.
        train = train.filter(lambda *element: True)
    # After EarlyStopping: it resets its state when training begins, Resumption then restores it.
    resumption = Resumption(*backup, stopping, train) if backup else EpochLogs()
    callbacks = [*callbacks, resumption]
    model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False, callbacks=callbacks, verbose=verbose)

    logs = resumption.epoch_logs  # every epoch's, those of a run before a kill included
    best = len(logs) - 1 if stopping is None else stopping.best_epoch
    return FitResult(
        best_epoch=best + 1,
        epochs_run=len(logs),
        best_val_loss=logs[best]["val_loss"],
        best_val_accuracy=logs[best]["val_accuracy"],
        best_train_accuracy=logs[best]["accuracy"],
        seconds=resumption.seconds(),
    )


class EpochLogs(keras.callbacks.Callback):
    """Each epoch's logs (loss, accuracy, val_loss, val_accuracy), and the fit's wall time."""

    def __init__(self):
        super().__init__()
        self.epoch_logs: list[dict[str, float]] = []
        self.earlier_seconds = 0.0  # spent by the runs this one resumes
        self.start = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append({name: float(value) for name, value in logs.items()})

    def seconds(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.start


class Resumption(keras.callbacks.BackupAndRestore, EpochLogs):
    """keras.callbacks.BackupAndRestore (the weights, the optimizer's state and the epoch), plus
    what it leaves out, so that a fit resumed after a kill continues as an uninterrupted one
    would, bit for bit: the model's random seed states (dropout), EarlyStopping's state, the
    finished epochs' logs and wall time, and the input pipeline's random state. That state (the
    shuffle order, the augmentation seeds: tlpipe.data.inputs) is drawn anew for each iterator
    of `train`, from the seeds and the count of iterators before, never from how far one read:
    one iterator made per finished epoch, read nothing from, brings it to where it was
    (fit_classifier hides the dataset's length so that Keras's fit, too, makes one per epoch).

    Each epoch's backup is written whole into a scratch folder that then replaces `backup_dir`
    (tlpipe.files): a kill leaves the last finished epoch's, never a mix of two. A backup made
    with another `key` (other params, inputs or code) is removed, not resumed.
    """

    STATE = "resumption.json"
    ARRAYS = "resumption.npz"

    def __init__(self, backup_dir: Path, key: str, stopping: keras.callbacks.EarlyStopping | None, train):
        keras.callbacks.BackupAndRestore.__init__(self, str(backup_dir), delete_checkpoint=False)
        EpochLogs.__init__(self)
        self.folder, self.key, self.stopping, self.train = backup_dir, key, stopping, train
        remove_stale_partials(backup_dir)
        if backup_dir.exists() and self._read_state().get("key") != key:
            shutil.rmtree(backup_dir)
            print(f"{backup_dir}: a backup of other params, inputs or code; removed, training from epoch 1")

    def _read_state(self) -> dict:
        state = self.folder / self.STATE
        return json.loads(state.read_text()) if state.is_file() else {}

    def _write_to(self, folder: Path) -> None:
        """Point BackupAndRestore's writes at `folder` (it names its files once, in __init__)."""
        self.backup_dir = str(folder)
        self._weights_path = str(folder / Path(self._weights_path).name)
        self._training_metadata_path = str(folder / Path(self._training_metadata_path).name)

    def _seed_states(self) -> list:
        """The model's random seed states: its variables that are no weights (metrics are neither)."""
        weights = {id(weight) for weight in self.model.weights}
        return [variable for variable in self.model.variables if id(variable) not in weights]

    def on_train_begin(self, logs=None):
        EpochLogs.on_train_begin(self, logs)
        keras.callbacks.BackupAndRestore.on_train_begin(self, logs)  # weights, optimizer, epoch
        state = self._read_state()
        if not state:
            return
        arrays = np.load(self.folder / self.ARRAYS)
        for index, variable in enumerate(self._seed_states()):
            variable.assign(arrays[f"seed_{index}"])
        if self.stopping is not None:
            vars(self.stopping).update(state["stopping"])
            self.stopping.best_weights = [arrays[f"best_{index}"] for index in range(len(self.model.weights))]
        self.epoch_logs, self.earlier_seconds = state["epoch_logs"], state["seconds"]
        for _ in self.epoch_logs:
            iter(self.train)
        if state["stopped"]:
            self.model._initial_epoch = self.params["epochs"]  # stopped early: no epoch left to run
        print(f"resuming after epoch {len(self.epoch_logs)} from the backup in {self.folder}")

    def on_epoch_end(self, epoch, logs=None):
        EpochLogs.on_epoch_end(self, epoch, logs)
        with temporary_dir_for(self.folder) as scratch:
            self._write_to(Path(scratch))
            keras.callbacks.BackupAndRestore.on_epoch_end(self, epoch, logs)
            self._save_state(Path(scratch))
            replace_dir(Path(scratch), self.folder)
        self._write_to(self.folder)

    def _save_state(self, folder: Path) -> None:
        arrays = {f"seed_{index}": variable.numpy() for index, variable in enumerate(self._seed_states())}
        state = {"key": self.key, "epoch_logs": self.epoch_logs, "seconds": self.seconds(),
                 "stopped": bool(self.model.stop_training)}
        stopping = self.stopping
        if stopping is not None:  # as EarlyStopping's on_epoch_end, which runs before this one, left it
            best = None if stopping.best is None else float(stopping.best)
            state["stopping"] = {"wait": stopping.wait, "best": best, "best_epoch": stopping.best_epoch,
                                 "stopped_epoch": stopping.stopped_epoch}
            arrays.update({f"best_{index}": weight for index, weight in enumerate(stopping.best_weights)})
        np.savez(folder / self.ARRAYS, **arrays)
        (folder / self.STATE).write_text(json.dumps(state))


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
