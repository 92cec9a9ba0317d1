"""Stage `report`: the two heads side by side, for a reviewer reading a pull request.

Reads what the features, train and finetune stages wrote under reports/ and writes
  reports/metrics.json     keyed by head: quality, parameters, size and cost
  reports/comparison.md    tables and plots, with a one-line verdict at the top
  reports/plots/*.png      training curves, confusion matrices, parameters vs accuracy
  reports/heads.csv        one row per head (parameters, accuracy): DVC's scatter plot
  reports/export.md        each head's exports against its Keras model (stage export@<head>)

reports/metrics.json also records what was measured (the dataset, classes, test split and trunk).
When a baseline exists (report.baseline), comparison.md also shows each metric's
change against the reports/metrics.json committed at that git revision, where that
baseline was measured on the same dataset, classes and test split.
"""

import json
import warnings
from pathlib import Path

import pandas as pd

from tlpipe.config import RAW_DIR, EVAL_REPORTS_DIR, EXPORT_REPORT, EXPORT_REPORTS_DIR, FINETUNE_REPORTS_DIR, HEAD_NAMES, PLOTS_DIR, REPORTS_DIR, TRAIN_REPORTS_DIR, load_config
from tlpipe.data.manifest import read_manifest
from tlpipe.errors import UserError, run_stage
from tlpipe.files import StagedOutputs, write_json, write_text
from tlpipe.reporting.baseline import committed_metrics, measured_on, resolve_revision
from tlpipe.reporting.comparison import comparison_markdown, verdict
from tlpipe.reporting.export_report import export_markdown
from tlpipe.reporting.fonts import font_warning
from tlpipe.reporting.mistakes import mistakes_markdown, plot_disagreements, plot_top_losses
from tlpipe.reporting.plots import plot_confusion_matrix, plot_params_vs_accuracy, plot_reliability, plot_training_curves
from tlpipe.reporting.robustness import robustness_markdown
from tlpipe.stats import mcnemar_p, paired_difference, repeat_summary

PLOTTED = ("head_params", "total_params", "accuracy", "macro_f1")
# Timings differ by machine and run: reports/cost.json, apart from quality and size in reports/metrics.json.
COST_KEYS = ("train_seconds", "inference_images_per_second", "predict_images_per_second")


