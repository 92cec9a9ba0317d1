"""Stage `robustness`: spatial invariance, measured. The test images are shifted by ±1/8 of the
image size (tlpipe.data.shifts: edge replication at the border), run through the trunk again and
then through each trained head; reports/robustness.json has each head's accuracy per shift and its
drop from the unshifted images, read the same way (so the decoding path cancels out), and the
trunk's cost. robustness.shifts = 0 writes {"enabled": false}.

Usage: tlpipe robustness
"""

import time

import numpy as np

from tlpipe import runtime
from tlpipe.cache import load_meta, load_trunk
from tlpipe.config import HEAD_NAMES, MODELS_DIR, RAW_DIR, ROBUSTNESS_REPORT, load_config
from tlpipe.data.images import load_listed_rgb
from tlpipe.data.manifest import read_manifest, split_rows
from tlpipe.data.shifts import eighth_shifts, shift_image
from tlpipe.errors import run_stage
from tlpipe.files import write_json
from tlpipe.model.heads import head_layer_name
from tlpipe.model.loading import load_model_file

SHIFT_NAMES = ("right", "left", "down", "up")


def main() -> None:
    config = load_config()
    if not config.robustness.shifts:
        write_json(ROBUSTNESS_REPORT, {"enabled": False})
        return
    device = runtime.setup(config.seed)
    meta = load_meta()
    size, classes = meta["trunk"]["image_size"], meta["classes"]
    paths, labels = split_rows(read_manifest(), "test", classes)
    images = np.stack([load_listed_rgb(RAW_DIR / path, size) for path in paths])
    trunk = load_trunk()
    heads = {head: load_model_file(MODELS_DIR / f"{head}.keras", f"run dvc repro -f train@{head}").get_layer(
        head_layer_name(head)) for head in HEAD_NAMES}

    shifts = {"none": (0, 0), **dict(zip(SHIFT_NAMES, eighth_shifts(size)[:config.robustness.shifts]))}
    accuracy = {head: {} for head in HEAD_NAMES}
    start = time.perf_counter()
    for name, (dx, dy) in shifts.items():
        shifted = np.stack([shift_image(image, dx, dy) for image in images]).astype("float32")
        features = trunk.predict(shifted, batch_size=config.trunk.batch_size, verbose=0)
        for head, model in heads.items():
            predicted = np.argmax(model.predict(features, batch_size=256, verbose=0), axis=1)
            accuracy[head][name] = float(np.mean(predicted == labels))
    seconds = time.perf_counter() - start

    report = {"enabled": True, "shift_pixels": max(size // 8, 1), "test_images": len(labels),
              "trunk_images": len(labels) * len(shifts), "seconds": round(seconds, 2), "device": device}
    for head, by_shift in accuracy.items():
        shifted_mean = float(np.mean([by_shift[name] for name in shifts if name != "none"]))
        report[head] = {"accuracy": by_shift["none"], "shifted_accuracy": shifted_mean,
                        "drop": by_shift["none"] - shifted_mean, "per_shift": by_shift}
        print(f"robustness: {head}: {by_shift['none']:.3f} unshifted, {shifted_mean:.3f} shifted by "
              f"{report['shift_pixels']} px (drop {report[head]['drop'] * 100:+.1f} pts)")
    write_json(ROBUSTNESS_REPORT, report)
    print(f"robustness: {report['trunk_images']} trunk images in {seconds:.1f} s on {device}")


if __name__ == "__main__":
    run_stage(main)
