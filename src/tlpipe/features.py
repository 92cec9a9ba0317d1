"""Stage `features`: run the frozen trunk once over every image and cache its feature maps.

Both heads train on this cache, so the trunk (100-1000x the cost of a head
epoch) never runs per epoch. Feature maps are appended batch by batch to float16
.npy files, and read back batch by batch (FeatureBatches), so memory stays flat
as the dataset grows.
The trunk itself is saved beside them: the train stage puts exactly this trunk
under each head.

With augment.views = K > 0, each training image also goes through the augment
layers K times, and the trunk's output for each augmented view is cached too:
training rows i, n + i, ..., K*n + i are image i clean, then its K views (n
training images). The trunk thus runs 1 + K times over the training split, once;
validation and test images are never augmented.

data/features/
  {train,val,test}_x.npy   float16, (rows, H, W, C)
  {train,val,test}_y.npy   int32 class indices
  trunk.keras              the frozen trunk
  meta.json                classes, feature shape, trunk, augmented views, timings
"""

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tlpipe import runtime
from tlpipe.augment import build_augmentation
from tlpipe.config import FEATURES_DIR, MANIFEST, RAW_DIR, REPORTS_DIR, TrunkConfig, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.files import replace_dir, temporary_dir_for, write_json
from tlpipe.images import load_rgb
from tlpipe.split import SPLITS
from tlpipe.trunks import build_trunk, preprocess_input


def main() -> None:
    config = load_config()
    device = runtime.setup(config.seed)
    manifest = read_manifest()
    classes = class_names(manifest)
    trunk = build_trunk(config.trunk)
    trunk.compile(jit_compile=False)  # XLA slows the trunk pass on CPU (measured: VGG16 2x slower)
    feature_shape = trunk.output_shape[1:]
    views = config.augment.views
    augmentation = build_augmentation(config.augment, config.trunk.image_size) if views else None
    print(f"features: {config.trunk.name} ({config.trunk.weights}) on {device}, {len(manifest)} images -> {feature_shape}"
          + (f", and {views} augmented views of each training image" if views else ""))

    with temporary_dir_for(FEATURES_DIR) as work:
        work = Path(work)
        trunk_images = 0
        start = time.perf_counter()
        for split in SPLITS:
            paths, labels = split_rows(manifest, split, classes)
            batches = image_batches(paths, config.trunk)
            if split == "train" and views:
                augmented = image_batches(pd.concat([paths] * views), config.trunk, augmentation=augmentation)
                batches = batches.concatenate(augmented)
                labels = np.tile(labels, 1 + views)
            np.save(work / f"{split}_y.npy", labels)
            write_features(trunk, batches, work / f"{split}_x.npy", len(labels))
            trunk_images += len(labels)
        seconds = time.perf_counter() - start
        trunk.save(work / "trunk.keras")
        meta = {
            "classes": classes,
            "feature_shape": list(feature_shape),
            "split_sizes": {split: int((manifest["split"] == split).sum()) for split in SPLITS},
            "images": len(manifest),
            "augment_views": views,
            "trunk_images": trunk_images,  # images + views x training images
            "seconds": round(seconds, 2),
            "images_per_second": round(trunk_images / seconds, 1),
            "device": device,
        }
        write_json(work / "meta.json", meta)
        replace_dir(work, FEATURES_DIR)
    write_json(REPORTS_DIR / "features.json", meta)  # the trunk pass's cost, for the report and `dvc metrics`
    print(f"features: one trunk pass over {trunk_images} images in {seconds:.1f} s ({meta['images_per_second']} img/s)")


