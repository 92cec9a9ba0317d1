"""The measurements, in the order they run in the project copy (the working directory).

 pipeline   `dvc repro -f`: total wall time and each stage's time (commands.TimedRun);
 no-op      `dvc repro` with nothing changed;
 one head   heads.gap.learning_rate halved in params.yaml, then `dvc repro`;
 floor      one forward pass of the frozen trunk over every image, as the features
            stage runs it (same tf.data input, batch size, no XLA), after one warm-up
            batch, in the precision the stage chose and in float32; it reads the images
            and manifest the pipeline's split stage made;
 usual      both heads trained end to end with the frozen trunk inside the model
            (images decoded and passed through the trunk every epoch, as in the Keras
            transfer-learning guide), for the epochs the pipeline ran for each head, the
            trunk in the precision the features stage chose;
 the rest   start-up, decoding and head training against its roofline (costs.py);
 peak RSS   the features and train stage commands run again, alone. Last, because it
            rewrites the pipeline's outputs behind DVC's back.
"""

import functools
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from tlpipe import launcher, testing
from tlpipe.cache import load_split
from tlpipe.config import EVAL_REPORTS_DIR, HEAD_NAMES, PARAMS_FILE, RAW_DIR, REPORTS_DIR, TRAIN_REPORTS_DIR, Config
from tlpipe.data.inputs import image_batches
from tlpipe.data.manifest import SPLITS, class_names, read_manifest, split_rows
from tlpipe.model.fitting import fit_classifier
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.precision import FLOAT32, dtype_policy
from tlpipe.model.trunks import build_trunk

from . import costs
from .commands import RSS_COMMANDS, timed_run

CORE_STAGES = ("features", "train@flatten", "train@gap")  # what produces two trained heads


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def benchmark(project: Path, config: Config, usual: bool = True) -> dict:
    # A stage server of this run's own (tlpipe.launcher), none yet: the full run starts it and pays its
    # TensorFlow import, as a first `dvc repro` does; the no-op and the one-head change find it running.
    os.environ[launcher.TAG] = f"benchmark-{os.getpid()}"
    try:
        return _benchmark(project, config, usual)
    finally:
        launcher.stop()


