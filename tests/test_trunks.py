import h5py
import keras
import numpy as np
import pytest

from tlpipe.model import trunks
from tlpipe.config import TrunkConfig
from tlpipe.errors import UserError
from tlpipe.model.trunks import build_trunk, hed_weights_file, load_hed_weights

VGG16_CONV_LAYERS = 13


def test_hed_weights_set_all_13_vgg16_conv_layers():
    trunk = build_trunk(TrunkConfig(name="vgg16", weights="hed", image_size=32))
    conv_layers = [layer for layer in trunk.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(conv_layers) == VGG16_CONV_LAYERS
    stored = {}
    with h5py.File(hed_weights_file(), "r") as weights:
        for block in range(1, 6):
            for group in weights[f"block{block}/layers"].values():
                if "name" in group["vars"].attrs and "0" in group["vars"]:
                    stored[group["vars"].attrs["name"]] = group["vars/0"][()], group["vars/1"][()]
    for layer in conv_layers:
        kernel, bias = layer.get_weights()
        if layer.name == "block1_conv1":  # takes RGB: the stored kernel's BGR input channels, reversed
            kernel = kernel[:, :, ::-1, :]
        np.testing.assert_array_equal(kernel, stored[layer.name][0])
        np.testing.assert_array_equal(bias, stored[layer.name][1])


def test_a_hed_file_missing_a_layer_fails_loudly(tmp_path):
    broken = tmp_path / "hed.weights.h5"
    with h5py.File(hed_weights_file(), "r") as source, h5py.File(broken, "w") as target:
        for block in range(1, 6):
            source.copy(f"block{block}", target)
        del target["block5/layers/conv2d_2"]
    vgg16 = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(UserError, match="no HED weights for VGG16 layers block5_conv3"):
        load_hed_weights(vgg16, broken)


def test_imagenet_offline_fails_in_one_line_that_points_to_hed(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setitem(trunks.BUILDERS, "vgg16", offline)
    with pytest.raises(UserError) as error:
        build_trunk(TrunkConfig(name="vgg16", weights="imagenet", image_size=32))
    assert "trunk.weights = imagenet" in str(error.value)
    assert "use trunk.weights: hed" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_weights_file_round_trips(tmp_path):
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet_v2.weights.h5"
    source.save_weights(path)
    trunk = build_trunk(TrunkConfig(name="mobilenet_v2", weights=str(path), image_size=32))
    for expected, actual in zip(source.get_weights(), trunk.get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_a_weights_file_of_another_trunk_is_refused(tmp_path):
    path = tmp_path / "mobilenet.weights.h5"
    keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(UserError, match="does not fit the"):
        build_trunk(TrunkConfig(name="mobilenet_v2", weights=str(path), image_size=32))


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        build_trunk(TrunkConfig(name="vgg16", weights=str(tmp_path / "absent.weights.h5"), image_size=32))


def test_the_trunk_is_frozen_and_cut_at_the_output_layer():
    trunk = build_trunk(TrunkConfig(name="vgg16", weights="none", image_size=64, output_layer="block4_pool"))
    assert trunk.output_shape == (None, 4, 4, 512)
    assert trunk.trainable_weights == []
    assert trunk.layers[-1].name == "block4_pool"


def test_an_unknown_output_layer_lists_valid_ones():
    with pytest.raises(UserError, match=r"trunk.output_layer = 'block9_pool'.*block5_pool"):
        build_trunk(TrunkConfig(name="vgg16", weights="none", image_size=32, output_layer="block9_pool"))
