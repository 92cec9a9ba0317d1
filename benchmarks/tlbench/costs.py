"""What remains beside the trunk pass: start-up, decoding, and head training against its roofline.

 import     `python -c "import tensorflow, keras"` in the project, the median of 3: the unit
            of the fixed-cost target;
 fixed      each stage's time in `dvc repro -f` minus its own work (the trunk pass, the
            heads' `fit`): process start, imports, building, loading, saving, evaluating;
 decoding   the features stage's input pipeline alone (no trunk) over every image,
            against one core decoding the same files one after another, times the cores;
 roofline   for each head, one epoch's arithmetic at this machine's measured float32
            matrix-multiply rate, and its memory traffic (features read, the optimizer's
            reads and writes every step) at the measured copy bandwidth; the larger is
            the fastest an epoch could be.
"""

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from tlpipe.config import HEAD_NAMES, RAW_DIR, REPORTS_DIR, TRAIN_REPORTS_DIR, Config
from tlpipe.data.decoding import usable_cores
from tlpipe.data.images import load_rgb
from tlpipe.data.inputs import image_batches
from tlpipe.model.heads import build_head

from .commands import timed_run

SINGLE_CORE_IMAGES = 1000  # decoded one after another for the single-core rate
# Per optimizer step, in float32 words per parameter: the forward and backward passes read the
# weights (2) and write the gradient (1); Adam reads gradient, weight and both moments (4) and
# writes weight and moments (3).
WORDS_PER_PARAM_STEP = 10


def import_tensorflow_seconds(project: Path) -> float:
    times = [timed_run(project, "python", "-c", "import tensorflow, keras").seconds for _ in range(3)]
    return round(statistics.median(times), 2)


def fixed_costs(pipeline: dict) -> dict:
    """Each stage's time minus its own work; the sum over the run is the fixed cost."""
    work = {"features": pipeline["features_own_seconds"]}
    work.update({f"train@{head}": figures["train_own_seconds"] for head, figures in pipeline["heads"].items()})
    stages = {stage: round(figures["seconds"] - work.get(stage, 0), 2) for stage, figures in pipeline["stages"].items()}
    total = pipeline["seconds"] - sum(work.values())
    return {"seconds": round(total, 2), "work_seconds": round(sum(work.values()), 2), "stages": stages}


def decoding(paths: pd.Series, config: Config) -> dict:
    """The input pipeline's rate over every image against cores x one core's serial rate."""
    size = config.trunk.image_size
    sample = list(paths[:SINGLE_CORE_IMAGES])
    start = time.perf_counter()
    for path in sample:
        load_rgb(RAW_DIR / path, size)
    single = len(sample) / (time.perf_counter() - start)

    batches = image_batches(paths, RAW_DIR, size, config.trunk.batch_size)
    start = time.perf_counter()
    images = sum(len(batch) for batch in batches)
    parallel = images / (time.perf_counter() - start)
    cores = usable_cores()
    return {
        "images": images,
        "single_core_images_per_second": round(single, 1),
        "images_per_second": round(parallel, 1),
        "cores": cores,
        "efficiency": round(parallel / (cores * single), 3),
    }


def machine_rates() -> dict:
    """This machine's float32 matrix-multiply rate (TensorFlow, every core) and copy bandwidth (NumPy)."""
    n = 2048
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    matmul = min(_seconds(lambda: tf.matmul(a, b).numpy()) for _ in range(5))
    source = np.ones(64 * 2**20, dtype=np.float32)  # 256 MiB: far beyond the caches
    target = np.empty_like(source)
    copy = min(_seconds(lambda: np.copyto(target, source)) for _ in range(5))
    return {"matmul_gflops": round(2 * n**3 / matmul / 1e9, 1), "copy_gb_per_second": round(2 * source.nbytes / copy / 1e9, 1)}


def head_rooflines(config: Config, rates: dict) -> dict:
    features = json.loads((REPORTS_DIR / "features.json").read_text())
    return {head: _head_roofline(head, config, features, rates) for head in HEAD_NAMES}


def _head_roofline(head_name: str, config: Config, features: dict, rates: dict) -> dict:
    training = json.loads((TRAIN_REPORTS_DIR / head_name / "metrics.json").read_text())
    head = build_head(head_name, tuple(features["feature_shape"]), len(features["classes"]), config.head(head_name))
    # Dense layers: a multiply and an add per kernel weight per row; training is about 3x the forward pass.
    flops_per_row = sum(2 * math.prod(layer.kernel.shape) for layer in head.layers if hasattr(layer, "kernel"))
    train_rows, val_rows = training["train_rows"], features["split_sizes"]["val"]
    steps = math.ceil(train_rows / config.head(head_name).batch_size)
    flops = 3 * flops_per_row * train_rows + flops_per_row * val_rows
    feature_bytes = (train_rows + val_rows) * math.prod(features["feature_shape"]) * 2  # the float16 cache
    optimizer_bytes = steps * head.count_params() * 4 * WORDS_PER_PARAM_STEP
    arithmetic = flops / (rates["matmul_gflops"] * 1e9)
    memory = (feature_bytes + optimizer_bytes) / (rates["copy_gb_per_second"] * 1e9)
    roofline = max(arithmetic, memory)
    runs = training["runs"]
    per_epoch = sum(run["seconds"] for run in runs) / sum(run["epochs_run"] for run in runs)
    return {
        "params": head.count_params(),
        "train_rows": train_rows,
        "steps_per_epoch": steps,
        "gflop_per_epoch": round(flops / 1e9, 2),
        "mib_per_epoch": round((feature_bytes + optimizer_bytes) / 2**20, 1),
        "arithmetic_seconds": round(arithmetic, 4),
        "memory_seconds": round(memory, 4),
        "roofline_seconds": round(roofline, 4),
        "seconds_per_epoch": round(per_epoch, 4),
        "over_roofline": round(per_epoch / roofline, 1),
    }


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start