def _benchmark(project: Path, config: Config, usual: bool) -> dict:
    say("pipeline: dvc repro -f")
    repro = timed_run(project, "dvc", "repro", "-f")
    server_rss_mib = _rss_mib(launcher.server_pid())
    startup, stages = repro.stage_seconds()
    heads = {head: pipeline_head(head) for head in HEAD_NAMES}  # read before anything re-runs a head
    features = json.loads((REPORTS_DIR / "features.json").read_text())
    pipeline = {
        "seconds": round(repro.seconds, 2),
        "core_seconds": round(sum(stages[stage] for stage in CORE_STAGES), 2),
        "dvc_startup_seconds": round(startup, 2),
        "stages": {stage: {"seconds": round(seconds, 2)} for stage, seconds in stages.items()},
        # The stage's own work: its trunk pass, and the shifted test images' (robustness.shifts)
        "features_own_seconds": round(features["seconds"] + features["shifted_seconds"], 2),
        "shifted": {"images": features["shifted_images"], "seconds": features["shifted_seconds"]},
        # A trunk whose outputs underflow float16 (random-init MobileNets: ~1e-12) caches zeros: chance accuracy.
        "cached_features_nonzero_fraction": round(float(np.mean(load_split("train")[0][:1024] != 0)), 4),
        "heads": heads,
        # DVC's process tree: not the stages the stage server forks (their peaks: the runs alone, below).
        "peak_rss_mib": round(repro.max_rss_mib, 1),
    }
    say(f"   {repro.seconds:.1f} s: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items()))
    rates = costs.machine_rates()
    rooflines = costs.head_rooflines(config, rates)  # from this run's training figures, before a head re-runs
    say(f"   heads' seconds per epoch: " + ", ".join(f"{head} {r['seconds_per_epoch']} ({r['over_roofline']}x roofline)"
                                                    for head, r in rooflines.items()))

    say("no-op: dvc repro")
    noop = timed_run(project, "dvc", "repro")
    say("one-head change: heads.gap.learning_rate halved, dvc repro")
    old_rate = config.heads.gap.learning_rate
    testing.write_params(PARAMS_FILE, testing.params_with(PARAMS_FILE, **{"heads.gap.learning_rate": old_rate / 2}))
    one_head = timed_run(project, "dvc", "repro")
    say("one-head change with no stage server running: heads.gap.learning_rate quartered, dvc repro")
    launcher.stop()
    testing.write_params(PARAMS_FILE, testing.params_with(PARAMS_FILE, **{"heads.gap.learning_rate": old_rate / 4}))
    one_head_cold = timed_run(project, "dvc", "repro")

    manifest = read_manifest()
    precision = features["precision"]
    say(f"floor: one trunk pass over every image, in {precision} (the features stage's choice)")
    trunk = trunk_in(config, precision)
    floor = trunk_pass(trunk, manifest["path"], config)
    say(f"   {floor['seconds']:.1f} s, {floor['images_per_second']} img/s")
    floor_float32 = floor
    if precision != FLOAT32:
        say("floor in float32")
        floor_float32 = trunk_pass(trunk_in(config, FLOAT32), manifest["path"], config)
        say(f"   {floor_float32['seconds']:.1f} s, {floor_float32['images_per_second']} img/s")

    say("decoding: the input pipeline alone, and one core")
    decoding = costs.decoding(manifest["path"], config)
    say(f"   {decoding['images_per_second']} img/s on {decoding['cores']} cores; one core "
        f"{decoding['single_core_images_per_second']} img/s ({100 * decoding['efficiency']:.0f}% of cores x one core)")
    say("import tensorflow, keras: 3 times")
    import_seconds = costs.import_tensorflow_seconds(project)
    fixed = costs.fixed_costs(pipeline)

    if usual:
        say(f"usual approach: trunk inside the model, both heads, in {precision}")
        usual_heads = {head: usual_approach(head, trunk, manifest, config, heads[head]["epochs_run"]) for head in HEAD_NAMES}
        usual = {"seconds": round(sum(head["fit_seconds"] for head in usual_heads.values()), 2), "heads": usual_heads,
                 "precision": precision}
    else:
        usual = None

    say("peak RSS: the features and train stages, alone")
    for stage, command in RSS_COMMANDS.items():
        alone = timed_run(project, *command)
        pipeline["stages"][stage].update(alone_seconds=round(alone.seconds, 2), peak_rss_mib=round(alone.max_rss_mib, 1))

    return {
        "floor": {**floor, "precision": precision},
        "floor_float32": floor_float32,
        "pipeline": pipeline,
        "import_tensorflow_seconds": import_seconds,
        "fixed_cost": fixed,
        "decoding": decoding,
        "machine_rates": rates,
        "head_training": rooflines,
        "usual": usual,
        "accuracy": usual and {
            head: {
                "pipeline": heads[head]["accuracy"],
                "usual": usual["heads"][head]["accuracy"],
                "difference_points": round(100 * (usual["heads"][head]["accuracy"] - heads[head]["accuracy"]), 2),
            }
            for head in HEAD_NAMES
        },
        "noop": {"seconds": round(noop.seconds, 2), "stages_run": noop.stages_run()},
        "one_head_change": {
            "change": f"heads.gap.learning_rate {old_rate:g} -> {old_rate / 2:g}",
            "seconds": round(one_head.seconds, 2),
            "stages_run": one_head.stages_run(),
            "fraction_of_full_run": round(one_head.seconds / repro.seconds, 4),
            "without_server": {
                "change": f"heads.gap.learning_rate {old_rate / 2:g} -> {old_rate / 4:g}",
                "seconds": round(one_head_cold.seconds, 2),
                "fraction_of_full_run": round(one_head_cold.seconds / repro.seconds, 4),
            },
        },
        "stage_server_rss_mib": server_rss_mib,
        "ratios": {
            "pipeline_over_floor": round(repro.seconds / floor["seconds"], 2),
            "core_over_floor": round(pipeline["core_seconds"] / floor["seconds"], 2),
            "usual_over_pipeline": usual and round(usual["seconds"] / repro.seconds, 2),
            "usual_over_core": usual and round(usual["seconds"] / pipeline["core_seconds"], 2),
            "floor_over_float32_floor": round(floor["seconds"] / floor_float32["seconds"], 3),
            "fixed_over_import": round(fixed["seconds"] / import_seconds, 2),
        },
    }


def _rss_mib(pid: int | None) -> float | None:
    """A process's resident set size now, from /proc (None: no process)."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    return None


def pipeline_head(head: str) -> dict:
    """What the pipeline's train stage reports for one head (training and evaluation)."""
    training = json.loads((TRAIN_REPORTS_DIR / head / "metrics.json").read_text())
    evaluation = json.loads((EVAL_REPORTS_DIR / head / "metrics.json").read_text())
    return {
        "epochs_run": training["epochs_run"],
        "best_epoch": training["best_epoch"],
        "train_own_seconds": training["train_seconds"],
        "accuracy": round(evaluation["accuracy"], 4),
    }


def trunk_in(config: Config, precision: str) -> keras.Model:
    """The trunk as the features stage builds it, under `precision`, compiled without XLA."""
    with dtype_policy(precision):
        trunk = build_trunk(config.trunk)
    trunk.compile(jit_compile=False)
    return trunk


def batches_for(config: Config, batch_size: int) -> functools.partial:
    """tlpipe.data.inputs.image_batches with the trunk's root and size set, as the stages call it."""
    return functools.partial(image_batches, root=RAW_DIR, size=config.trunk.image_size, batch_size=batch_size)


def trunk_pass(trunk: keras.Model, paths: pd.Series, config: Config) -> dict:
    """The floor: the trunk over every image through the features stage's own input pipeline.

    One batch first, not timed (graph tracing); the outputs are dropped.
    """
    batches_of = batches_for(config, config.trunk.batch_size)
    trunk.predict_on_batch(next(iter(batches_of(paths[: config.trunk.batch_size]))))
    start = time.perf_counter()
    for batch in batches_of(paths):
        trunk.predict_on_batch(batch)
    seconds = time.perf_counter() - start
    return {"images": len(paths), "seconds": round(seconds, 2), "images_per_second": round(len(paths) / seconds, 1)}


def usual_approach(head_name: str, trunk: keras.Model, manifest: pd.DataFrame, config: Config, epochs: int) -> dict:
    """Train trunk + head end to end from images for a fixed number of epochs, then test accuracy.

    The one training recipe (tlpipe.model.fitting) with the train stage's head, seed, batch
    size and data, the training images in a new random order each epoch. Unlike the stage:
    no early stopping (the pipeline's epoch count instead), and no XLA (it slows the trunk on CPU).
    """
    head_config = config.head(head_name)
    classes = class_names(manifest)
    (train_paths, train_labels), (val_paths, val_labels), (test_paths, test_labels) = (
        split_rows(manifest, split, classes) for split in SPLITS
    )
    batches_of = batches_for(config, head_config.batch_size)

    keras.utils.set_random_seed(config.seed)
    model = assemble(trunk, build_head(head_name, trunk.output_shape[1:], len(classes), head_config))
    fit = fit_classifier(
        model,
        batches_of(train_paths, labels=train_labels, shuffle_seed=config.seed),  # a new order each epoch
        batches_of(val_paths, labels=val_labels),
        learning_rate=head_config.learning_rate,
        epochs=epochs,
        patience=None,
        jit_compile=False,
        verbose=0,
    )

    start = time.perf_counter()
    predicted = np.argmax(model.predict(batches_of(test_paths), verbose=0), axis=1)
    test_seconds = time.perf_counter() - start
    accuracy = float(np.mean(predicted == test_labels))
    say(f"   {head_name}: {epochs} epochs in {fit.seconds:.1f} s, test accuracy {accuracy:.3f}")
    return {
        "epochs": epochs,
        "fit_seconds": round(fit.seconds, 2),
        "seconds_per_epoch": round(fit.seconds / epochs, 2),
        "test_seconds": round(test_seconds, 2),
        "accuracy": round(accuracy, 4),
    }
