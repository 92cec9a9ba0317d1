"""Benchmark: one trunk pass is the whole cost of the pipeline (issue 5).

In one run, on the same data and machine, in a temporary git + DVC copy of the repo
(the repo's own checkout is never touched), in this order:

 pipeline   `dvc repro -f` of the whole pipeline: total wall time, and each
            stage's time, read from DVC's output as it streams (a stage lasts
            from its "Running stage" line to the next one: its process start,
            TensorFlow import, the work and DVC's caching of its outputs);
 no-op      `dvc repro` with nothing changed;
 one head   heads.gap.learning_rate halved in params.yaml, then `dvc repro`;
 floor      one forward pass of the frozen trunk over every image, as the
            features stage runs it (same tf.data input, batch size, no XLA),
            after one warm-up batch; it reads the images and manifest that the
            pipeline's fetch and split stages made, hence after them;
 usual      both heads trained end to end with the frozen trunk inside the
            model (images decoded and passed through the trunk every epoch,
            as in the Keras transfer-learning guide), for the epochs the
            pipeline ran for each head, same batch size and train/val data,
            no early stopping; then each model's test accuracy;
 peak RSS   the features and train stage commands run again, alone; a small
            probe process spawns each and reads its max RSS from os.wait4. Last,
            because it rewrites the pipeline's outputs behind DVC's back.

It writes <out>/benchmark.json and <out>/benchmark.md (out = reports/ of the
directory it is run from, unless --out says otherwise) and prints the summary.

Usage (from the repo root, the venv active; `make bench` does this):
  python benchmarks/bench.py                                  # the embedded default
  python benchmarks/bench.py --generate 2000 --image-size 224 --trunk mobilenet_v2 --weights none --epochs 10
  python benchmarks/bench.py --dataset path/to/folder-or-archive --image-size 224
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

import keras
import tensorflow as tf

from tlpipe import runtime
from tlpipe.config import EVAL_REPORTS_DIR, HEAD_NAMES, REPORTS_DIR, TRAIN_REPORTS_DIR, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.features import class_names, image_batches, load_split, read_manifest, split_rows
from tlpipe.files import sha256_of, write_json, write_text
from tlpipe.heads import assemble, build_head
from tlpipe.trunks import build_trunk

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", ".gitignore", ".dvcignore")
CORE_STAGES = ("features", "train@flatten", "train@gap")  # what produces two trained heads
ONE_HEAD_STAGES = {"train@gap", "finetune@gap", "report"}  # what a gap-only change must re-run
RSS_COMMANDS = {
    "features": ["python", "-m", "tlpipe.features"],
    "train@flatten": ["python", "-m", "tlpipe.train", "flatten"],
    "train@gap": ["python", "-m", "tlpipe.train", "gap"],
}

# Synthetic dataset: 10 classes, a shape (5 kinds) in a colour family (2), on grey noise with faint colour blobs.
SHAPES = ("circle", "square", "triangle", "cross", "ring")
PALETTES = {"warm": ((150, 255), (40, 160), (0, 80)), "cool": ((0, 80), (60, 180), (150, 255))}  # (R, G, B) ranges


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="image folder or .zip/.tar.* archive of one (default: params.yaml's dataset.url)")
    source.add_argument("--generate", type=int, metavar="N", help="generate a synthetic dataset of N images (10 classes) at --image-size")
    parser.add_argument("--image-size", type=int, help="trunk.image_size (default: params.yaml's)")
    parser.add_argument("--trunk", choices=("vgg16", "mobilenet", "mobilenet_v2"), help="trunk.name (default: params.yaml's)")
    parser.add_argument("--weights", help="trunk.weights (default: params.yaml's for its own trunk, else none)")
    parser.add_argument("--output-layer", help="trunk.output_layer (default: params.yaml's for its own trunk, else '' = last layer)")
    parser.add_argument("--epochs", type=int, help="heads.*.epochs, the most each head trains (default: params.yaml's)")
    parser.add_argument("--skip-usual", action="store_true",
                        help="leave out the usual approach (it costs about 17 trunk passes at 10 epochs per head): "
                             "for the timing and peak-RSS figures of a large dataset")
    parser.add_argument("--compare", type=Path, metavar="JSON",
                        help="a benchmark.json of a run at another dataset size (same trunk and image size): "
                             "checks the peak-RSS target against it")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR, help="where to write benchmark.json and benchmark.md (default: reports/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy of the repo (its path is printed)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = args.out.resolve()
    compare = json.loads(args.compare.read_text()) if args.compare else None
    started, home = time.perf_counter(), Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="tlpipe-bench-"))
    project = work / "project"
    say(f"working in {work}")
    try:
        params = project_params(args, work)
        make_project(project, params)
        os.chdir(project)  # tlpipe's paths (data/raw, data/features, ...) are relative to the project
        config = load_config()
        device = runtime.setup(config.seed)
        measured = benchmark(project, config, usual=not args.skip_usual)
        dataset = f"generated: {args.generate} images, seed {config.seed}" if args.generate else params["dataset"]["url"]
        results = {"setup": describe_setup(config, dataset, device), **measured}
        results["setup"]["bench_seconds"] = round(time.perf_counter() - started, 1)
        results["targets"] = check_targets(results, compare)
    finally:
        os.chdir(home)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    write_json(out / "benchmark.json", results)
    markdown = benchmark_markdown(results)
    write_text(out / "benchmark.md", markdown)
    print(markdown)
    say(f"wrote {out / 'benchmark.json'} and {out / 'benchmark.md'} in {results['setup']['bench_seconds']:.0f} s")


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


# --- the temporary project -------------------------------------------------------------------------


def project_params(args: argparse.Namespace, work: Path) -> dict:
    """The repo's params.yaml with the options applied; the dataset is used in place, by absolute path."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    trunk = params["trunk"]
    if args.trunk and args.trunk != trunk["name"]:
        trunk.update(name=args.trunk, weights="none", output_layer="")  # the params' weights and layer fit their own trunk
    trunk["weights"] = args.weights or trunk["weights"]
    trunk["output_layer"] = trunk["output_layer"] if args.output_layer is None else args.output_layer
    trunk["image_size"] = args.image_size or trunk["image_size"]
    for head in HEAD_NAMES:
        params["heads"][head]["epochs"] = args.epochs or params["heads"][head]["epochs"]

    if args.generate:
        source = generate_dataset(work / "dataset", args.generate, trunk["image_size"], params["seed"])
    elif args.dataset:
        source = Path(args.dataset).resolve()
    elif re.match(r"https?://", params["dataset"]["url"]):
        source = params["dataset"]["url"]
    else:
        source = (REPO / params["dataset"]["url"]).resolve()
    if isinstance(source, Path):
        if not source.exists():
            raise UserError(f"--dataset {source}: no such file or folder")
        params["dataset"]["sha256"] = sha256_of(source) if source.is_file() else ""
    params["dataset"]["url"] = str(source)
    return params


