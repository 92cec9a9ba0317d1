"""The command line: options -> params of a temporary project copy -> measurements -> benchmark.json and .md."""

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from tlpipe import runtime, testing
from tlpipe.config import HEAD_NAMES, REPORTS_DIR, load_config
from tlpipe.errors import UserError
from tlpipe.files import sha256_of, write_json, write_text

from .engines import RAY_ACTORS, benchmark_engines
from .machine import describe_setup
from .markdown import benchmark_markdown, engines_markdown
from .measure import benchmark, say
from .synthetic import generate_dataset
from .targets import check_targets

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tlbench",
                                     description="Benchmark: one trunk pass against the pipeline and the usual approach.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="image folder or .zip/.tar.* archive of one (default: params.yaml's dataset.url)")
    source.add_argument("--generate", type=int, metavar="N", help="generate a synthetic dataset of N images (10 classes) at --image-size")
    parser.add_argument("--image-size", type=int, help="trunk.image_size (default: params.yaml's)")
    parser.add_argument("--trunk", choices=("vgg16", "mobilenet", "mobilenet_v2"), help="trunk.name (default: params.yaml's)")
    parser.add_argument("--weights", help="trunk.weights (default: params.yaml's for its own trunk, else none)")
    parser.add_argument("--output-layer", help="trunk.output_layer (default: params.yaml's for its own trunk, else '' = last layer)")
    parser.add_argument("--epochs", type=int, help="heads.*.epochs, the most each head trains (default: params.yaml's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train.repeats (default 1: the usual approach trains each head once, so equal epochs "
                             "mean one run per head; params.yaml's repeats only add the spread between runs)")
    parser.add_argument("--skip-usual", action="store_true",
                        help="leave out the usual approach (it costs about 17 trunk passes at 10 epochs per head): "
                             "for the timing and peak-RSS figures of a large dataset")
    parser.add_argument("--rest", action="store_true",
                        help="a trunk that costs almost nothing, so that what remains is the rest: "
                             f"{REST_PRESET_TEXT} (each may still be given); implies --skip-usual")
    parser.add_argument("--compare", type=Path, metavar="JSON",
                        help="a benchmark.json of a run at another dataset size (same trunk and image size): "
                             "checks the peak-RSS target against it")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: instead of the whole benchmark, the features stage on the local engine and on a "
                             f"local Ray with {RAY_ACTORS} actors, side by side, and what Ray adds phase by phase")
    parser.add_argument("--out", type=Path,
                        help=f"where to write benchmark.json and benchmark.md (default: reports/, {RAY_OUT} for --engine ray)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy of the repo (its path is printed)")
    args = parser.parse_args()
    ignored = [option for option, dest in RAY_IGNORES.items() if getattr(args, dest) != parser.get_default(dest)]
    if args.engine == "ray" and ignored:
        parser.error(f"--engine ray times the features stage only: leave out {', '.join(ignored)}")
    return args


# What --engine ray has no use for: it trains nothing and measures no peak RSS.
RAY_IGNORES = {"--epochs": "epochs", "--repeats": "repeats", "--skip-usual": "skip_usual", "--rest": "rest", "--compare": "compare"}

# --rest: the options it sets where they are not given.
REST_PRESET = {"generate": 10_000, "image_size": 32, "trunk": "mobilenet_v2", "weights": "none"}
REST_PRESET_TEXT = "MobileNetV2 at 32 px, weights none, 10,000 generated images"
RAY_OUT = REPORTS_DIR / "bench-ray"  # not reports/: its benchmark.md is the whole benchmark's


def main() -> None:
    args = parse_args()
    if args.rest:
        for option, value in REST_PRESET.items():
            if getattr(args, option) is None and not (option == "generate" and args.dataset):
                setattr(args, option, value)
        args.skip_usual = True
    out = (args.out or (RAY_OUT if args.engine == "ray" else REPORTS_DIR)).resolve()
    compare = json.loads(args.compare.read_text()) if args.compare else None
    started, home = time.perf_counter(), Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="tlpipe-bench-"))
    say(f"working in {work}")
    try:
        params = project_params(args, work)
        project = testing.copy_project(REPO, work / "project", params)
        os.chdir(project)  # tlpipe's paths (data/raw, data/features, ...) are relative to the project
        config = load_config()
        device = runtime.setup(config.seed)
        if args.engine == "ray":
            measured = benchmark_engines(project, config)
        else:
            measured = benchmark(project, config, usual=not args.skip_usual)
        dataset = f"generated: {args.generate} images, seed {config.seed}" if args.generate else config.dataset.url
        results = {"setup": describe_setup(config, dataset, device), **measured}
        results["setup"]["bench_seconds"] = round(time.perf_counter() - started, 1)
        if args.engine == "local":
            results["targets"] = check_targets(results, compare)
    finally:
        os.chdir(home)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    write_json(out / "benchmark.json", results)
    markdown = engines_markdown(results) if args.engine == "ray" else benchmark_markdown(results)
    write_text(out / "benchmark.md", markdown)
    print(markdown)
    say(f"wrote {out / 'benchmark.json'} and {out / 'benchmark.md'} in {results['setup']['bench_seconds']:.0f} s")


def project_params(args: argparse.Namespace, work: Path) -> dict:
    """The repo's params.yaml with the options applied; the dataset is used in place, by absolute path."""
    base = load_config(PARAMS)
    overrides = {}
    if args.trunk and args.trunk != base.trunk.name:
        # The params' weights and output layer fit their own trunk.
        overrides.update({"trunk.name": args.trunk, "trunk.weights": "none", "trunk.output_layer": ""})
    if args.weights:
        overrides["trunk.weights"] = args.weights
    if args.output_layer is not None:
        overrides["trunk.output_layer"] = args.output_layer
    image_size = args.image_size or base.trunk.image_size
    overrides["trunk.image_size"] = image_size
    overrides["train.repeats"] = args.repeats
    if args.epochs:
        overrides.update({f"heads.{head}.epochs": args.epochs for head in HEAD_NAMES})

    if args.generate:
        say(f"generating {args.generate} images of {image_size}x{image_size} px")
        source = generate_dataset(work / "dataset", args.generate, image_size, base.seed)
    elif args.dataset:
        source = Path(args.dataset).resolve()
    elif re.match(r"https?://", base.dataset.url):
        source = base.dataset.url
    else:
        source = (REPO / base.dataset.url).resolve()
    if isinstance(source, Path):
        if not source.exists():
            raise UserError(f"--dataset {source}: no such file or folder")
        overrides["dataset.sha256"] = sha256_of(source) if source.is_file() else ""
    overrides["dataset.url"] = str(source)
    return testing.params_with(PARAMS, **overrides)
