"""The feature cache: written batch by batch, read back batch by batch, never all in memory."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tlpipe.cache import MEMORY_BUDGET_BYTES, FeatureBatches, write_features

ROWS = 70
BATCH = 16
# A split held in memory (the default budget) and one read from disk batch by batch.
BUDGETS = pytest.mark.parametrize("memory_budget", [MEMORY_BUDGET_BYTES, 0], ids=["held", "from_disk"])


@pytest.fixture
def cache(tmp_path) -> tuple[Path, np.ndarray]:
    """A train split of ROWS cached feature maps written by write_features, and the trunk's outputs in float16."""
    trunk = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 1)])
    images = np.random.default_rng(0).normal(size=(ROWS, 4, 4, 3)).astype(np.float32)
    write_features(trunk, tf.data.Dataset.from_tensor_slices(images).batch(BATCH), tmp_path / "train_x.npy", ROWS)
    np.save(tmp_path / "train_y.npy", np.arange(ROWS, dtype=np.int32))  # label = row number
    return tmp_path, trunk.predict(images, verbose=0).astype(np.float16)


def test_written_features_load_as_the_trunk_outputs_in_float16(cache):
    directory, expected = cache
    written = np.load(directory / "train_x.npy")
    assert written.dtype == np.float16 and written.shape == (ROWS, 4, 4, 5)
    np.testing.assert_array_equal(written, expected)


def test_write_features_refuses_a_count_that_does_not_match_the_images(tmp_path):
    trunk = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Conv2D(1, 1)])
    batches = tf.data.Dataset.from_tensor_slices(np.zeros((3, 2, 2, 1), np.float32)).batch(2)
    with pytest.raises(RuntimeError, match="gave 3 feature maps for 4 images"):
        write_features(trunk, batches, tmp_path / "x.npy", 4)


@BUDGETS
def test_unshuffled_batches_are_the_rows_in_order(cache, memory_budget):
    directory, expected = cache
    batches = FeatureBatches("train", BATCH, directory=directory, memory_budget=memory_budget)
    batches.dataset()  # holds the split, where it fits the budget
    assert len(batches) == 5  # 70 rows: 4 full batches and one of 6
    x = np.concatenate([batches[i][0] for i in range(len(batches))])
    y = np.concatenate([batches[i][1] for i in range(len(batches))])
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, np.arange(ROWS))


def epoch(batches: FeatureBatches) -> tuple[np.ndarray, np.ndarray]:
    x, y = zip(*(batches[i] for i in range(len(batches))))
    batches.on_epoch_end()
    return np.concatenate(x), np.concatenate(y)


def test_shuffled_batches_cover_every_row_once_per_epoch_in_a_seeded_new_order(cache):
    directory, expected = cache
    batches = FeatureBatches("train", BATCH, shuffle_seed=7, directory=directory)
    first_x, first_y = epoch(batches)
    second_x, second_y = epoch(batches)
    for x, y in ((first_x, first_y), (second_x, second_y)):
        assert sorted(y) == list(range(ROWS))
        np.testing.assert_array_equal(x, expected[y])  # each row keeps its label
    assert not np.array_equal(first_y, second_y)

    again = FeatureBatches("train", BATCH, shuffle_seed=7, directory=directory)
    np.testing.assert_array_equal(epoch(again)[1], first_y)
    np.testing.assert_array_equal(epoch(again)[1], second_y)


@BUDGETS
def test_reading_a_batch_leaves_the_feature_file_unmapped(cache, memory_budget):
    # A memory map kept open would hold every page read in resident memory: the whole split by an epoch's end.
    directory, _ = cache
    batches = FeatureBatches("train", BATCH, directory=directory, memory_budget=memory_budget)
    batches.dataset()  # holds the split, where it fits the budget
    x, _ = batches[0]
    mapped = Path("/proc/self/maps").read_text()
    assert str((directory / "train_x.npy").resolve()) not in mapped
    assert x.shape == (BATCH, 4, 4, 5)


@BUDGETS
def test_each_iterator_of_the_dataset_is_the_next_epoch_of_batches(cache, memory_budget):
    directory, _ = cache
    dataset = FeatureBatches("train", BATCH, shuffle_seed=7, directory=directory, memory_budget=memory_budget).dataset()
    expected = FeatureBatches("train", BATCH, shuffle_seed=7, directory=directory)
    epochs = []
    for _ in range(2):
        expected.on_epoch_end()  # as Keras's fit calls it before every epoch
        batches = [(x.numpy(), y.numpy()) for x, y in dataset]
        assert len(batches) == len(expected)
        for index, (x, y) in enumerate(batches):
            np.testing.assert_array_equal(x, expected[index][0])
            np.testing.assert_array_equal(y, expected[index][1])
        epochs.append(np.concatenate([y for _, y in batches]))
    assert not np.array_equal(*epochs)


def test_only_training_holds_a_split_and_only_within_the_memory_budget(cache):
    directory, _ = cache
    size = (directory / "train_x.npy").stat().st_size
    within, over = (FeatureBatches("train", BATCH, directory=directory, memory_budget=budget) for budget in (size, size // 2))
    for batches in (within, over):
        assert len(batches[0][0]) == BATCH  # read as predict reads: nothing held
    assert within.held is None and over.held is None
    for batches in (within, over):
        batches.dataset()
    assert within.held is not None and over.held is None