def generate_dataset(root: Path, count: int, size: int, seed: int) -> Path:
    """root/<shape>_<palette>/<n>.jpg: a random shape of one colour family on coloured noise, 10 classes."""
    say(f"generating {count} images of {size}x{size} px in {root}")
    rng = np.random.default_rng(seed)
    classes = [(shape, palette) for shape in SHAPES for palette in PALETTES]
    for label in classes:
        (root / "_".join(label)).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        shape, palette = classes[index % len(classes)]
        # Background: grey with faint colour blobs (a 4x4 random image scaled up) and pixel noise.
        blobs = Image.fromarray(rng.integers(80, 176, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 20, (size, size, 3))
        image = Image.fromarray(np.clip(np.asarray(blobs) + noise, 0, 255).astype(np.uint8))
        color = tuple(int(rng.integers(low, high)) for low, high in PALETTES[palette])
        draw_shape(ImageDraw.Draw(image), shape, color, size, rng)
        image.save(root / f"{shape}_{palette}" / f"{index:06d}.jpg", quality=90)
    return root


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, color: tuple, size: int, rng: np.random.Generator) -> None:
    radius = rng.uniform(size / 5, size / 2.5)
    x, y = rng.uniform(radius, size - radius, 2)
    box = (x - radius, y - radius, x + radius, y + radius)
    width = max(1, round(radius / 3))
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=color)
    elif shape == "cross":
        draw.line([(x - radius, y), (x + radius, y)], fill=color, width=width)
        draw.line([(x, y - radius), (x, y + radius)], fill=color, width=width)
    else:  # ring
        draw.ellipse(box, outline=color, width=width)


