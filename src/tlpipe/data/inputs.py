"""The tf.data input of images: decoded in parallel, optionally augmented, batched; 0-255, as the models take them."""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tlpipe.data.images import load_rgb

Transform = Callable[[tf.Tensor], tf.Tensor]


def image_batches(
    paths: Sequence[str],
    root: Path,
    size: int,
    batch_size: int,
    labels: np.ndarray | None = None,
    augmentation: Transform | None = None,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of float32 RGB images root/<path> at size x size, 0-255; (images, labels) when `labels` are given.

    The trunk's preprocessing is inside the models (tlpipe.model.trunks). Decoding
    runs in parallel and ahead of the consumer (prefetch). `augmentation`
    (tlpipe.data.augment) runs on each image, one after another: its random draws,
    and so the augmented images, then follow from its seed. `shuffle_seed` shuffles
    the images anew on each pass over them, the same way on every run (training).
    """

    def load(path: bytes) -> np.ndarray:
        return load_rgb(root / path.decode(), size)

    def decode(path: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.numpy_function(load, [path], tf.uint8, stateful=False), (size, size, 3))

    paths = [str(path) for path in paths]
    dataset = tf.data.Dataset.from_tensor_slices(paths if labels is None else (paths, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.map(_on_images(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augmentation is not None:
        # Sequential, and per image: over a batch, keras-cv's RandAugment draws for its
        # images in parallel, in no fixed order (measured: 3% of pixels differ between runs).
        dataset = dataset.map(_on_images(augmentation))
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(_on_images(lambda images: tf.cast(images, tf.float32)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _on_images(transform: Transform) -> Callable:
    """`transform` applied to the images of a dataset element that is images, or (images, labels)."""

    def apply(images, labels=None):
        return transform(images) if labels is None else (transform(images), labels)

    return apply
