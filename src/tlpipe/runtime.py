"""Process-wide setup shared by the stages that run TensorFlow."""

import os

import keras
import tensorflow as tf


def setup(seed: int) -> str:
    """Seed every generator and prepare the GPU if there is one; return the device in words."""
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Take GPU memory as needed rather than all of it up front.
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
        return f"GPU ({', '.join(names)})"
    return f"CPU ({os.cpu_count()} cores)"
