"""Stage `features`: run the frozen trunk once over every image and cache its feature maps.

Both heads train on this cache (tlpipe.cache), so the trunk never runs per
epoch. The trunk itself is saved beside the features: the train stage puts
exactly this trunk under each head.

With augment.views = K > 0, each training image also goes through the augment
layers K times, and the trunk's output for each augmented view is cached too:
training rows i, n + i, ..., K*n + i are image i clean, then its K views (n
training images). The trunk thus runs 1 + K times over the training split, once;
validation and test images are never augmented.

With robustness.shifts = S > 0, the test images also go through the trunk S more times,
shifted by 1/8 of the image size (right, left, down, up; tlpipe.data.shifts), decoded the
same way as the unshifted ones: each head's accuracy on them (the train stage) measures
its spatial invariance without a trunk of its own. On the Ray engine too, these few
passes run locally.
"""

import functools
import time

import numpy as np
import pandas as pd

from tlpipe import runtime
from tlpipe.cache import features_path, save_trunk, shifted_split, write_feature_maps, write_features, write_labels, write_meta
from tlpipe.config import FEATURES_DIR, RAW_DIR, REPORTS_DIR, load_config
from tlpipe.data.augment import build_augmentation
from tlpipe.data.inputs import image_batches
from tlpipe.data.manifest import SPLITS, class_names, read_manifest, split_rows
from tlpipe.data.shifts import named_shifts, shift_pixels
from tlpipe.errors import run_stage
from tlpipe.files import StagedOutputs, write_json
from tlpipe.model.precision import build_with_precision
from tlpipe.model.trunks import build_trunk
from tlpipe.ray_features import RayTrunkPass


def main() -> None:
    config = load_config()
    device = runtime.setup(config.seed, config.runtime.devices)
    strategy = runtime.strategy(config.runtime.devices)
    manifest = read_manifest()
    classes = class_names(manifest)
    views = config.augment.views
    augmentation = build_augmentation(config.augment, config.trunk.image_size) if views else None
    batches_of = functools.partial(
        image_batches, root=RAW_DIR, size=config.trunk.image_size, batch_size=config.trunk.batch_size,
    )
    trial_batch = next(iter(batches_of(split_rows(manifest, "train", classes)[0])))
    distribution = runtime.strategy_summary(strategy)
    with strategy.scope():  # the trunk's variables on every replica; write_features splits each batch across them
        trunk, precision, trials = build_with_precision(
            lambda: build_trunk(config.trunk), config.trunk.precision, device.startswith("GPU"), trial_batch,
        )
    trunk.compile(jit_compile=False)  # XLA slows the trunk pass on CPU (measured: VGG16 2x slower)
    feature_shape = trunk.output_shape[1:]
    print(f"features: trunk precision {precision} (trunk.precision = {config.trunk.precision}"
          + (f"; seconds per batch: {trials}" if trials else "") + ")")
    ray_pass = None
    if config.features.engine == "ray":
        ray_pass = RayTrunkPass(trunk, RAW_DIR, config.trunk.image_size, config.trunk.batch_size, config.features.ray, config.seed)
        device = ray_pass.describe()
    print(f"features: {config.trunk.name} ({config.trunk.weights}) on {device}, {distribution['strategy']} with "
          f"{distribution['replicas']} replica(s), {len(manifest)} images -> {feature_shape}"
          + (f", and {views} augmented views of each training image" if views else ""))

    # The cache and its report (reports/features.json) go in place together, once both are written.
    with StagedOutputs() as outputs, strategy.scope():
        work = outputs.folder(FEATURES_DIR)
        trunk_images = 0
        start = time.perf_counter()
        # The Ray engine: one pass over the splits in turn, each taking its rows (views: local engine only).
        ray_rows = ray_pass and ray_pass.feature_maps(pd.concat([split_rows(manifest, split, classes)[0] for split in SPLITS]))
        for split in SPLITS:
            paths, labels = split_rows(manifest, split, classes)
            batches = batches_of(paths)
            if split == "train" and views:
                batches = batches.concatenate(batches_of(pd.concat([paths] * views), augmentation=augmentation))
                labels = np.tile(labels, 1 + views)
            write_labels(work, split, labels)
            if ray_rows:
                write_feature_maps(ray_rows.take(len(labels)), features_path(work, split), (len(labels), *feature_shape))
            else:
                write_features(trunk, batches, features_path(work, split), len(labels))
            trunk_images += len(labels)
        seconds = time.perf_counter() - start

        shifts = named_shifts(config.trunk.image_size, config.robustness.shifts)
        test_paths, test_labels = split_rows(manifest, "test", classes)
        start = time.perf_counter()
        for name, shift in shifts.items():
            write_labels(work, shifted_split(name), test_labels)
            write_features(trunk, batches_of(test_paths, shift=shift), features_path(work, shifted_split(name)), len(test_labels))
        shifted_seconds = time.perf_counter() - start
        save_trunk(trunk, work)
        meta = {
            "trunk": {
                "name": config.trunk.name,
                "weights": config.trunk.weights,
                "output_layer": config.trunk.output_layer or trunk.layers[-1].name,
                "image_size": config.trunk.image_size,
                "preprocessing": f"inside the trunk: keras.applications.{config.trunk.name}.preprocess_input on RGB 0-255",
            },
            "classes": classes,
            "feature_shape": list(feature_shape),
            # the same as numbers: `dvc exp show` keeps numbers of a metrics file, not lists (the sweeps)
            "feature_map": dict(zip(("height", "width", "channels"), map(int, feature_shape))),
            "split_sizes": {split: int((manifest["split"] == split).sum()) for split in SPLITS},
            "images": len(manifest),
            "augment_views": views,
            "trunk_images": trunk_images,  # images + views x training images
            "seconds": round(seconds, 2),
            "images_per_second": round(trunk_images / seconds, 1),
            "device": device,
            **distribution,  # the tf.distribute strategy of the trunk pass and its replica count (runtime.devices)
            "engine": config.features.engine,
            "precision": precision,
            "precision_setting": config.trunk.precision,
            "precision_trials": trials,  # best-of-3 seconds per batch under each candidate (auto only)
            # The shifted test images (robustness.shifts), apart from the pass above
            "shifts": {name: list(shift) for name, shift in shifts.items()},
            "shift_pixels": shift_pixels(config.trunk.image_size),
            "shifted_images": len(test_labels) * len(shifts),
            "shifted_seconds": round(shifted_seconds, 2),
        }
        write_meta(work, meta)
        write_json(outputs.file(REPORTS_DIR / "features.json"), meta)  # the trunk pass's cost, for the report and `dvc metrics`
        outputs.commit()
    print(f"features: one trunk pass over {trunk_images} images in {seconds:.1f} s ({meta['images_per_second']} img/s)")
    if shifts:
        print(f"features: {meta['shifted_images']} shifted test images ({', '.join(shifts)} by {meta['shift_pixels']} px) "
              f"in {shifted_seconds:.1f} s")


if __name__ == "__main__":
    run_stage(main)
