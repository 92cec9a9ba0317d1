"""Process-wide setup shared by the stages that run TensorFlow."""

import os

import keras
import tensorflow as tf

from tlpipe.errors import UserError


def setup(seed: int, devices: str | int = "auto") -> str:
    """Seed every generator and prepare the GPU if there is one; return the device in words.

    `devices` is runtime.devices: `cpu` hides the GPUs from this process (before TensorFlow starts).
    """
    keras.utils.set_random_seed(seed)
    if devices == "cpu":
        tf.config.set_visible_devices([], "GPU")
    gpus = tf.config.get_visible_devices("GPU")
    for gpu in gpus:
        # Take GPU memory as needed rather than all of it up front.
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
        return f"GPU ({', '.join(names)})"
    return f"CPU ({os.cpu_count()} cores)"


def untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuner off: its parallelism and buffers are the ones its builder set.

    Measured on a 2-core CPU (AMD EPYC), VGG16 in bfloat16 at 224 px fed by tf.data: with the
    autotuner on, each pass over the images ran at random at 16 or at 9.4 img/s, its compute
    threads waiting on each other with the cores idle; with it off, 16 img/s in 16 passes of 16.
    Fed the same images as arrays, the trunk ran at 16 img/s throughout.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def strategy(devices: str | int, multi_worker: bool = False) -> tf.distribute.Strategy:
    """The tf.distribute strategy runtime.devices asks for on this machine; call it after setup().

    auto: MirroredStrategy over every visible GPU when there are several, else the default
    strategy (one GPU, or the CPU); all: MirroredStrategy over every GPU, or over every CPU
    device where there is none; N: over the first N of those. With `multi_worker` and
    TF_CONFIG set: MultiWorkerMirroredStrategy over the cluster TF_CONFIG names.
    """
    if multi_worker and os.environ.get("TF_CONFIG"):
        return MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if devices in ("auto", "cpu"):
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    visible = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
    count = len(visible) if devices == "all" else devices
    if count > len(visible):
        kind = "GPU" if gpus else "CPU"
        raise UserError(f"params.yaml: runtime.devices = {devices}: this machine shows {len(visible)} {kind} "
                        f"device(s); use auto, all or at most {len(visible)}")
    return tf.distribute.MirroredStrategy(visible[:count])


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute.MultiWorkerMirroredStrategy, with the `reduce` that Keras 3's fit expects of it.

    Keras 3.15 reduces nests of per-replica values, and per-replica scalars along axis 0, which
    TensorFlow's reduce refuses across workers (keras-team/keras#20585, open): here each value of
    a nest is reduced on its own, and a scalar across the replicas only.
    """

    def reduce(self, reduce_op, value, axis):
        def reduce_one(per_replica):
            rank = self.experimental_local_results(per_replica)[0].shape.rank
            return super(MultiWorkerMirroredStrategy, self).reduce(reduce_op, per_replica, axis if rank else None)

        return tf.nest.map_structure(reduce_one, value)


def strategy_summary(strategy: tf.distribute.Strategy) -> dict:
    """The strategy's class and replica count, for the stages' reports."""
    return {"strategy": type(strategy).__name__.removeprefix("_"), "replicas": strategy.num_replicas_in_sync}
