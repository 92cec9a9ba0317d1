"""What the benchmark ran on and with: dataset, trunk, device, CPU, versions."""

import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf

from tlpipe.config import HEAD_NAMES, REPORTS_DIR, Config
from tlpipe.model.precision import cpu_flags

# The flags that decide the trunk's speed on a CPU (benchmark.md names them).
NOTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def describe_setup(config: Config, dataset: str, device: str) -> dict:
    features = json.loads((REPORTS_DIR / "features.json").read_text())
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "images": features["images"],
        "classes": len(features["classes"]),
        "split_sizes": features["split_sizes"],
        "trunk": config.trunk.name,
        "weights": config.trunk.weights,
        "output_layer": config.trunk.output_layer,
        "image_size": config.trunk.image_size,
        "feature_shape": features["feature_shape"],
        "trunk_batch_size": config.trunk.batch_size,
        "head_batch_sizes": {head: config.head(head).batch_size for head in HEAD_NAMES},
        "max_epochs": {head: config.head(head).epochs for head in HEAD_NAMES},
        "train_repeats": config.train.repeats,
        "jit_compile_heads": config.train.jit_compile,
        "device": device,
        "cpu": cpu_model(),
        "cpu_flags": sorted(cpu_flags() & set(NOTED_FLAGS)),
        "cpu_cores": os.cpu_count(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "dvc": importlib.metadata.version("dvc"),
        },
    }


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