def make_project(project: Path, params: dict) -> None:
    """A committed git + DVC copy of the repo's pipeline (as tests/test_pipeline.py makes one)."""
    project.mkdir()
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    load_config(project / "params.yaml")  # a bad option stops here, in one line
    for command in (
        ["git", "init", "-q", "--initial-branch", "main"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "config", "core.check_update", "false"],  # no update check in the background of the timings
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "benchmark"],
    ):
        run(command, project)


# --- running commands ------------------------------------------------------------------------------


# On Linux a child's ru_maxrss starts from its parent's memory at spawn (vfork, then exec), and
# this process holds TensorFlow: a small probe process spawns each command, waits for it and
# writes the command's own peak RSS (KiB) to the file named by its first argument.
RSS_PROBE = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as file:
    file.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Run:
    seconds: float
    lines: list[tuple[float, str]]  # (seconds since start, line) of stdout and stderr together
    max_rss_mib: float  # the largest of the command and the descendants it waited for

    def stages_run(self) -> list[str]:
        return [match.group(1) for _, line in self.lines if (match := re.match(r"Running stage '([^']+)'", line))]


def run(command: list[str], cwd: Path) -> Run:
    """Run a command with this venv first on PATH; time each output line; measure its peak RSS.

    PYTHONPATH puts the copy's src/ first, so the stages run the code DVC hashed in the copy,
    not the repo's (installed editable), which may change while the benchmark runs.
    """
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(cwd / "src"),
        "PYTHONUNBUFFERED": "1",  # DVC's lines arrive as they are written, for the stage timings
    }
    rss_file = cwd.parent / "peak_rss_kib"
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", RSS_PROBE, str(rss_file), *command],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout]
    process.wait()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise UserError(f"`{' '.join(command)}` failed with status {process.returncode} in {cwd}:\n{tail}")
    return Run(seconds, lines, int(rss_file.read_text()) / 1024)  # ru_maxrss is in KiB on Linux


def stage_seconds(repro: Run) -> tuple[float, dict[str, float]]:
    """DVC's start-up (before the first stage) and each stage's time, from when DVC announced it."""
    starts = [(at, match.group(1)) for at, line in repro.lines if (match := re.match(r"Running stage '([^']+)'", line))]
    ends = [at for at, _ in starts[1:]] + [repro.seconds]
    return starts[0][0], {stage: end - at for (at, stage), end in zip(starts, ends)}


# --- the measurements ------------------------------------------------------------------------------


def benchmark(project: Path, config, usual: bool = True) -> dict:
    say("pipeline: dvc repro -f")
    repro = run(["dvc", "repro", "-f"], project)
    startup, stages = stage_seconds(repro)
    heads = {head: pipeline_head(head) for head in HEAD_NAMES}  # read before anything re-runs a head
    features = json.loads((REPORTS_DIR / "features.json").read_text())
    pipeline = {
        "seconds": round(repro.seconds, 2),
        "core_seconds": round(sum(stages[stage] for stage in CORE_STAGES), 2),
        "dvc_startup_seconds": round(startup, 2),
        "stages": {stage: {"seconds": round(seconds, 2)} for stage, seconds in stages.items()},
        "features_own_seconds": features["seconds"],
        # A trunk whose outputs underflow float16 (random-init MobileNets: ~1e-12) caches zeros: chance accuracy.
        "cached_features_nonzero_fraction": round(float(np.mean(load_split("train")[0][:1024] != 0)), 4),
        "heads": heads,
        "peak_rss_mib": round(repro.max_rss_mib, 1),
    }
    say(f"   {repro.seconds:.1f} s: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items()))

    say("no-op: dvc repro")
    noop = run(["dvc", "repro"], project)
    say("one-head change: heads.gap.learning_rate halved, dvc repro")
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    old_rate = params["heads"]["gap"]["learning_rate"]
    params["heads"]["gap"]["learning_rate"] = old_rate / 2
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    one_head = run(["dvc", "repro"], project)

    say("floor: one trunk pass over every image")
    manifest = read_manifest()
    trunk = build_trunk(config.trunk)
    trunk.compile(jit_compile=False)  # as the features stage
    floor = trunk_pass(trunk, manifest["path"], config)
    say(f"   {floor['seconds']:.1f} s, {floor['images_per_second']} img/s")

    if usual:
        say("usual approach: trunk inside the model, both heads")
        usual_heads = {head: usual_approach(head, trunk, manifest, config, heads[head]["epochs_run"]) for head in HEAD_NAMES}
        usual = {"seconds": round(sum(head["fit_seconds"] for head in usual_heads.values()), 2), "heads": usual_heads}
    else:
        usual = None

    say("peak RSS: the features and train stages, alone")
    alone = {stage: run(command, project) for stage, command in RSS_COMMANDS.items()}
    for stage, measured in alone.items():
        pipeline["stages"][stage].update(alone_seconds=round(measured.seconds, 2), peak_rss_mib=round(measured.max_rss_mib, 1))

    return {
        "floor": floor,
        "pipeline": pipeline,
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
        },
        "ratios": {
            "pipeline_over_floor": round(repro.seconds / floor["seconds"], 2),
            "core_over_floor": round(pipeline["core_seconds"] / floor["seconds"], 2),
            "usual_over_pipeline": usual and round(usual["seconds"] / repro.seconds, 2),
            "usual_over_core": usual and round(usual["seconds"] / pipeline["core_seconds"], 2),
        },
    }


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


