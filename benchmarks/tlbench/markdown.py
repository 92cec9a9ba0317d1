"""benchmark.md: the setup, the targets table, the times, the stages and how each figure is measured."""

from .costs import SINGLE_CORE_IMAGES, WORDS_PER_PARAM_STEP
from .machine import NOTED_FLAGS
from .targets import ONE_HEAD_STAGES, SKIPPED_USUAL


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|", *(f"| {' | '.join(map(str, row))} |" for row in rows)]


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**fail**", None: "not measured"}[passed]


def _setup_paragraph(setup: dict) -> str:
    """The data, trunk and machine of the run."""
    versions = ", ".join(f"{name} {version}" for name, version in setup["versions"].items())
    return (
        f"{setup['images']} images ({setup['classes']} classes; train {setup['split_sizes']['train']}, "
        f"val {setup['split_sizes']['val']}, test {setup['split_sizes']['test']}); dataset `{setup['dataset']}`, "
        f"at {setup['image_size']}×{setup['image_size']} px; trunk {setup['trunk']} (weights `{setup['weights']}`, "
        f"output `{setup['output_layer'] or 'last layer'}`, features {'×'.join(map(str, setup['feature_shape']))}), "
        f"batch {setup['trunk_batch_size']}; {setup['train_repeats']} training run(s) per head. Device: {setup['device']}, {setup['cpu']}, "
        f"{setup['cpu_cores']} cores (flags: {', '.join(setup['cpu_flags']) or 'none of ' + ', '.join(NOTED_FLAGS)}); {versions}. "
        f"{setup['date']}; the benchmark took {setup['bench_seconds']:.0f} s."
    )


