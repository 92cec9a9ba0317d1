"""The feature cache (data/features/): what the features stage writes and the train stage reads.

  {train,val,test}_x.npy   float16 feature maps, (rows, H, W, C)
  {train,val,test}_y.npy   int32 class indices
  trunk.keras              the frozen trunk that made them
  meta.json                what made them (trunk, weights, output layer, image size,
                           preprocessing), the classes, the feature shape, timings

Feature maps are appended batch by batch and read back batch by batch
(FeatureBatches), so memory stays flat as the dataset grows. meta.json lets a
cache (and a model trained on it) say what it is without params.yaml.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np

from tlpipe.config import FEATURES_DIR
from tlpipe.errors import UserError
from tlpipe.files import write_json

TRUNK_FILE = "trunk.keras"
META_FILE = "meta.json"


def write_features(trunk: keras.Model, batches: Iterable, path: Path, count: int) -> None:
    """Run the trunk over `batches`, appending each batch's float16 features to a .npy file."""
    feature_maps = (trunk.predict_on_batch(batch) for batch in batches)
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
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for batch in feature_maps:
            output = np.asarray(batch, dtype=np.float16)
            file.write(output.tobytes())
            written += len(output)
    if written != count:
        raise RuntimeError(f"{path}: the trunk gave {written} feature maps for {count} images")


def write_labels(directory: Path, split: str, labels: np.ndarray) -> None:
    np.save(directory / f"{split}_y.npy", labels)


def features_path(directory: Path, split: str) -> Path:
    return directory / f"{split}_x.npy"


def write_meta(directory: Path, meta: dict) -> None:
    write_json(directory / META_FILE, meta)


def load_meta(directory: Path = FEATURES_DIR) -> dict:
    if not (directory / META_FILE).is_file():
        raise UserError(f"{directory}: no feature cache; run the features stage first (dvc repro features)")
    return json.loads((directory / META_FILE).read_text())


def load_trunk(directory: Path = FEATURES_DIR) -> keras.Model:
    return keras.models.load_model(directory / TRUNK_FILE)


def load_split(split: str, directory: Path = FEATURES_DIR) -> tuple[np.ndarray, np.ndarray]:
    """A split's cached features (memory-mapped) and labels."""
    return np.load(features_path(directory, split), mmap_mode="r"), np.load(directory / f"{split}_y.npy")


def training_rows(images: np.ndarray, count: int, views: int) -> np.ndarray:
    """The cache rows of training images `images` (indices among `count`): each image's clean row i
    and its augmented views' rows n + i, ..., views * n + i (the features stage's layout)."""
    return np.concatenate([images + view * count for view in range(1 + views)])


class FeatureBatches(keras.utils.PyDataset):
    """A split's cached features and labels, in batches read from disk one at a time.

    Each batch maps the .npy file, copies its rows out and unmaps it: a memory map
    kept open would keep every page it touched resident, the whole split by the end
    of an epoch. With `shuffle_seed`, the rows come in a new order every epoch, the
    same way on every run.
    """

    def __init__(self, split: str, batch_size: int, shuffle_seed: int | None = None, directory: Path = FEATURES_DIR,
                 rows: np.ndarray | None = None):
        super().__init__()
        self.features_path = features_path(directory, split)
        self.row_labels = np.load(directory / f"{split}_y.npy")  # of every cached row
        self.order = np.arange(len(self.row_labels)) if rows is None else np.asarray(rows)  # `rows`: a subset
        self.labels = self.row_labels[self.order]
        self.batch_size = batch_size
        self.rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # Sorted, the rows of a batch are read front to back; their order within a batch does not matter.
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        features = np.load(self.features_path, mmap_mode="r")
        return features[rows], self.row_labels[rows]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)
