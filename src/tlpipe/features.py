"""Stage `features`: run the frozen trunk once over every image and cache its feature maps.

Both heads train on this cache, so the trunk (100-1000x the cost of a head
epoch) never runs per epoch. Feature maps are written batch by batch into
float16 memory-mapped .npy files, so memory stays flat as the dataset grows.
The trunk itself is saved beside them: the train stage puts exactly this trunk
under each head.

data/features/
  {train,val,test}_x.npy   float16, (images, H, W, C)
  {train,val,test}_y.npy   int32 class indices
  trunk.keras              the frozen trunk
  meta.json                classes, feature shape, trunk, timings
"""

import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tlpipe import runtime
from tlpipe.config import FEATURES_DIR, MANIFEST, RAW_DIR, REPORTS_DIR, TrunkConfig, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.files import replace_dir, temporary_dir_for, write_json
from tlpipe.images import load_rgb
from tlpipe.split import SPLITS
from tlpipe.trunks import build_trunk, preprocess_input


def main() -> None:
    config = load_config()
    device = runtime.setup(config.seed)
    manifest = _read_manifest()
    classes = sorted(manifest["label"].unique())
    trunk = build_trunk(config.trunk)
    trunk.compile(jit_compile=False)  # XLA slows the trunk pass on CPU (measured: VGG16 2x slower)
    feature_shape = trunk.output_shape[1:]
    print(f"features: {config.trunk.name} ({config.trunk.weights}) on {device}, {len(manifest)} images -> {feature_shape}")

    with temporary_dir_for(FEATURES_DIR) as work:
        work = Path(work)
        start = time.perf_counter()
        for split in SPLITS:
            rows = manifest[manifest["split"] == split]
            labels = rows["label"].map(classes.index).to_numpy(np.int32)
            np.save(work / f"{split}_y.npy", labels)
            write_features(trunk, image_batches(rows["path"], config.trunk), work / f"{split}_x.npy", len(rows))
        seconds = time.perf_counter() - start
        trunk.save(work / "trunk.keras")
        meta = {
            "classes": classes,
            "feature_shape": list(feature_shape),
            "split_sizes": {split: int((manifest["split"] == split).sum()) for split in SPLITS},
            "images": len(manifest),
            "seconds": round(seconds, 2),
            "images_per_second": round(len(manifest) / seconds, 1),
            "device": device,
        }
        write_json(work / "meta.json", meta)
        replace_dir(work, FEATURES_DIR)
    write_json(REPORTS_DIR / "features.json", meta)  # the trunk pass's cost, for the report and `dvc metrics`
    print(f"features: one trunk pass over {len(manifest)} images in {seconds:.1f} s ({meta['images_per_second']} img/s)")


def _read_manifest() -> pd.DataFrame:
    if not MANIFEST.is_file():
        raise UserError(f"{MANIFEST}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(MANIFEST, keep_default_na=False)


def image_batches(paths: pd.Series, config: TrunkConfig) -> tf.data.Dataset:
    """Batches of preprocessed images; decoding runs in parallel with the trunk (prefetch)."""
    size = config.image_size

    def load(path: bytes) -> np.ndarray:
        return load_rgb(RAW_DIR / path.decode(), size)

    dataset = tf.data.Dataset.from_tensor_slices([str(path) for path in paths])
    dataset = dataset.map(
        lambda path: tf.ensure_shape(tf.numpy_function(load, [path], tf.uint8, stateful=False), (size, size, 3)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    preprocess = preprocess_input(config.name)
    dataset = dataset.batch(config.batch_size).map(lambda images: preprocess(tf.cast(images, tf.float32)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def write_features(trunk: keras.Model, batches: tf.data.Dataset, path: Path, count: int) -> None:
    """Run the trunk over `batches`, writing each batch's float16 features straight to disk."""
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, *trunk.output_shape[1:]))
    written = 0
    for batch in batches:
        output = trunk.predict_on_batch(batch)
        features[written:written + len(output)] = output
        written += len(output)
    features.flush()
    del features


def load_split(split: str, directory: Path = FEATURES_DIR) -> tuple[np.ndarray, np.ndarray]:
    """A split's cached features (memory-mapped) and labels."""
    return np.load(directory / f"{split}_x.npy", mmap_mode="r"), np.load(directory / f"{split}_y.npy")


def load_meta(directory: Path = FEATURES_DIR) -> dict:
    if not (directory / "meta.json").is_file():
        raise UserError(f"{directory}: no feature cache; run the features stage first (dvc repro features)")
    return json.loads((directory / "meta.json").read_text())


if __name__ == "__main__":
    run_stage(main)