def benchmark_markdown(results: dict) -> str:
    setup, floor, pipeline, usual = results["setup"], results["floor"], results["pipeline"], results["usual"]
    ratios = results["ratios"]
    lines = [
        "# Benchmark: one trunk pass is the whole cost",
        "",
        _setup_paragraph(setup),
        "",
        *_zero_features_warning(pipeline),
        "## Targets",
        "",
        *_table(["target", "measured", "result"], [[t["target"], t["measured"], _verdict(t["pass"])] for t in results["targets"]]),
        "",
        "## Time",
        "",
        *_table(["what", "seconds", "images/s", "× floor"], [
            [f"floor: one trunk pass over every image, {floor['precision']}", f"{floor['seconds']:.1f}", floor["images_per_second"], "1.00"],
            *([["floor in float32", f"{results['floor_float32']['seconds']:.1f}", results["floor_float32"]["images_per_second"],
                f"{results['floor_float32']['seconds'] / floor['seconds']:.2f}"]] if floor["precision"] != "float32" else []),
            ["pipeline: `dvc repro -f`, all stages", f"{pipeline['seconds']:.1f}", "", f"{ratios['pipeline_over_floor']:.2f}"],
            ["pipeline: features + train stages", f"{pipeline['core_seconds']:.1f}", "", f"{ratios['core_over_floor']:.2f}"],
            *([["usual: both heads with the trunk in the model", f"{usual['seconds']:.1f}", "",
                f"{usual['seconds'] / floor['seconds']:.2f}"]] if usual else []),
            ["no-op `dvc repro`", f"{results['noop']['seconds']:.2f}", "", ""],
            [f"one-head change ({results['one_head_change']['change']})", f"{results['one_head_change']['seconds']:.1f}", "", ""],
            [f"the same, no stage server running ({results['one_head_change']['without_server']['change']})",
             f"{results['one_head_change']['without_server']['seconds']:.1f}", "", ""],
        ]),
        "",
        (f"The stage server (tlpipe.launcher) that the run started held {results['stage_server_rss_mib']:,.0f} MiB resident "
         f"after it." if results["stage_server_rss_mib"] else "No stage server ran (`TLPIPE_STAGE_SERVER=off`, or not Linux)."),
        "",
        (f"usual / pipeline: **{ratios['usual_over_pipeline']:.1f}** (whole `dvc repro -f`), "
         f"{ratios['usual_over_core']:.1f} (features + train stages)." if usual else f"The {SKIPPED_USUAL}."),
        "",
        (f"Beyond the floor, the features stage also runs the trunk over {pipeline['shifted']['images']:,} shifted test images "
         f"(robustness.shifts), {pipeline['shifted']['seconds']:.1f} s of its own timer: each head's spatial-invariance figures."
         if pipeline["shifted"]["images"] else "No shifted test images (`robustness.shifts: 0`)."),
        "",
        "## Stages of `dvc repro -f`",
        "",
        f"DVC start-up before the first stage: {pipeline['dvc_startup_seconds']:.1f} s.",
        "",
        *_table(["stage", "seconds in `dvc repro -f`", "stage's own timer", "seconds alone", "peak RSS (MiB)"], [
            [stage, f"{figures['seconds']:.1f}", _own_seconds(stage, pipeline), figures.get("alone_seconds", ""),
             figures.get("peak_rss_mib", "")]
            for stage, figures in pipeline["stages"].items()
        ]),
        "",
        *_rest_section(results),
        *_accuracy_section(results),
        "## How it is measured",
        "",
        "All in one run of the benchmark (`make bench`, `python -m benchmarks.tlbench`), in a fresh temporary git + DVC copy of the repo (dvc.yaml, params.yaml "
        "with the options applied, src/), on the same data and machine.",
        "",
        "- **floor**: the trunk, built and compiled as the features stage builds it (no XLA), in the precision the stage chose (and again in float32 where that differs), over every image through "
        "the stage's own input pipeline (`tlpipe.data.inputs.image_batches`: parallel decoding, prefetch), batch "
        f"{setup['trunk_batch_size']}; one warm-up batch is not timed; the outputs are dropped (nothing written).",
        "- **pipeline**: wall time of `dvc repro -f` from a fresh copy. A stage's time runs from DVC's `Running stage` "
        "line to the next one (or the end), read as the output streams: process start, imports, the work, and DVC "
        "hashing and caching its outputs. *Stage's own timer*: the trunk passes as the features stage times them (every image, then the shifted test images), the "
        "`fit` time the train stage reports.",
        "- **usual**: for each head, the same trunk and head (`tlpipe.model.heads.assemble`) trained end to end from images "
        "(`image_batches` with labels) by the one training recipe (`tlpipe.model.fitting.fit_classifier`), trunk frozen, same seed, optimizer, batch size, train/val split and validation "
        "every epoch, a new random order of the training images each epoch, for exactly the epochs the pipeline ran "
        "(its early stopping's count; no early stopping here), no XLA. Time = the sum of both heads' training; the "
        "test predictions (another trunk pass) are timed apart and not counted.",
        "- **fixed cost**: each stage's time in `dvc repro -f` minus its own work (the features stage's trunk passes, "
        "the train stages' `fit` over all their runs); the total is `dvc repro -f` minus all that work, against "
        "`python -c \"import tensorflow, keras\"` run in the copy (median of 3).",
        "- **decoding**: the features stage's input pipeline (`image_batches`) over every image with no trunk, "
        f"against one core decoding up to {SINGLE_CORE_IMAGES} of the same files one after another (`load_rgb`) "
        "times the cores this process may use.",
        "- **head training**: seconds per epoch = the train stage's `fit` time over all its runs / their epochs "
        "(validation included). Roofline = the larger of the epoch's arithmetic (Dense layers: 2 FLOP per weight "
        "per row forward, 3× that to train, plus the validation rows' forward pass) at the float32 matrix-multiply "
        "rate measured here (TensorFlow, 2048² by 2048², best of 5), and its memory traffic (the float16 features "
        f"read once, plus {WORDS_PER_PARAM_STEP} float32 words per parameter per step: weights read forward and backward, "
        "gradient written, Adam reading gradient, weight and both moments and writing three) at the copy bandwidth "
        "measured here (NumPy, 256 MiB, one core, best of 5).",
        "- **accuracy**: pipeline = `reports/eval/<head>/metrics.json` (its early stopping keeps the best epoch's "
        "weights); usual = the model after its last epoch, on the same test images.",
        "- **no-op / one-head change**: `dvc repro` right after the full run; then with heads.gap.learning_rate halved. "
        f"The target wants only {', '.join(sorted(ONE_HEAD_STAGES))} to run, in ≤ 10% of the full run.",
        "- **peak RSS**: after the above, each stage command (`python -m tlpipe.stages.features`, `python -m tlpipe.stages.train <head>`) "
        "is run again alone; a small probe process spawns it and reads its max resident set size from `os.wait4` "
        "(spawned straight from the benchmark, which holds TensorFlow, a child's figure would start from the "
        "benchmark's own memory). *Seconds alone* is that run's wall time, without DVC.",
        "",
    ]
    return "\n".join(lines)