def trunk_pass(trunk: keras.Model, paths: pd.Series, config) -> dict:
    """The floor: the trunk over every image through the features stage's own input pipeline.

    One batch first, not timed (graph tracing); the outputs are dropped.
    """
    trunk.predict_on_batch(next(iter(image_batches(paths[: config.trunk.batch_size], config.trunk))))
    start = time.perf_counter()
    for batch in image_batches(paths, config.trunk):
        trunk.predict_on_batch(batch)
    seconds = time.perf_counter() - start
    return {"images": len(paths), "seconds": round(seconds, 2), "images_per_second": round(len(paths) / seconds, 1)}


def usual_approach(head_name: str, trunk: keras.Model, manifest: pd.DataFrame, config, epochs: int) -> dict:
    """Train trunk + head end to end from images for a fixed number of epochs, then test accuracy.

    As the pipeline's train stage: same head, seed, optimizer, loss, batch size and data,
    validation every epoch, the training images in a new random order each epoch. Unlike it:
    no early stopping (the pipeline's epoch count instead), and no XLA (it slows the trunk on CPU).
    """
    head_config = config.head(head_name)
    inputs = config.trunk.model_copy(update={"batch_size": head_config.batch_size})
    classes = class_names(manifest)
    (train_paths, train_labels), (val_paths, val_labels), (test_paths, test_labels) = (
        split_rows(manifest, split, classes) for split in ("train", "val", "test")
    )

    keras.utils.set_random_seed(config.seed)
    head = build_head(head_name, trunk.output_shape[1:], len(classes), head_config)
    model = assemble(trunk, head)
    model.compile(
        optimizer=keras.optimizers.Adam(head_config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    start = time.perf_counter()
    model.fit(
        image_batches(train_paths, inputs, train_labels, shuffle_seed=config.seed),  # a new order each epoch
        validation_data=image_batches(val_paths, inputs, val_labels),
        epochs=epochs,
        shuffle=False,  # the training batches shuffle, in tf.data
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predicted = np.argmax(model.predict(image_batches(test_paths, config.trunk), verbose=0), axis=1)
    test_seconds = time.perf_counter() - start
    accuracy = float(np.mean(predicted == test_labels))
    say(f"   {head_name}: {epochs} epochs in {fit_seconds:.1f} s, test accuracy {accuracy:.3f}")
    return {
        "epochs": epochs,
        "fit_seconds": round(fit_seconds, 2),
        "seconds_per_epoch": round(fit_seconds / epochs, 2),
        "test_seconds": round(test_seconds, 2),
        "accuracy": round(accuracy, 4),
    }


# --- setup, targets and the report -----------------------------------------------------------------


def describe_setup(config, dataset: str, device: str) -> dict:
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
        "jit_compile_heads": config.train.jit_compile,
        "device": device,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "dvc": importlib.metadata.version("dvc"),
        },
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def check_targets(results: dict, compare: dict | None) -> list[dict]:
    """The issue's targets: what was measured and whether it passes (None: not measured in this run)."""
    ratios, one_head = results["ratios"], results["one_head_change"]
    return [
        {
            "target": "pipeline / floor ≤ 1.3",
            "measured": f"{ratios['pipeline_over_floor']:.2f} (features + train stages: {ratios['core_over_floor']:.2f})",
            "pass": ratios["pipeline_over_floor"] <= 1.3,
        },
        usual_target(results),
        {
            "target": "no-op `dvc repro` ≤ 2 s",
            "measured": f"{results['noop']['seconds']:.2f} s, stages run: {', '.join(results['noop']['stages_run']) or 'none'}",
            "pass": results["noop"]["seconds"] <= 2 and not results["noop"]["stages_run"],
        },
        {
            "target": "one-head change ≤ 10% of a full run",
            "measured": f"{100 * one_head['fraction_of_full_run']:.1f}% ({one_head['seconds']:.1f} s; {', '.join(one_head['stages_run'])})",
            "pass": one_head["fraction_of_full_run"] <= 0.10 and set(one_head["stages_run"]) == ONE_HEAD_STAGES,
        },
        rss_target(results, compare),
        accuracy_target(results),
    ]


SKIPPED_USUAL = "usual approach left out (--skip-usual)"


def usual_target(results: dict) -> dict:
    target, ratios = "usual / pipeline ≥ 10 at 10 epochs per head", results["ratios"]
    if results["usual"] is None:
        return {"target": target, "measured": SKIPPED_USUAL, "pass": None}
    epochs = [results["usual"]["heads"][head]["epochs"] for head in HEAD_NAMES]
    return {
        "target": target,
        "measured": f"{ratios['usual_over_pipeline']:.1f} (vs features + train: {ratios['usual_over_core']:.1f}) "
                    f"at {' and '.join(map(str, epochs))} epochs",
        "pass": ratios["usual_over_pipeline"] >= 10,
    }


def accuracy_target(results: dict) -> dict:
    target = "same accuracy within 1 point (pipeline vs usual)"
    if results["accuracy"] is None:
        return {"target": target, "measured": SKIPPED_USUAL, "pass": None}
    worst = max(abs(head["difference_points"]) for head in results["accuracy"].values())
    return {
        "target": target,
        "measured": f"{worst:.1f} points at most ({results['setup']['split_sizes']['test']} test images)",
        "pass": worst <= 1,
    }


def rss_target(results: dict, compare: dict | None) -> dict:
    target = "peak RSS within 20% across dataset sizes (features, train)"
    if compare is None:
        return {"target": target, "measured": "one size only: run again at another size with --compare <this benchmark.json>", "pass": None}
    for key in ("trunk", "image_size"):
        if compare["setup"][key] != results["setup"][key]:
            raise UserError(f"--compare: {key} is {compare['setup'][key]} there, {results['setup'][key]} here; compare like with like")
    growth = {
        stage: results["pipeline"]["stages"][stage]["peak_rss_mib"] / compare["pipeline"]["stages"][stage]["peak_rss_mib"]
        for stage in RSS_COMMANDS
    }
    worst = max(growth, key=lambda stage: abs(growth[stage] - 1))
    return {
        "target": target,
        "measured": f"{results['setup']['images']} vs {compare['setup']['images']} images: "
                    + ", ".join(f"{stage} ×{ratio:.2f}" for stage, ratio in growth.items()),
        "pass": abs(growth[worst] - 1) <= 0.20,
    }


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|", *(f"| {' | '.join(map(str, row))} |" for row in rows)]


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**fail**", None: "not measured"}[passed]


def benchmark_markdown(results: dict) -> str:
    setup, floor, pipeline, usual = results["setup"], results["floor"], results["pipeline"], results["usual"]
    ratios = results["ratios"]
    versions = ", ".join(f"{name} {version}" for name, version in setup["versions"].items())
    lines = [
        "# Benchmark: one trunk pass is the whole cost",
        "",
        f"{setup['images']} images ({setup['classes']} classes; train {setup['split_sizes']['train']}, "
        f"val {setup['split_sizes']['val']}, test {setup['split_sizes']['test']}); dataset `{setup['dataset']}`, "
        f"at {setup['image_size']}×{setup['image_size']} px; trunk {setup['trunk']} (weights `{setup['weights']}`, "
        f"output `{setup['output_layer'] or 'last layer'}`, features {'×'.join(map(str, setup['feature_shape']))}), "
        f"batch {setup['trunk_batch_size']}. Device: {setup['device']}, {setup['cpu']}; {versions}. "
        f"{setup['date']}; the benchmark took {setup['bench_seconds']:.0f} s.",
        "",
        *_zero_features_warning(pipeline),
        "## Targets",
        "",
        *_table(["target", "measured", "result"], [[t["target"], t["measured"], _verdict(t["pass"])] for t in results["targets"]]),
        "",
        "## Time",
        "",
        *_table(["what", "seconds", "images/s", "× floor"], [
            ["floor: one trunk pass over every image", f"{floor['seconds']:.1f}", floor["images_per_second"], "1.00"],
            ["pipeline: `dvc repro -f`, all stages", f"{pipeline['seconds']:.1f}", "", f"{ratios['pipeline_over_floor']:.2f}"],
            ["pipeline: features + train stages", f"{pipeline['core_seconds']:.1f}", "", f"{ratios['core_over_floor']:.2f}"],
            *([["usual: both heads with the trunk in the model", f"{usual['seconds']:.1f}", "",
                f"{usual['seconds'] / floor['seconds']:.2f}"]] if usual else []),
            ["no-op `dvc repro`", f"{results['noop']['seconds']:.2f}", "", ""],
            [f"one-head change ({results['one_head_change']['change']})", f"{results['one_head_change']['seconds']:.1f}", "", ""],
        ]),
        "",
        (f"usual / pipeline: **{ratios['usual_over_pipeline']:.1f}** (whole `dvc repro -f`), "
         f"{ratios['usual_over_core']:.1f} (features + train stages)." if usual else f"The {SKIPPED_USUAL}."),
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
        *_accuracy_section(results),
        "## How it is measured",
        "",
        "All in one run of `benchmarks/bench.py`, in a fresh temporary git + DVC copy of the repo (dvc.yaml, params.yaml "
        "with the options applied, src/), on the same data and machine.",
        "",
        "- **floor**: the trunk, built and compiled as the features stage builds it (no XLA), over every image through "
        "the stage's own input pipeline (`tlpipe.features.image_batches`: parallel decoding, prefetch), batch "
        f"{setup['trunk_batch_size']}; one warm-up batch is not timed; the outputs are dropped (nothing written).",
        "- **pipeline**: wall time of `dvc repro -f` from a fresh copy. A stage's time runs from DVC's `Running stage` "
        "line to the next one (or the end), read as the output streams: process start, imports, the work, and DVC "
        "hashing and caching its outputs. *Stage's own timer*: the trunk pass as the features stage times it, the "
        "`fit` time the train stage reports.",
        "- **usual**: for each head, the same trunk and head (`tlpipe.heads.assemble`) trained end to end from images "
        "(`image_batches` with labels), trunk frozen, same seed, optimizer, batch size, train/val split and validation "
        "every epoch, a new random order of the training images each epoch, for exactly the epochs the pipeline ran "
        "(its early stopping's count; no early stopping here), no XLA. Time = the sum of both heads' training; the "
        "test predictions (another trunk pass) are timed apart and not counted.",
        "- **accuracy**: pipeline = `reports/eval/<head>/metrics.json` (its early stopping keeps the best epoch's "
        "weights); usual = the model after its last epoch, on the same test images.",
        "- **no-op / one-head change**: `dvc repro` right after the full run; then with heads.gap.learning_rate halved. "
        "The target wants only train@gap, finetune@gap and report to run, in ≤ 10% of the full run.",
        "- **peak RSS**: after the above, each stage command (`python -m tlpipe.features`, `python -m tlpipe.train <head>`) "
        "is run again alone; a small probe process spawns it and reads its max resident set size from `os.wait4` "
        "(spawned straight from the benchmark, which holds TensorFlow, a child's figure would start from the "
        "benchmark's own memory). *Seconds alone* is that run's wall time, without DVC.",
        "",
    ]
    return "\n".join(lines)


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


if __name__ == "__main__":
    run_stage(main)
