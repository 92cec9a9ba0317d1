"""Raw images in: the trunk's preprocessing inside the saved model, class names with it, and `tlpipe predict`."""

import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from builders import REPO
from tlpipe.config import HeadConfig, TrunkConfig
from tlpipe.data.labels import labels_path, read_labels
from tlpipe.errors import UserError
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.saving import class_names_of, load_classifier, save_classifier
from tlpipe.model.trunks import BUILDERS, FIRST_VGG16_CONV, build_trunk

SIZE = 32
CLASSES = ["boot", "sandal", "shirt"]
HEAD = HeadConfig(hidden=[16], dropout=0.2, learning_rate=1e-3, epochs=1, batch_size=8)


def raw_images(count: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 images, each of its own colour with noise: unlike pure noise, they differ enough for a
    random trunk to tell them apart."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (count, 1, 1, 3))
    return np.clip(colours + rng.integers(-40, 41, (count, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def classifier(trunk_name: str, output_layer: str = "") -> keras.Model:
    """Trunk (random weights, fixed seed) and a GAP head: RGB images 0-255 -> probabilities."""
    keras.utils.set_random_seed(0)
    trunk = build_trunk(TrunkConfig(name=trunk_name, weights="none", image_size=SIZE, output_layer=output_layer))
    return assemble(trunk, build_head("gap", trunk.output_shape[1:], len(CLASSES), HEAD))


@pytest.mark.parametrize("trunk_name, output_layer", [("vgg16", "block4_pool"), ("mobilenet_v2", "")])
def test_the_model_on_raw_images_equals_preprocess_input_outside(trunk_name, output_layer):
    model = classifier(trunk_name, output_layer)
    trunk = model.get_layer("trunk")
    # As before: the keras.applications trunk on preprocess_input's output, with the same weights
    # (VGG16's first kernel back in BGR order).
    outside = BUILDERS[trunk_name](include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    outside = keras.Model(outside.input, outside.get_layer(output_layer or outside.layers[-1].name).output)
    weights = {layer.name: layer.get_weights() for layer in trunk.layers}
    for layer in (layer for layer in outside.layers if layer.weights):
        layer_weights = weights[layer.name]
        if layer.name == FIRST_VGG16_CONV and trunk_name == "vgg16":
            layer_weights = [layer_weights[0][:, :, ::-1, :], layer_weights[1]]
        layer.set_weights(layer_weights)
    images = raw_images(16)
    preprocess = getattr(keras.applications, trunk_name).preprocess_input
    features = outside.predict(preprocess(images.astype("float32")), verbose=0)
    # A random trunk's features are large and all positive: standardize the head's input, through
    # its first layer's weights, so that its softmax stays spread and its classes differ.
    pooled = features.mean(axis=(1, 2))
    dense = model.get_layer("gap_head").get_layer("dense_1")
    kernel = dense.get_weights()[0] / pooled.std(axis=0).mean()
    dense.set_weights([kernel, -pooled.mean(axis=0) @ kernel])
    head = model.get_layer("gap_head")
    expected = head.predict(features, verbose=0)
    actual = model.predict(images, verbose=0)  # uint8, 0-255
    assert expected.max() < 0.99 and len(set(expected.argmax(axis=1))) > 1, "degenerate outputs test nothing"
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert model.count_params() == outside.count_params() + head.count_params()  # preprocessing adds no parameters


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "gap.keras"
    save_classifier(classifier("vgg16", "block2_pool"), path, CLASSES)
    return path


def test_the_class_names_travel_with_the_model(saved):
    assert read_labels(labels_path(saved)) == CLASSES
    assert labels_path(saved).name == "gap.labels.txt"
    assert class_names_of(saved) == CLASSES
    model = keras.models.load_model(saved)  # safe mode, no custom objects
    assert model.get_layer("trunk").get_layer("preprocessing").get_config()["scale"] == 1.0
    assert load_classifier(saved)[1] == CLASSES


def test_a_model_for_another_image_size_or_a_missing_one_fails_in_one_line(saved, tmp_path):
    with pytest.raises(UserError, match=r"takes 32x32 images, not 64x64 .*re-run dvc repro"):
        load_classifier(saved, image_size=64)
    with pytest.raises(UserError, match="no such model"):
        load_classifier(tmp_path / "absent.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a Keras model tlpipe can load"):
        load_classifier(tmp_path / "junk.keras")


def test_a_model_saved_before_preprocessing_moved_inside_is_refused(tmp_path):
    images = keras.Input((SIZE, SIZE, 3))
    old = keras.Model(images, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(images)))
    save_classifier(old, tmp_path / "old.keras", CLASSES)
    with pytest.raises(UserError, match="expects preprocessed images"):
        load_classifier(tmp_path / "old.keras")


def predict(*arguments, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlpipe.cli", "predict", *map(str, arguments)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_predict_classifies_a_folder_and_lists_the_corrupt_file_it_skips(saved, tmp_path):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    images = raw_images(3, seed=1)
    Image.fromarray(images[0]).save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "more" / "b.png")
    Image.fromarray(images[2]).convert("CMYK").save(folder / "more" / "c.jpg", quality=95)
    (folder / "broken.jpg").write_bytes((folder / "more" / "c.jpg").read_bytes()[:300])  # cut short
    (folder / "notes.txt").write_text("not an image: left out of a folder")

    result = predict(folder, "--model", saved, "--top-k", 2, "--out", tmp_path / "predictions.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"skipped {folder / 'broken.jpg'}: OSError" in result.stderr
    assert "3 images (1 skipped)" in result.stdout
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert list(table.columns) == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert sorted(table["path"]) == sorted(str(path) for path in (folder / "a.png", folder / "more/b.png", folder / "more/c.jpg"))
    assert set(table["class_1"]) <= set(CLASSES) and (table["probability_1"] >= table["probability_2"]).all()

    # What a user's own code gets from the saved model on the same files, decoded as predict does.
    from tlpipe.data.images import load_rgb
    batch = np.stack([load_rgb(path, SIZE) for path in table["path"]])  # uint8
    expected = np.array(CLASSES)[keras.models.load_model(saved).predict(batch, verbose=0).argmax(axis=1)]
    assert list(table["class_1"]) == list(expected)


def test_predict_without_a_model_fails_in_one_line(tmp_path):
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "a.png")
    result = predict(tmp_path / "a.png", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: models/gap.keras: no such model")
    assert "Traceback" not in result.stderr