def _rest_section(results: dict) -> list[str]:
    fixed, decoding, rates, pipeline = results["fixed_cost"], results["decoding"], results["machine_rates"], results["pipeline"]
    return [
        "## What remains beside the trunk pass",
        "",
        f"Fixed cost: **{fixed['seconds']:.1f} s** of the {pipeline['seconds']:.1f} s `dvc repro -f` "
        f"({results['ratios']['fixed_over_import']:.1f}× one `import tensorflow, keras`, {results['import_tensorflow_seconds']:.2f} s "
        f"here); the trunk pass and the heads' `fit` are the other {fixed['work_seconds']:.1f} s.",
        "",
        *_table(["stage", "seconds in `dvc repro -f`", "its own work", "fixed cost"], [
            [stage, f"{pipeline['stages'][stage]['seconds']:.1f}", _own_seconds(stage, pipeline), f"{seconds:.1f}"]
            for stage, seconds in fixed["stages"].items()
        ]),
        "",
        f"Decoding: **{decoding['images_per_second']} img/s** through the input pipeline on {decoding['cores']} cores; "
        f"one core, one image after another: {decoding['single_core_images_per_second']} img/s; "
        f"**{decoding['efficiency']:.0%}** of cores × one core.",
        "",
        f"Head training, per epoch, against its roofline (this machine: {rates['matmul_gflops']} GFLOP/s float32 matrix "
        f"multiply, {rates['copy_gb_per_second']} GB/s copy bandwidth):",
        "",
        *_table(["head", "params", "train rows", "steps", "GFLOP", "MiB moved", "arithmetic s", "memory s", "roofline s",
                 "measured s", "× roofline"], [
            [head, f"{h['params']:,}", h["train_rows"], h["steps_per_epoch"], h["gflop_per_epoch"], h["mib_per_epoch"],
             h["arithmetic_seconds"], h["memory_seconds"], h["roofline_seconds"], h["seconds_per_epoch"], h["over_roofline"]]
            for head, h in results["head_training"].items()
        ]),
        "",
    ]


def _accuracy_section(results: dict) -> list[str]:
    pipeline, usual = results["pipeline"], results["usual"]
    if usual is None:
        return []
    return [
        "## Accuracy on the test split",
        "",
        *_table(["head", "epochs (pipeline best)", "pipeline", "usual", "difference (points)", "usual s/epoch"], [
            [head, f"{usual['heads'][head]['epochs']} ({pipeline['heads'][head]['best_epoch']})", f"{figures['pipeline']:.4f}",
             f"{figures['usual']:.4f}", f"{figures['difference_points']:+.1f}", usual["heads"][head]["seconds_per_epoch"]]
            for head, figures in results["accuracy"].items()
        ]),
        "",
    ]


def _zero_features_warning(pipeline: dict) -> list[str]:
    if pipeline["cached_features_nonzero_fraction"] > 0:
        return []
    return [
        "**Warning: the cached features are all zero** (the trunk's outputs underflow float16, as random-init "
        "MobileNets' do, about 1e-12): both approaches are at chance, so the accuracy comparison says nothing.",
        "",
    ]


def _own_seconds(stage: str, pipeline: dict) -> str:
    if stage == "features":
        return f"{pipeline['features_own_seconds']:.1f}"
    if stage.startswith("train@"):
        return f"{pipeline['heads'][stage.removeprefix('train@')]['train_own_seconds']:.1f}"
    return ""