def main() -> None:
    config = load_config()
    features = _read_json(REPORTS_DIR / "features.json")
    metrics = {head: head_metrics(head) for head in HEAD_NAMES}
    predictions = {head: pd.read_csv(EVAL_REPORTS_DIR / head / "predictions.csv") for head in HEAD_NAMES}
    paired = paired_comparison(predictions)
    identity = measured_on(config, read_manifest())
    revision = resolve_revision(config.report.baseline)
    baseline = committed_metrics(revision)
    quality = {head: {key: value for key, value in figures.items() if key not in COST_KEYS} for head, figures in metrics.items()}
    # Every report and plot goes in place together, once all are written.
    with StagedOutputs() as outputs:
        write_json(outputs.file(REPORTS_DIR / "metrics.json"), {**quality, "flatten_vs_gap": paired, "measured_on": identity})
        write_json(outputs.file(REPORTS_DIR / "cost.json"), {head: {key: metrics[head][key] for key in COST_KEYS} for head in HEAD_NAMES})
        heads = pd.DataFrame([{"head": head, **{key: metrics[head][key] for key in PLOTTED}} for head in HEAD_NAMES])
        write_text(outputs.file(REPORTS_DIR / "heads.csv"), heads.to_csv(index=False))
        plots = outputs.folder(PLOTS_DIR)
        labels = pd.concat(predictions.values())[["actual", "predicted"]].astype(str)
        missing_fonts = font_warning(sorted(set(labels.to_numpy().ravel())))
        if missing_fonts:  # this one line, instead of matplotlib's per missing glyph
            print(f"report: {missing_fonts}")
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        plot_training_curves(plots / "training_curves.png")
        for head in HEAD_NAMES:
            plot_confusion_matrix(head, plots / f"confusion_{head}.png")
        plot_params_vs_accuracy(metrics, plots / "params_vs_accuracy.png")
        plot_reliability(metrics, plots / "reliability.png")
        finetuned = {head: _read_json(FINETUNE_REPORTS_DIR / head / "metrics.json") for head in HEAD_NAMES}
        for head in HEAD_NAMES:
            plot_top_losses(predictions[head], RAW_DIR, head, plots / f"top_losses_{head}.png")
        plot_disagreements(predictions, RAW_DIR, plots / "disagreements.png")
        comparison = comparison_markdown(config, features, metrics, identity, paired, revision, baseline, finetuned)
        robustness = {head: _read_json(EVAL_REPORTS_DIR / head / "robustness.json") for head in HEAD_NAMES}
        sections = [*robustness_markdown(features, robustness), *mistakes_markdown(predictions)]
        write_text(outputs.file(REPORTS_DIR / "comparison.md"), "\n".join([comparison, *sections]))
        write_text(outputs.file(EXPORT_REPORT), export_markdown({head: _read_json(EXPORT_REPORTS_DIR / f"{head}.json") for head in HEAD_NAMES}))
        outputs.commit()
    print(f"report: {verdict(metrics, paired)}")
    print(f"report: baseline {revision}: " + (f"commit {baseline[0]}" if baseline else "none (no committed reports/metrics.json)"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def head_metrics(head: str) -> dict:
    """One head's figures from its training and evaluation outputs, flat, for reports/metrics.json."""
    training = _read_json(TRAIN_REPORTS_DIR / head / "metrics.json")
    evaluation = _read_json(EVAL_REPORTS_DIR / head / "metrics.json")
    accuracy = repeat_summary([run["test_accuracy"] for run in training["runs"]])
    macro_f1 = repeat_summary([run["test_macro_f1"] for run in training["runs"]])
    calibration = evaluation["calibration"]
    return {
        "accuracy": round(evaluation["accuracy"], 4),
        "macro_f1": round(evaluation["macro_f1"], 4),
        "best_val_accuracy": round(training["best_val_accuracy"], 4),
        "best_epoch": training["best_epoch"],
        "overfitting_gap": round(training["overfitting_gap"], 4),
        "epochs_run": training["epochs_run"],
        "train_seconds": training["train_seconds"],
        "trunk_params": evaluation["trunk_params"],
        "head_params": evaluation["head_params"],
        "total_params": evaluation["total_params"],
        "model_bytes": evaluation["model_bytes"],
        "inference_images_per_second": evaluation["inference_images_per_second"],
        "predict_images_per_second": evaluation["predict_images_per_second"],
        "test_images": evaluation["test_images"],
        "per_class_f1": {name: round(scores["f1-score"], 4) for name, scores in evaluation["per_class"].items()},
        "runs": accuracy["runs"],
        "saved_run": training["saved_run"],
        **{f"accuracy_{key}": value for key, value in accuracy.items() if key != "runs"},
        **{f"macro_f1_{key}": value for key, value in macro_f1.items() if key != "runs"},
        **{key: round(calibration[key], 4) for key in ("ece", "brier", "log_loss")},
        "reliability": calibration["bins"],
        **({"temperature_scaling": evaluation["temperature_scaling"]} if "temperature_scaling" in evaluation else {}),
    }


def paired_comparison(predictions: dict[str, pd.DataFrame]) -> dict:
    """Flatten vs GAP on the same test images: McNemar's exact p and the paired bootstrap interval of the accuracy difference."""
    flatten, gap = (predictions[head].set_index("path") for head in HEAD_NAMES)
    gap = gap.loc[flatten.index]  # pair each image's two predictions
    correct_flatten = (flatten["actual"] == flatten["predicted"]).to_numpy()
    correct_gap = (gap["actual"] == gap["predicted"]).to_numpy()
    difference, low, high = paired_difference(correct_flatten, correct_gap)
    return {"accuracy_difference": round(difference, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "mcnemar_p": round(mcnemar_p(correct_flatten, correct_gap), 4), "test_images": len(flatten)}


if __name__ == "__main__":
    run_stage(main)
