"""Augmentation (keras-cv in tf.data) and the augmented views the features stage caches."""

import json

import keras
import numpy as np
import pytest

from builders import REPO, config_error, write_params, write_split_dataset
from tlpipe.cache import load_split
from tlpipe.config import RAW_DIR, AugmentConfig, load_config
from tlpipe.data.augment import build_augmentation
from tlpipe.data.inputs import image_batches
from tlpipe.stages import features
from tlpipe.errors import UserError

SIZE = 32
DEFAULTS = load_config(REPO / "params.yaml")
# All the test images in one batch: over a batch, RandAugment would draw in no fixed order.
BATCH_SIZE = 64


def images(paths, augmentation=None) -> np.ndarray:
    """The images as the features stage's input pipeline gives them to the trunk."""
    return np.concatenate([batch.numpy() for batch in image_batches(paths, RAW_DIR, SIZE, BATCH_SIZE, augmentation=augmentation)])


def augmented_images(paths, seed: int, layers=DEFAULTS.augment.layers) -> np.ndarray:
    keras.utils.set_random_seed(DEFAULTS.seed)  # as every stage does: RandAugment draws its magnitudes from it
    return images(paths, build_augmentation(AugmentConfig(layers=layers, seed=seed, views=1), SIZE))


@pytest.fixture
def image_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_split_dataset(tmp_path, {"train": 16})["path"]


def test_the_same_seed_gives_the_same_augmented_images(image_paths):
    first = augmented_images(image_paths, seed=7)
    np.testing.assert_array_equal(augmented_images(image_paths, seed=7), first)
    assert not np.array_equal(augmented_images(image_paths, seed=8), first)
    assert not np.array_equal(images(image_paths), first)


def test_augmentation_sees_one_image_at_a_time(image_paths):
    # Over a batch, RandAugment draws for its images in parallel, in no fixed order: the
    # augmented images then differ between runs, but too seldom for the test above to be sure to see.
    shapes = []

    def spy(image, seed):
        shapes.append(tuple(image.shape))
        return image

    images(image_paths, spy)
    assert shapes == [(SIZE, SIZE, 3)]


def test_an_iterator_dropped_after_reading_ahead_leaves_the_next_pass_as_it_was(image_paths):
    # Keras's fit reads its first training batch from an iterator it then drops, which had read ahead (prefetch)
    # as far as it had the time to: the next pass must not depend on how far.
    def second_pass(first_pass) -> np.ndarray:
        keras.utils.set_random_seed(DEFAULTS.seed)
        augmentation = build_augmentation(AugmentConfig(layers=DEFAULTS.augment.layers, seed=7, views=1), SIZE)
        dataset = image_batches(image_paths, RAW_DIR, SIZE, 1, augmentation=augmentation)
        first_pass(iter(dataset))
        return np.concatenate([batch.numpy() for batch in dataset])

    np.testing.assert_array_equal(second_pass(next), second_pass(list))


@pytest.mark.parametrize("layer", DEFAULTS.augment.layers, ids=lambda layer: layer.name)
def test_each_layer_keeps_the_image_size(image_paths, layer):
    augmented = augmented_images(image_paths, seed=7, layers=[layer])
    assert augmented.shape == (len(image_paths), SIZE, SIZE, 3)
    assert np.isfinite(augmented).all()


def test_bad_layer_args_fail_in_one_line():
    config = AugmentConfig(layers=[{"name": "RandomRotation", "args": {"factor": 0.1, "fill": "reflect"}}], seed=1, views=1)
    with pytest.raises(UserError, match=r"augment\.layers\.0 \(RandomRotation\) args = .*Unrecognized keyword arguments.*'fill'") as error:
        build_augmentation(config, SIZE)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"augment.views": -1}, "augment.views = -1"),
        ({"augment.views": 2, "augment.layers": []}, "augment.views = 2: needs at least one entry in augment.layers"),
        ({"augment.layers": [{"name": "RandomBlur"}]}, "augment.layers.0.name = 'RandomBlur'"),
        ({"augment.layers": [{"name": "RandAugment", "args": {"value_range": [0, 1]}}]}, "augment.layers.0.args.value_range: set by the pipeline"),
        ({"augment.layers": [{"name": "RandomFlip", "args": {"seed": 3}}]}, "augment.layers.0.args.seed: set by the pipeline (augment.seed)"),
        ({"augment.layers": [{"name": "RandomFlip", "arg": {}}]}, "augment.layers.0.arg: unknown key"),
        ({"augment.seed": -1}, "augment.seed = -1"),
    ],
)
def test_a_bad_augment_param_fails_in_one_line(tmp_path, overrides, expected):
    message = config_error(tmp_path, **overrides)
    assert expected in message and "\n" not in message


def test_views_multiply_the_cached_training_rows_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = write_split_dataset(tmp_path, {"train": 3, "val": 2, "test": 2})
    counts = manifest["split"].value_counts()
    # float32: under `auto` the two runs could time their way to different precisions.
    common = {"trunk.name": "vgg16", "trunk.weights": "none", "trunk.image_size": SIZE, "trunk.output_layer": "",
              "trunk.precision": "float32"}

    write_params(tmp_path, **common, **{"augment.views": 0})
    features.main()
    clean = {split: load_split(split) for split in ("train", "val", "test")}
    clean = {split: (np.array(x), y) for split, (x, y) in clean.items()}  # copies: the next run replaces the files

    write_params(tmp_path, **common, **{"augment.views": 2})
    features.main()
    train_x, train_y = load_split("train")
    n = counts["train"]
    assert len(train_x) == len(train_y) == 3 * n
    np.testing.assert_array_equal(train_x[:n], clean["train"][0])  # the clean rows come first, as without views
    np.testing.assert_array_equal(train_y, np.tile(clean["train"][1], 3))
    for view in (1, 2):
        assert not np.array_equal(train_x[view * n:(view + 1) * n], clean["train"][0])
    for split in ("val", "test"):
        x, y = load_split(split)
        assert len(x) == counts[split]
        np.testing.assert_array_equal(x, clean[split][0])
        np.testing.assert_array_equal(y, clean[split][1])
    meta = json.loads((tmp_path / "reports/features.json").read_text())
    assert meta["augment_views"] == 2
    assert meta["trunk_images"] == len(manifest) + 2 * n
    assert meta["split_sizes"] == {split: int(counts[split]) for split in ("train", "val", "test")}
