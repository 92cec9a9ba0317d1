"""Image augmentation with keras-cv layers, for tf.data maps only.

The layers listed in params.yaml's `augment.layers` run in order over each RGB
image (0-255), before the trunk's own preprocessing. They run in tf.data,
never inside a Keras model: there, some keras-cv layers fail to trace (RandAugment's
Equalization raises OperatorNotAllowedInGraphError with Keras 3.15).

Every layer is keras-cv's rather than Keras 3's own. Measured one image at a time
in a tf.data map, as image_batches runs them, on a 2-core CPU (keras-cv vs Keras 3,
images per second, at 64 px | 224 px): RandAugment 792 vs 119 | 96 vs 15 (6.5x
faster), RandomRotation 2,872 vs 2,506 | 351 vs 241, RandomFlip 2,712 vs 5,667 |
337 vs 509; Keras 3 has no RandomCropAndResize. Keras 3's flip would save 0.2 ms
an image at 64 px, under 1% of the VGG16 trunk's 28 ms: not worth a second
library and a second kind of seeding.
"""

import inspect
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tlpipe.config import AugmentConfig
from tlpipe.errors import UserError


def build_augmentation(config: AugmentConfig, image_size: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The augment.layers as one function: (a 0-255 image, its seed) -> a float32 image, 0-255, of the same size.

    Call it in a sequential tf.data map, one image at a time, each with a seed of its own
    (tlpipe.data.inputs.image_batches). keras-cv layers draw from stateful
    generators: each image restarts them all from its seed and augment.seed, so its draws
    follow from those alone, not from how many images the generators drew for before. An
    iterator dropped after reading ahead (prefetch) leaves them further on by as many
    images as it had the time to read: Keras's fit does that with the first training batch,
    to build its metrics, and fine-tuning resumed after a kill could not replay it. Only
    RandAugment's magnitudes come from elsewhere, the global seed, the same on every pass.
    """
    import keras_cv  # 0.7 s (it imports tensorflow_datasets, matplotlib, scikit-learn): only when augmenting

    # Given to the layers that take them; params.yaml may not (config.ARGS_SET_BY_PIPELINE).
    set_by_pipeline = {"value_range": (0, 255), "target_size": (image_size, image_size)}
    layers = []
    for index, (layer, seed) in enumerate(zip(config.layers, layer_seeds(config.seed, len(config.layers)))):
        layer_class = getattr(keras_cv.layers, layer.name)
        accepted = inspect.signature(layer_class).parameters
        fixed = {key: value for key, value in set_by_pipeline.items() if key in accepted}
        try:
            layers.append(layer_class(**layer.args, **fixed, seed=seed))
        except (TypeError, ValueError) as error:
            message = " ".join(str(error).split())
            raise UserError(f"params.yaml: augment.layers.{index} ({layer.name}) args = {layer.args}: {message}") from None

    # keras-cv keeps each layer's generator, a tf.random.Generator, in _random_generator (its documented attribute).
    generators = [inner._random_generator for layer in layers for inner in layer._flatten_layers(include_self=True)]
    generator_seeds = tf.constant(layer_seeds(config.seed, len(generators)), tf.int64)

    def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        for generator, generator_seed in zip(generators, tf.unstack(generator_seeds)):
            state = tf.random.stateless_uniform([3], tf.stack([seed, generator_seed]), minval=None, maxval=None, dtype=tf.int64)
            generator.reset(state)  # Philox (keras-cv's): a 3-word state
        image = tf.cast(image, tf.float32)
        for layer in layers:
            image = layer(image)
        return image

    return augment


def layer_seeds(seed: int, count: int) -> list[int]:
    """One seed per layer (or generator), drawn from `seed`.

    Not seed, seed + 1, ...: tf.random.Generator.from_seed(s + 1) yields the numbers of
    from_seed(s) but the first four, so neighbouring layers would draw alike. Never 0:
    keras-cv takes a seed of 0 as no seed (its global, unseeded generator).
    """
    return [int(state) + 1 for state in np.random.SeedSequence(seed).generate_state(count)]
