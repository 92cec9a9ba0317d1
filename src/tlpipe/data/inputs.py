"""The tf.data input of images: decoded in worker processes, optionally augmented, batched; 0-255, as the models take them."""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tlpipe.data.decoding import decode_batch, start_workers, usable_cores
from tlpipe.errors import keeping_user_errors
from tlpipe.runtime import untuned

Transform = Callable[[tf.Tensor], tf.Tensor]
Augmentation = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (image, seed) -> image


def image_batches(
    paths: Sequence[str],
    root: Path,
    size: int,
    batch_size: int,
    labels: np.ndarray | None = None,
    augmentation: Augmentation | None = None,
    shuffle_seed: int | None = None,
    shift: tuple[int, int] = (0, 0),
) -> tf.data.Dataset:
    """Batches of float32 RGB images root/<path> at size x size, 0-255; (images, labels) when `labels` are given.

    The trunk's preprocessing is inside the models (tlpipe.model.trunks). Each batch is
    decoded by worker processes (tlpipe.data.decoding), one batch per worker at a time, up to
    two batches ahead of the consumer (prefetch); set here, with tf.data's autotuner off
    (tlpipe.runtime.untuned). `augmentation` (tlpipe.data.augment) runs on each image,
    one after another, with a seed of its own, drawn anew on each pass: the augmented images
    follow from the seeds and how many passes came before, not from how far a dropped
    iterator read ahead. `shuffle_seed` shuffles the images anew on each pass over them, the
    same way on every run (training). `shift` (dx, dy) moves every image by that many pixels
    after decoding, the border filled by replicating the edge (tlpipe.data.shifts: robustness).
    """
    paths = np.array([str(path) for path in paths])
    start_workers()

    @keeping_user_errors  # a bad image's UserError, which TensorFlow would make an UnknownError
    def decode(indices: np.ndarray) -> np.ndarray:
        return decode_batch(root, list(paths[indices]), size, shift)

    def decode_images(indices: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(decode, [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None, size, size, 3))

    dataset = tf.data.Dataset.range(len(paths))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if labels is not None:
        labels = tf.constant(labels)
        dataset = dataset.map(lambda indices: (indices, tf.gather(labels, indices)))
    dataset = dataset.map(_on_images(decode_images), num_parallel_calls=usable_cores(), deterministic=True)
    if augmentation is not None:
        # Sequential, and per image: over a batch, keras-cv's RandAugment draws for its
        # images in parallel, in no fixed order (measured: 3% of pixels differ between runs).
        dataset = tf.data.Dataset.zip(dataset.unbatch(), _image_seeds())
        dataset = dataset.map(lambda element, seed: _on_images(lambda image: augmentation(image, seed))(*tf.nest.flatten(element)))
        dataset = dataset.batch(batch_size)
    dataset = dataset.map(_on_images(lambda images: tf.cast(images, tf.float32)))
    return untuned(dataset.prefetch(2))


def _image_seeds() -> tf.data.Dataset:
    """One seed per image to augment, drawn anew, the same way on every run, on each pass over the
    dataset (as the shuffle reshuffles): from the global seed (runtime.setup) and the passes before."""
    return tf.data.Dataset.random(seed=0, rerandomize_each_iteration=True)


def _on_images(transform: Transform) -> Callable:
    """`transform` applied to the images of a dataset element that is images, or (images, labels)."""

    def apply(images, labels=None):
        return transform(images) if labels is None else (transform(images), labels)

    return apply
