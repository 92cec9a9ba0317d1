"""The two classification heads compared on the same frozen trunk, and the full model.

Flatten keeps every position of the feature map, so its first Dense layer has
H·W·C inputs; global average pooling keeps one value per channel, C inputs.
"""

import keras

from tlpipe.config import HeadConfig

POOLING = {
    "flatten": keras.layers.Flatten,
    "gap": keras.layers.GlobalAveragePooling2D,
}


def build_head(name: str, feature_shape: tuple[int, ...], num_classes: int, config: HeadConfig) -> keras.Model:
    """Pooling -> (Dense(relu) -> Dropout) per hidden size -> Dense(softmax), on the trunk's feature map.

    Dropout also follows the pooling, as in the Keras transfer-learning guide.
    """
    inputs = keras.Input(feature_shape, name="features")
    x = POOLING[name](name=name)(inputs)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="pooled_dropout")(x)
    for index, units in enumerate(config.hidden, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=head_layer_name(name))


def head_layer_name(name: str) -> str:
    return f"{name}_head"


def assemble(trunk: keras.Model, head: keras.Model) -> keras.Model:
    """The inference model: RGB images (0-255) -> trunk (frozen, preprocessing inside) -> head -> class probabilities."""
    images = keras.Input(trunk.input_shape[1:], name="images")
    return keras.Model(images, head(trunk(images)), name=f"{head.name}_classifier")
