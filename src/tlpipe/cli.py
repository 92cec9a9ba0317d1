"""The `tlpipe` command: `tlpipe <stage> [head]` runs one pipeline stage, as dvc.yaml does.

  tlpipe source | fetch | split | features | report
  tlpipe train {flatten,gap} | finetune {flatten,gap} | export {flatten,gap}
  tlpipe sweep --param trunk.image_size 48 64 96   (tlpipe.sweep: DVC experiments, not a stage)
  tlpipe predict PATH... [--model models/gap.keras] [--top-k 3] [--out predictions.csv]
  tlpipe export --format saved_model|tflite|onnx [--model models/gap.keras] [--out DIR]

Each stage is the module tlpipe.stages.<stage>; it is imported only when named, so
`tlpipe fetch` never pays TensorFlow's start-up. Also `python -m tlpipe.cli ...`.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

from tlpipe.errors import UserError, run_stage

STAGES = ("source", "fetch", "split", "features", "train", "finetune", "export", "report")
COMMANDS = ("sweep", "predict")
USAGE = f"usage: tlpipe {{{','.join((*STAGES, *COMMANDS))}}} [head | options]"
DEFAULT_MODEL = Path("models/gap.keras")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in (*STAGES, *COMMANDS):
        run_stage(_refuse)
        return
    stage, *arguments = argv
    if stage == "sweep":
        run_stage(lambda: _sweep(arguments))
        return
    if stage == "predict":
        run_stage(lambda: _predict(arguments))
        return
    if stage == "export" and arguments[:1] not in (["flatten"], ["gap"]):  # the stage takes a head
        run_stage(lambda: _export(arguments))
        return
    sys.argv = [f"tlpipe {stage}", *arguments]  # the stage reads its head from sys.argv, as under python -m
    run_stage(importlib.import_module(f"tlpipe.stages.{stage}").main)


def _refuse() -> None:
    raise UserError(USAGE)


def _sweep(argv: list[str]) -> None:
    """tlpipe sweep --param KEY VALUE...: one DVC experiment per value, then reports/sweep.md
    (reports/sweep-data.md for train.fraction) and its PNG, from `dvc exp show --json`."""
    from tlpipe.reporting.sweep_report import write_sweep_report  # matplotlib and DVC only here
    from tlpipe.sweep import sweep

    parser = argparse.ArgumentParser(prog="tlpipe sweep", description=_sweep.__doc__.splitlines()[0])
    parser.add_argument("--param", required=True, help="dotted params.yaml key, e.g. trunk.image_size")
    parser.add_argument("values", nargs="+")
    parser.add_argument("--out", type=Path, help="the Markdown report")
    arguments = parser.parse_args(argv)
    results = sweep(Path("."), arguments.param, arguments.values)
    out = arguments.out or Path("reports/sweep-data.md" if arguments.param == "train.fraction" else "reports/sweep.md")
    write_sweep_report(results, arguments.param, out)
    print(f"sweep: {sum(result.succeeded for result in results)}/{len(results)} experiments succeeded -> {out}")


def _predict(argv: list[str]) -> None:
    """tlpipe predict PATH...: classify image files (folders recursively, globs) with a trained model;
    writes a CSV of the top-k classes and probabilities and prints the count per predicted class."""
    parser = argparse.ArgumentParser(prog="tlpipe predict", description=_predict.__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"a models/<head>.keras file (default {DEFAULT_MODEL})")
    parser.add_argument("--top-k", type=int, default=3, help="classes per image in the CSV (default 3)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="the CSV (default predictions.csv)")
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args(argv)
    if arguments.top_k < 1 or arguments.batch_size < 1:
        raise UserError("tlpipe predict: --top-k and --batch-size must be 1 or more")
    from tlpipe import runtime  # TensorFlow from here on
    from tlpipe.files import write_text
    from tlpipe.model.saving import load_classifier
    from tlpipe.predictor import Predictor, image_files

    files = image_files(arguments.paths)
    if not files:
        raise UserError(f"{' '.join(arguments.paths)}: no image files found")

    device = runtime.setup(seed=0)
    model, classes = load_classifier(arguments.model)
    predictor = Predictor(model, classes, arguments.batch_size)
    start = time.perf_counter()
    predictions = predictor.predict_files(files)
    seconds = time.perf_counter() - start
    for path, reason in predictions.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    table = predictor.top_k(predictions, arguments.top_k)
    write_text(arguments.out, table.to_csv(index=False))
    print(f"predict: {len(table)} images ({len(predictions.skipped)} skipped) with {arguments.model} "
          f"({predictor.image_size} px, {len(classes)} classes) on {device} in {seconds:.1f} s "
          f"({len(table) / seconds:.1f} img/s) -> {arguments.out}")
    for name, count in table["class_1"].value_counts().items():
        print(f"  {name}: {count}")


def _export(argv: list[str]) -> None:
    """tlpipe export --format FORMAT: write a trained model as a SavedModel, TFLite or ONNX file, with labels.txt."""
    from tlpipe.exporter import FORMATS  # TensorFlow from here on

    parser = argparse.ArgumentParser(prog="tlpipe export", description=_export.__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"a models/<head>.keras file (default {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, help="the folder (default models/export/<model name>)")
    parser.add_argument("--tflite-float16", action="store_true", help="with --format tflite: also float16 weights")
    arguments = parser.parse_args(argv)
    from tlpipe.config import EXPORTS_DIR
    from tlpipe.data.labels import EXPORT_LABELS_FILE, write_labels
    from tlpipe.exporter import export_model
    from tlpipe.model.saving import load_classifier

    model, classes = load_classifier(arguments.model)
    out = arguments.out or EXPORTS_DIR / arguments.model.stem
    written = export_model(model, out, arguments.format, arguments.tflite_float16)
    write_labels(out / EXPORT_LABELS_FILE, classes)
    print(f"export: {arguments.model} -> {', '.join(str(path) for path in written.values())}, {out / EXPORT_LABELS_FILE}")


if __name__ == "__main__":
    main()