def read_manifest() -> pd.DataFrame:
    if not MANIFEST.is_file():
        raise UserError(f"{MANIFEST}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(MANIFEST, keep_default_na=False)


def class_names(manifest: pd.DataFrame) -> list[str]:
    """The classes in output order: a class's index is its label's place in sorted order."""
    return sorted(manifest["label"].unique())


def split_rows(manifest: pd.DataFrame, split: str, classes: list[str]) -> tuple[pd.Series, np.ndarray]:
    """A split's image paths and int32 class indices, in manifest order."""
    rows = manifest[manifest["split"] == split]
    return rows["path"], rows["label"].map(classes.index).to_numpy(np.int32)


def image_batches(
    paths: pd.Series,
    config: TrunkConfig,
    labels: np.ndarray | None = None,
    augmentation: Callable[[tf.Tensor], tf.Tensor] | None = None,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of preprocessed images, or of (images, labels) when `labels` are given.

    Decoding runs in parallel and ahead of the consumer (prefetch). `augmentation`
    (tlpipe.augment) runs on each 0-255 image before the trunk's preprocessing, one
    image after another: its random draws, and so the augmented images, then follow
    from its seed. `shuffle_seed` shuffles the images anew on each pass over them,
    the same way on every run (training).
    """
    size = config.image_size
    preprocess = preprocess_input(config.name)

    def load(path: bytes) -> np.ndarray:
        return load_rgb(RAW_DIR / path.decode(), size)

    def decode(path: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.numpy_function(load, [path], tf.uint8, stateful=False), (size, size, 3))

    paths = [str(path) for path in paths]
    dataset = tf.data.Dataset.from_tensor_slices(paths if labels is None else (paths, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.map(_on_images(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augmentation is not None:
        # Sequential, and per image: over a batch, keras-cv's RandAugment draws for its
        # images in parallel, in no fixed order (measured: 3% of pixels differ between runs).
        dataset = dataset.map(_on_images(augmentation))
    dataset = dataset.batch(config.batch_size)
    dataset = dataset.map(_on_images(lambda images: preprocess(tf.cast(images, tf.float32))))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _on_images(transform: Callable[[tf.Tensor], tf.Tensor]) -> Callable:
    """`transform` applied to the images of a dataset element that is images, or (images, labels)."""

    def apply(images, labels=None):
        return transform(images) if labels is None else (transform(images), labels)

    return apply


def write_features(trunk: keras.Model, batches: tf.data.Dataset, path: Path, count: int) -> None:
    """Run the trunk over `batches`, appending each batch's float16 features to a .npy file.

    Plain writes rather than a memory map: the pages of a written memory map count
    in the process's resident memory until it is closed, which would make memory
    grow with the dataset.
    """
    shape = (count, *trunk.output_shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False, "shape": shape}
    written = 0
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for batch in batches:
            output = np.asarray(trunk.predict_on_batch(batch), dtype=np.float16)
            file.write(output.tobytes())
            written += len(output)
    if written != count:
        raise RuntimeError(f"{path}: the trunk gave {written} feature maps for {count} images")


class FeatureBatches(keras.utils.PyDataset):
    """A split's cached features and labels, in batches read from disk one at a time.

    Each batch maps the .npy file, copies its rows out and unmaps it: a memory map
    kept open would keep every page it touched resident, the whole split by the end
    of an epoch. With `shuffle_seed`, the rows come in a new order every epoch, the
    same way on every run.
    """

    def __init__(self, split: str, batch_size: int, shuffle_seed: int | None = None, directory: Path = FEATURES_DIR):
        super().__init__()
        self.features_path = directory / f"{split}_x.npy"
        self.labels = np.load(directory / f"{split}_y.npy")
        self.batch_size = batch_size
        self.order = np.arange(len(self.labels))
        self.rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # Sorted, the rows of a batch are read front to back; their order within a batch does not matter.
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        features = np.load(self.features_path, mmap_mode="r")
        return features[rows], self.labels[rows]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)


def load_split(split: str, directory: Path = FEATURES_DIR) -> tuple[np.ndarray, np.ndarray]:
    """A split's cached features (memory-mapped) and labels."""
    return np.load(directory / f"{split}_x.npy", mmap_mode="r"), np.load(directory / f"{split}_y.npy")


def load_meta(directory: Path = FEATURES_DIR) -> dict:
    if not (directory / "meta.json").is_file():
        raise UserError(f"{directory}: no feature cache; run the features stage first (dvc repro features)")
    return json.loads((directory / "meta.json").read_text())


if __name__ == "__main__":
    run_stage(main)
