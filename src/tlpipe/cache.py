"""The feature cache (data/features/): what the features stage writes and the train stage reads.

  {train,val,test}_x.npy   float16 feature maps, (rows, H, W, C)
  {train,val,test}_y.npy   int32 class indices
  test_shifted_<shift>_{x,y}.npy
                           the same for the test images shifted right, left, down, up by 1/8 of
                           the image size (robustness.shifts of them; tlpipe.data.shifts)
  trunk.keras              the frozen trunk that made them
  meta.json                what made them (trunk, weights, output layer, image size,
                           preprocessing), the classes, the feature shape, timings

Feature maps are appended batch by batch and read back batch by batch
(FeatureBatches), so memory stays flat as the dataset grows: a split is held in
memory only up to MEMORY_BUDGET_BYTES. meta.json lets a cache (and a model
trained on it) say what it is without params.yaml.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlpipe.config import FEATURES_DIR
from tlpipe.errors import UserError, summary
from tlpipe.files import naming, write_json
from tlpipe.model.loading import load_model_file
from tlpipe.runtime import untuned

TRUNK_FILE = "trunk.keras"
META_FILE = "meta.json"
REBUILD = "rebuild the cache: dvc repro -f features"
# A split's features up to this size are read into memory once, larger ones batch by batch from disk: at
# 64 px (16 KiB a row) a split of up to 4,096 rows, at 224 px (196 KiB a row) of up to 334.
MEMORY_BUDGET_BYTES = 64 * 2**20


def write_features(trunk: keras.Model, batches: Iterable, path: Path, count: int) -> None:
    """Run the trunk over `batches`, appending each batch's float16 features to a .npy file.

    Under a tf.distribute strategy with several replicas (`batches` a tf.data.Dataset), each
    batch is split across them (tlpipe.runtime.strategy)."""
    feature_maps = _replicated_outputs(trunk, batches) if tf.distribute.has_strategy() else map(trunk.predict_on_batch, batches)
    write_feature_maps(feature_maps, path, (count, *trunk.output_shape[1:]))


def write_feature_maps(feature_maps: Iterable, path: Path, shape: tuple[int, ...]) -> None:
    """Append batches of feature maps, in row order, to a float16 .npy file of `shape`.

    Plain writes rather than a memory map: the pages of a written memory map count
    in the process's resident memory until it is closed, which would make memory
    grow with the dataset.
    """
    count = shape[0]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False, "shape": shape}
    written = 0
    with naming(path), open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for batch in feature_maps:
            output = np.asarray(batch, dtype=np.float16)
            file.write(output.tobytes())
            written += len(output)
    if written != count:
        raise RuntimeError(f"{path}: the trunk gave {written} feature maps for {count} images")


def _replicated_outputs(trunk: keras.Model, batches: tf.data.Dataset) -> Iterable[np.ndarray]:
    """The trunk's outputs for each batch, the batch split across the current strategy's replicas, in order.

    A short last batch can leave a replica without images, and TensorFlow's CPU convolution
    returns a wrongly shaped tensor for an empty batch (Keras's own predict then fails): each
    batch is padded, by repeating its last image, to a multiple of the replica count, and the
    padding's outputs are dropped.
    """
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync

    def padded(images):
        size = tf.shape(images)[0]
        padding = -size % replicas
        return tf.concat([images, tf.repeat(images[-1:], padding, axis=0)], 0), tf.range(size + padding) < size

    step = tf.function(lambda images, real: strategy.run(lambda x, keep: (trunk(x, training=False), keep), args=(images, real)))
    for images, real in strategy.experimental_distribute_dataset(batches.map(padded)):
        output, keep = (np.concatenate(strategy.experimental_local_results(part)) for part in step(images, real))
        yield output[keep]


def write_labels(directory: Path, split: str, labels: np.ndarray) -> None:
    with naming(labels_path(directory, split)):
        np.save(labels_path(directory, split), labels)


def labels_path(directory: Path, split: str) -> Path:
    return directory / f"{split}_y.npy"


def features_path(directory: Path, split: str) -> Path:
    return directory / f"{split}_x.npy"


def shifted_split(shift: str) -> str:
    """The cache's name for the test split shifted by `shift` (right, left, down, up)."""
    return f"test_shifted_{shift}"


def write_meta(directory: Path, meta: dict) -> None:
    write_json(directory / META_FILE, meta)


def load_meta(directory: Path = FEATURES_DIR) -> dict:
    if not (directory / META_FILE).is_file():
        raise UserError(f"{directory}: no feature cache; run the features stage first (dvc repro features)")
    try:
        return json.loads((directory / META_FILE).read_text())
    except ValueError as error:  # truncated or corrupt JSON, or not UTF-8
        raise UserError(f"{directory / META_FILE}: corrupt ({summary(error)}); {REBUILD}") from None


def save_trunk(trunk: keras.Model, directory: Path) -> None:
    with naming(directory / TRUNK_FILE):
        trunk.save(directory / TRUNK_FILE)


def load_trunk(directory: Path = FEATURES_DIR) -> keras.Model:
    return load_model_file(directory / TRUNK_FILE, REBUILD)


def _load_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A cached .npy file; a missing, truncated or corrupt one is a UserError that says how to rebuild it."""
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (ValueError, EOFError, FileNotFoundError) as error:  # a truncated map: "mmap length is greater than file size"
        raise UserError(f"{path}: missing, truncated or corrupt ({summary(error)}); {REBUILD}") from None


def load_split(split: str, directory: Path = FEATURES_DIR) -> tuple[np.ndarray, np.ndarray]:
    """A split's cached features (memory-mapped) and labels."""
    return _load_array(features_path(directory, split), mmap_mode="r"), _load_array(labels_path(directory, split))


def training_rows(images: np.ndarray, count: int, views: int) -> np.ndarray:
    """The cache rows of training images `images` (indices among `count`): each image's clean row i
    and its augmented views' rows n + i, ..., views * n + i (the features stage's layout)."""
    return np.concatenate([images + view * count for view in range(1 + views)])


class FeatureBatches(keras.utils.PyDataset):
    """A split's cached features and labels, in batches: from memory once `dataset()` (what
    training reads, epoch after epoch) has read a split that fits `memory_budget` bytes, else
    from disk one batch at a time (a single pass, as predict makes, gains nothing from holding).

    Read from disk, each batch maps the .npy file, copies its rows out and unmaps it: a
    memory map kept open would keep every page it touched resident, the whole split by the
    end of an epoch. With `shuffle_seed`, the rows come in a new order every epoch, the
    same way on every run. `dataset()` gives the same batches as a tf.data pipeline.
    """

    def __init__(self, split: str, batch_size: int, shuffle_seed: int | None = None, directory: Path = FEATURES_DIR,
                 rows: np.ndarray | None = None, memory_budget: int = MEMORY_BUDGET_BYTES):
        super().__init__()
        self.features_path = features_path(directory, split)
        self.row_labels = _load_array(labels_path(directory, split))  # of every cached row
        # Checked here, in the caller's thread: in __getitem__, under model.fit, an error would
        # surface as a TensorFlow traceback rather than one line.
        cached = _load_array(self.features_path, mmap_mode="r")
        if len(cached) != len(self.row_labels):
            raise UserError(f"{self.features_path}: {len(cached)} feature maps for {len(self.row_labels)} labels; {REBUILD}")
        self.feature_shape, self.feature_dtype = cached.shape[1:], cached.dtype
        self.fits_budget = cached.nbytes <= memory_budget
        del cached  # unmapped
        # Every cached row, as a tensor (a tf.data pipeline would copy an array into one), once dataset() holds
        # them; None: read from disk.
        self.held = None
        self.order = np.arange(len(self.row_labels)) if rows is None else np.asarray(rows)  # `rows`: a subset
        self.labels = self.row_labels[self.order]
        self.batch_size = batch_size
        self.rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self._read(self._batch_rows(index))

    def _batch_rows(self, index: int) -> np.ndarray:
        # Sorted, the rows of a batch are read front to back; their order within a batch does not matter.
        return np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])

    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.held is None:
            return np.load(self.features_path, mmap_mode="r")[rows], self.row_labels[rows]
        return tf.gather(self.held, rows).numpy(), self.row_labels[rows]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)

    def _epoch_rows(self) -> np.ndarray:
        """An epoch's rows, batch after batch, in an order drawn first: Keras's fit, reading a PyDataset,
        calls on_epoch_end as it starts (resetting its epoch iterator) as well as after every epoch."""
        self.on_epoch_end()
        return np.concatenate([self._batch_rows(index) for index in range(len(self))]).astype(np.int64)

    def dataset(self) -> tf.data.Dataset:
        """The batches that Keras's fit would read from this PyDataset, in the same order, as a tf.data pipeline.

        Keras feeds a PyDataset through tf.data's from_generator, about 3 ms of Python per batch
        on a 2-core CPU, more than a GAP head's whole step: here Python runs once per epoch (to
        draw its order), and once per batch only for a split read from disk. Each iterator is one
        epoch, its order drawn when it is first read (_epoch_rows); a fit makes a new one for
        every epoch. tf.data's autotuner is off (tlpipe.runtime.untuned): measured at 64 px, the heads'
        epochs took 8-15% less time, with the same weights.
        """
        if self.fits_budget and self.held is None:
            self.held = tf.constant(_load_array(self.features_path))
        batches = tf.data.Dataset.range(1).flat_map(self._epoch_rows_dataset).batch(self.batch_size)
        if self.held is None:
            batches = batches.map(self._read_tensors)
        else:
            labels = tf.constant(self.row_labels)
            batches = batches.map(lambda rows: (tf.gather(self.held, rows), tf.gather(labels, rows)))
        return untuned(batches.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(1))

    def _epoch_rows_dataset(self, _) -> tf.data.Dataset:
        rows = tf.numpy_function(self._epoch_rows, [], tf.int64)
        rows.set_shape((len(self.labels),))
        return tf.data.Dataset.from_tensor_slices(rows)

    def _read_tensors(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features, labels = tf.numpy_function(self._read, [rows], (tf.as_dtype(self.feature_dtype), tf.as_dtype(self.row_labels.dtype)))
        features.set_shape((None, *self.feature_shape))
        labels.set_shape((None,))
        return features, labels
