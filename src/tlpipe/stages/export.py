"""Stage `export@<head>`: models/<head>.keras in each format of export.formats, each checked against it.

models/export/<head>/             the exports (tlpipe.exporter) and labels.txt
reports/export/<head>.json        per format: file size, single-image latency, and on the test split
                                  top-1 agreement with the Keras model and the largest absolute
                                  difference of any probability; the report stage turns both heads'
                                  into reports/export.md

Off (export.formats: [], the default), the stage writes only labels.txt and {"enabled": false},
without importing TensorFlow.

Usage: tlpipe export {flatten,gap}   (the stage; `tlpipe export --model ... --format ...` exports one model)
"""

import statistics
import time
from pathlib import Path

import numpy as np

from tlpipe.config import EXPORT_REPORTS_DIR, EXPORTS_DIR, MODELS_DIR, RAW_DIR, Config, head_from_argv, load_config
from tlpipe.data.labels import EXPORT_LABELS_FILE, write_labels
from tlpipe.data.manifest import class_names, read_manifest, split_rows
from tlpipe.errors import run_stage
from tlpipe.files import StagedOutputs, write_json

# Single-image latency: the median of this many calls, after as many untimed ones.
LATENCY_CALLS = 20


def main() -> None:
    head_name = head_from_argv("export")
    config = load_config()
    out = EXPORTS_DIR / head_name
    # The exports and their report go in place together, once both are written.
    with StagedOutputs() as outputs:
        work = outputs.folder(out)
        if config.export.formats:
            report = export_and_check(head_name, config, work)
        else:
            write_labels(work / EXPORT_LABELS_FILE, class_names(read_manifest()))
            report = {"enabled": False}
        write_json(outputs.file(EXPORT_REPORTS_DIR / f"{head_name}.json"), report)
        outputs.commit()
    if not config.export.formats:
        print(f"export@{head_name}: off (export.formats: []); {out / EXPORT_LABELS_FILE} only")


def export_and_check(head_name: str, config: Config, work: Path) -> dict:
    """Export the head's model in every format of export.formats into folder `work` (which becomes
    models/export/<head>/) and check each."""
    # TensorFlow is imported here: the off path (the default) has no use for it.
    from tlpipe import runtime
    from tlpipe.exporter import export_model, runner, size_bytes
    from tlpipe.model.saving import load_classifier
    from tlpipe.predictor import Predictor

    device = runtime.setup(config.seed)
    model_path = MODELS_DIR / f"{head_name}.keras"
    model, classes = load_classifier(model_path, config.trunk.image_size, remedy=f"run dvc repro -f train@{head_name}")
    predictor = Predictor(model, classes, config.trunk.batch_size)
    paths, _ = split_rows(read_manifest(), "test", classes)
    decoded, _ = predictor.load([RAW_DIR / path for path in paths])
    images = np.stack([image for _, image in decoded]).astype(np.float32)
    batches = [images[start:start + config.trunk.batch_size] for start in range(0, len(images), config.trunk.batch_size)]
    expected = np.concatenate([predictor.probabilities(batch) for batch in batches])

    formats = {}
    out = EXPORTS_DIR / head_name
    written = {}
    for fmt in config.export.formats:
        written.update(export_model(model, work, fmt, config.export.tflite_float16))
    write_labels(work / EXPORT_LABELS_FILE, classes)
    for variant, path in written.items():
        run = runner(path, variant)
        actual = np.concatenate([run(batch) for batch in batches])
        formats[variant] = {
            "file": f"{out.as_posix()}/{path.name}",
            "bytes": size_bytes(path),
            "latency_ms": round(single_image_latency(run, images[:1]) * 1000, 2),
            "top1_agreement": float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))),
            "max_abs_difference": float(np.abs(actual - expected).max()),
        }
        print(f"export@{head_name}: {variant}: top-1 agreement {formats[variant]['top1_agreement']:.2%}, "
              f"max |dp| {formats[variant]['max_abs_difference']:.2e}, {formats[variant]['latency_ms']} ms/img")
    keras_model = {"file": model_path.as_posix(), "bytes": model_path.stat().st_size,
                   "latency_ms": round(single_image_latency(predictor.probabilities, images[:1]) * 1000, 2)}
    return {"enabled": True, "test_images": len(images), "device": device, "keras": keras_model, "formats": formats}


def single_image_latency(run, image: np.ndarray) -> float:
    """Seconds per call on one image: the median of LATENCY_CALLS calls, after as many warm-up calls."""
    for _ in range(LATENCY_CALLS):
        run(image)
    times = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    run_stage(main)
