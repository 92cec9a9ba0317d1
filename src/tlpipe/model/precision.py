"""The trunk's compute precision: float32 or a Keras mixed policy, chosen by timing where asked.

Flags alone cannot tell which is faster: on one AMX CPU, VGG16 ran 4.3x faster
under mixed_bfloat16 while MobileNetV2 ran slower. So `auto` times a few batches
of THIS trunk under each candidate on THIS device and keeps the faster, unless it
wins by less than `MIN_GAIN`, where float32 stays. One timed batch each settles a
clear case (a candidate CLEAR_FACTOR faster or slower than float32: VGG16 at 224 px
on a 2-core CPU, 2 s a float32 batch, would otherwise spend 12 s on the trial); a
close one takes the best of REPEATS, the candidates taking turns so that a burst of
load elsewhere does not fall on one of them only. Variables stay float32 under a
mixed policy; the cache is float16 and the heads train in float32 whatever the choice.
"""

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

FLOAT32 = "float32"
MIN_GAIN = 0.10  # a policy must be this much faster than float32 to replace it
CLEAR_FACTOR = 1.5  # this much faster or slower than float32 on one batch: no more timing needed
REPEATS = 3  # timed batches per candidate in a close case
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is absent."""
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def candidates(on_gpu: bool, flags: set[str]) -> list[str]:
    """The policies worth timing on this device: float32 first, then the mixed one the hardware runs fast."""
    if on_gpu:
        return [FLOAT32, "mixed_float16"]
    if flags & set(CPU_BF16_FLAGS):
        return [FLOAT32, "mixed_bfloat16"]
    return [FLOAT32]


def choose(seconds_per_batch: dict[str, float]) -> str:
    """The fastest policy, unless it beats float32 by less than MIN_GAIN."""
    fastest = min(seconds_per_batch, key=seconds_per_batch.get)
    if seconds_per_batch[fastest] < (1 - MIN_GAIN) * seconds_per_batch[FLOAT32]:
        return fastest
    return FLOAT32


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Layers built inside take `policy` (keras.applications builders take no dtype argument)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def decided(seconds_per_batch: dict[str, float]) -> bool:
    """Whether one timing each settles the choice: every candidate CLEAR_FACTOR faster or slower than float32."""
    return all(max(seconds, seconds_per_batch[FLOAT32]) >= CLEAR_FACTOR * min(seconds, seconds_per_batch[FLOAT32])
               for policy, seconds in seconds_per_batch.items() if policy != FLOAT32)


def timed_pass(model: keras.Model, batch: np.ndarray) -> float:
    start = time.perf_counter()
    model.predict_on_batch(batch)
    return time.perf_counter() - start


def build_with_precision(build: Callable[[], keras.Model], setting: str, on_gpu: bool, batch: np.ndarray):
    """Build the model under `setting` (a policy, or `auto`); return it, the chosen policy and the trial timings
    (the best seconds per batch of each candidate).

    `build` makes the model under the current dtype policy; `batch` is a real input batch for the trials.
    """
    if setting != "auto":
        with dtype_policy(setting):
            return build(), setting, {}
    models = {}
    for policy in candidates(on_gpu, cpu_flags()):
        with dtype_policy(policy):
            models[policy] = build()
        models[policy].predict_on_batch(batch)  # builds the graph: not timed
    trials = {policy: timed_pass(model, batch) for policy, model in models.items()}
    if not decided(trials):
        for _ in range(REPEATS - 1):
            trials = {policy: min(trials[policy], timed_pass(model, batch)) for policy, model in models.items()}
    trials = {policy: round(seconds, 4) for policy, seconds in trials.items()}
    chosen = choose(trials)
    return models[chosen], chosen, trials


def in_float32(model: keras.Model) -> keras.Model:
    """The same model, computing in float32 throughout: what the saved classifier and its exports run.

    A mixed policy is the trunk pass's speed-up on the device that ran it; a model that carries it
    would run bfloat16 on CPUs without it (slowly) and cannot be exported to TFLite. The variables
    are float32 under any policy, so the weights carry over exactly.
    """
    if all(layer.dtype_policy.name == FLOAT32 for layer in model.layers):
        return model
    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": FLOAT32})
    )
    clone.set_weights(model.get_weights())
    return clone
