"""--engine ray: the features stage on the local engine and on Ray, in one run, on the same data and machine.

 stages   `dvc repro split`, then the features stage alone (`python -m tlpipe.stages.features`),
          once on features.engine: local and once on features.engine: ray with RAY_ACTORS actors
          (a local Ray: RAY_ADDRESS is unset); each stage's own timer (reports/features.json) and
          its process's wall time, and the largest difference between the two caches;
 phases   what Ray adds, in this process, with the wall clock around each phase: ray.init (a Ray
          started on this machine), the engine's setup (the trunk saved for the object store), the
          actors alone (started, their trunk loaded), the pass into Ray's object store
          (tlpipe.ray_features.RayTrunkPass.dataset, materialized: decoding tasks, actors started
          again, the trunk over every image), and collecting its rows into this process in order;
          against the local trunk pass over the same images (the floor, measure.trunk_pass).
"""

import json
import os
import time

import numpy as np

from tlpipe import testing
from tlpipe.cache import load_split
from tlpipe.config import PARAMS_FILE, RAW_DIR, REPORTS_DIR, Config
from tlpipe.data.manifest import SPLITS, read_manifest
from tlpipe.ray_features import RayTrunkPass, TrunkActor, connect, import_ray

from .commands import RSS_COMMANDS, timed_run
from .measure import say, trunk_in, trunk_pass

RAY_ACTORS = 2


def ray_settings(cpus: int) -> dict:
    """features.ray for RAY_ACTORS actors on this machine: they reserve half its CPUs, the decoding tasks get the rest.

    A reservation only: TensorFlow in each actor still runs threads on every core.
    """
    return {"actors": RAY_ACTORS, "cpus_per_actor": cpus / 2 / RAY_ACTORS}


def benchmark_engines(project, config: Config) -> dict:
    if os.environ.pop("RAY_ADDRESS", None):  # one machine: a local Ray, for the stage and for this process
        say("RAY_ADDRESS unset for this benchmark: it measures a Ray on this machine")
    say("dvc repro split")
    timed_run(project, "dvc", "repro", "split")
    say("features stage, features.engine: local")
    local = features_stage(project)
    local_cache = {split: np.array(load_split(split)[0]) for split in SPLITS}
    settings = ray_settings(os.cpu_count())
    say(f"features stage, features.engine: ray ({settings['actors']} actors, {settings['cpus_per_actor']:g} CPUs each)")
    testing.write_params(PARAMS_FILE, testing.params_with(PARAMS_FILE, **{"features.engine": "ray", "features.ray": settings}))
    ray_stage = features_stage(project)
    difference = max(float(np.max(np.abs(local_cache[split].astype(np.float32) - load_split(split)[0].astype(np.float32))))
                     for split in SPLITS)
    say(f"   local {local['own_seconds']} s, ray {ray_stage['own_seconds']} s (own timers); caches differ by {difference:g} at most")

    paths = read_manifest()["path"]
    precision = local["precision"]
    say(f"local trunk pass in this process ({precision})")
    trunk = trunk_in(config, precision)
    floor = trunk_pass(trunk, paths, config)
    say("Ray's phases in this process")
    phases = ray_phases(trunk, paths, config, settings)
    return {
        "engines": {
            "local": local,
            "ray": {**ray_stage, **settings},
            "ray_over_local_seconds": round(ray_stage["own_seconds"] / local["own_seconds"], 2),
            "ray_over_local_process_seconds": round(ray_stage["process_seconds"] / local["process_seconds"], 2),
            "cache_max_abs_difference": difference,
        },
        "floor": {**floor, "precision": precision},
        "ray_phases": phases,
    }


def features_stage(project) -> dict:
    """The features stage run alone: its own timer and figures (reports/features.json), and its process's wall time."""
    run = timed_run(project, *RSS_COMMANDS["features"])
    features = json.loads((REPORTS_DIR / "features.json").read_text())
    return {
        "own_seconds": features["seconds"],
        "images_per_second": features["images_per_second"],
        "trunk_images": features["trunk_images"],
        "process_seconds": round(run.seconds, 2),
        "device": features["device"],
        "precision": features["precision"],
    }


def ray_phases(trunk, paths, config: Config, settings: dict) -> dict:
    """Wall time of each phase the Ray engine adds, one after the other (in the engine they overlap where they can)."""
    ray = import_ray()
    started = time.perf_counter()
    connect(ray)
    init_seconds = time.perf_counter() - started

    started = time.perf_counter()
    ray_pass = RayTrunkPass(trunk, RAW_DIR, config.trunk.image_size, config.trunk.batch_size,
                            config.features.ray.model_copy(update=settings), config.seed)
    setup_seconds = time.perf_counter() - started

    actor_ready = actors_started(ray, ray_pass, config.seed)

    started = time.perf_counter()
    computed = ray_pass.dataset(paths).materialize()
    pass_seconds = time.perf_counter() - started

    started = time.perf_counter()
    rows = sum(len(batch["index"]) for batch in computed.iter_batches(batch_size=config.trunk.batch_size, batch_format="numpy"))
    collect_seconds = time.perf_counter() - started
    if rows != len(paths):
        raise RuntimeError(f"Ray returned {rows} rows for {len(paths)} images")
    phases = {
        "ray_init_seconds": round(init_seconds, 2),
        "setup_seconds": round(setup_seconds, 2),
        "actor_ready_seconds": actor_ready,
        "pass_seconds": round(pass_seconds, 2),
        "pass_images_per_second": round(len(paths) / pass_seconds, 1),
        "collect_seconds": round(collect_seconds, 2),
        "cluster": ray_pass.describe(),
        "nodes": sum(node["Alive"] for node in ray.nodes()),
        "ray_version": ray.__version__,
        "ray_data_stats": computed.stats(),  # Ray's own per-operator timings of the pass
    }
    ray.shutdown()
    say(f"   ray.init {phases['ray_init_seconds']} s, setup {phases['setup_seconds']} s, actors ready after "
        f"{actor_ready} s, pass {phases['pass_seconds']} s, collecting {phases['collect_seconds']} s")
    return phases


def actors_started(ray, ray_pass: RayTrunkPass, seed: int) -> list[float]:
    """Seconds until each of the engine's actors, started alone, is ready: a worker process, its imports, the trunk loaded."""
    actor_class = ray.remote(num_cpus=ray_pass.cpus_per_actor)(TrunkActor)
    started = time.perf_counter()
    actors = [actor_class.remote(trunk_file=ray_pass.trunk_file, seed=seed) for _ in range(ray_pass.actors)]
    waiting, ready = [actor.__ray_ready__.remote() for actor in actors], []
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        ray.get(done)
        ready.append(round(time.perf_counter() - started, 2))
    for actor in actors:
        ray.kill(actor)  # their CPUs back for the pass, which starts its own pool
    return ready