def engines_markdown(results: dict) -> str:
    """benchmark.md of --engine ray: the features stage on each engine, and what Ray adds phase by phase."""
    engines, phases, floor = results["engines"], results["ray_phases"], results["floor"]
    local, ray = engines["local"], engines["ray"]
    ready = phases["actor_ready_seconds"]
    added = phases["ray_init_seconds"] + phases["setup_seconds"] + max(ready)
    trunk_seconds = phases["pass_seconds"] - max(ready)
    return "\n".join([
        "# Benchmark: the features stage on Ray against the local engine",
        "",
        _setup_paragraph(results["setup"]),
        "",
        "## The features stage, each engine",
        "",
        *_table(["features stage", "local", f"Ray, {ray['actors']} actors ({ray['cpus_per_actor']:g} CPU each)", "Ray / local"], [
            ["its own timer: the trunk pass and writing the cache, s", local["own_seconds"], ray["own_seconds"],
             f"{engines['ray_over_local_seconds']:.2f}"],
            ["images/s by that timer", local["images_per_second"], ray["images_per_second"],
             f"{ray['images_per_second'] / local['images_per_second']:.2f}"],
            ["the whole process (start, imports, trunk built, ray.init), s", local["process_seconds"], ray["process_seconds"],
             f"{engines['ray_over_local_process_seconds']:.2f}"],
            ["device", local["device"], ray["device"], ""],
        ]),
        "",
        f"The two caches differ by {engines['cache_max_abs_difference']:g} at most (float16 features).",
        "",
        "## What Ray adds, phase by phase",
        "",
        f"Measured in the benchmark's own process, one phase after the other, with the wall clock around each, on {phases['cluster']} "
        f"({phases['nodes']} node; Ray {phases['ray_version']}).",
        "",
        *_table(["phase", "seconds", "images/s"], [
            ["`ray.init`: a Ray started on this machine", f"{phases['ray_init_seconds']:.2f}", ""],
            ["the engine's setup: pool sized, the trunk saved for the object store", f"{phases['setup_seconds']:.2f}", ""],
            [f"{len(ready)} actors started alone, each ready (worker process, TensorFlow imported, trunk loaded) after",
             ", ".join(f"{seconds:.2f}" for seconds in ready), ""],
            ["the pass into the object store: decoding tasks, actors started again, the trunk over every image",
             f"{phases['pass_seconds']:.2f}", phases["pass_images_per_second"]],
            ["of which the trunk over every image: the pass less the slower actor's start (an estimate)",
             f"{trunk_seconds:.2f}", round(results["setup"]["images"] / trunk_seconds, 1)],
            ["collecting its rows into this process, in order", f"{phases['collect_seconds']:.2f}", ""],
            [f"local: the trunk pass over the same images in this process (tf.data input, {floor['precision']})",
             f"{floor['seconds']:.2f}", floor["images_per_second"]],
        ]),
        "",
        f"Before its first image, Ray costs here {added:.1f} s (`ray.init`, setup, the slower actor's start); the "
        f"features stage on Ray took {engines['ray_over_local_seconds']:.2f}× the local engine's time by its own timer, "
        f"{engines['ray_over_local_process_seconds']:.2f}× as a whole process.",
        "",
        f"On one machine Ray cannot beat the local engine: both run the same trunk on the same {results['setup']['cpu_cores']} "
        "cores, the local engine with TensorFlow's threads on all of them, and Ray adds its start-up, a worker process "
        "per actor that imports TensorFlow and loads the trunk, decoding in separate tasks, and every row's trip through "
        "its object store back to this process. The actors' CPUs are a reservation, not a limit: each actor's TensorFlow "
        "still runs threads on every core, so here they compete for the same cores. Ray pays off across machines (or "
        "GPUs): the trunk pass divides among the nodes, while the start-up is paid once; head training on the cached "
        "features stays on one node either way.",
        "",
        "## How it is measured",
        "",
        "- **features stage**: in a fresh temporary git + DVC copy of the repo, `dvc repro split`, then "
        "`python -m tlpipe.stages.features` alone, on `features.engine: local` and then on `features.engine: ray` "
        "(`RAY_ADDRESS` unset: the stage starts a Ray on this machine), each writing `reports/features.json`, whose "
        "timer runs from the first image to the cache written (after `ray.init` and the trunk's setup; on Ray, the "
        "actors start within it). The whole process: its wall time.",
        "- **phases**: `tlpipe.ray_features` as the stage uses it: `connect` (`ray.init`), `RayTrunkPass`, then "
        "the engine's `TrunkActor`s started on their own until Ray reports them ready (then ended), then the "
        "engine's dataset materialized into Ray's object store (Ray's per-operator timings of it are in "
        "benchmark.json, `ray_phases.ray_data_stats`), then its rows read back in order. In the engine these overlap "
        "(the rows stream back while the trunk runs), so their sum is more than the stage's time.",
        "",
    ])
