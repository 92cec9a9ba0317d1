"""The one training recipe: compile, fit with early stopping on val_loss, keep the best epoch's weights.

The train stage (a head on cached features), the finetune stage (trunk and head on
images) and the benchmark's usual approach all train through `fit_classifier`.
"""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf


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


def compile_classifier(model: keras.Model, learning_rate: float, jit_compile: bool = False, steps_per_execution: int = 1) -> None:
    """Adam (fused) on sparse categorical cross-entropy, with accuracy."""
    model.compile(
        optimizer=FusedAdam(learning_rate),
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
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 2,
) -> FitResult:
    """Compile `model` and train it on `train` (which shuffles itself), validating on `val` every epoch.

    With `patience`, training stops after that many epochs without a lower val_loss and
    the model keeps the best epoch's weights (Keras 3 restores them at the end of
    training, stopped early or not). Without, it trains exactly `epochs` epochs and
    keeps the last one's.

    With `steps_per_epoch`, `train` is one dataset of every epoch's batches in turn
    (tlpipe.cache.FeatureBatches.in_memory): each epoch takes the next that many, all in one
    compiled call (steps_per_execution), which saves the per-step Python and dispatch.
    """
    compile_classifier(model, learning_rate, jit_compile, steps_per_epoch or 1)
    stopping = None
    if patience is not None:
        stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        callbacks = [stopping, *callbacks]
    start = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False, callbacks=list(callbacks), verbose=verbose)
    seconds = time.perf_counter() - start

    val_loss = history.history["val_loss"]
    best = len(val_loss) - 1 if stopping is None else stopping.best_epoch
    return FitResult(
        best_epoch=best + 1,
        epochs_run=len(val_loss),
        best_val_loss=float(val_loss[best]),
        best_val_accuracy=float(history.history["val_accuracy"][best]),
        best_train_accuracy=float(history.history["accuracy"][best]),
        seconds=seconds,
    )


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
