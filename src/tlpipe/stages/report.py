"""Stage `report`: the two heads side by side, for a reviewer reading a pull request.

Reads what the features, train and finetune stages wrote under reports/ and writes
  reports/metrics.json     keyed by head: quality, parameters, size and cost
  reports/comparison.md    tables and plots, with a one-line verdict at the top
  reports/plots/*.png      training curves, confusion matrices, parameters vs accuracy
  reports/heads.csv        one row per head (parameters, accuracy): DVC's scatter plot

When a baseline exists (report.baseline), comparison.md also shows each metric's
change against the reports/metrics.json committed at that git revision.
"""

import json
from pathlib import Path

import pandas as pd

from tlpipe.config import RAW_DIR, ROBUSTNESS_REPORT, EVAL_REPORTS_DIR, FINETUNE_REPORTS_DIR, HEAD_NAMES, PLOTS_DIR, REPORTS_DIR, TRAIN_REPORTS_DIR, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.files import write_json, write_text
from tlpipe.reporting.baseline import committed_metrics, resolve_revision
from tlpipe.reporting.comparison import comparison_markdown, verdict
from tlpipe.reporting.mistakes import mistakes_markdown, plot_disagreements, plot_top_losses
from tlpipe.reporting.robustness import robustness_markdown
from tlpipe.reporting.plots import plot_confusion_matrix, plot_params_vs_accuracy, plot_training_curves

PLOTTED = ("head_params", "total_params", "accuracy", "macro_f1")


def main() -> None:
    config = load_config()
    features = _read_json(REPORTS_DIR / "features.json")
    metrics = {head: head_metrics(head) for head in HEAD_NAMES}
    revision = resolve_revision(config.report.baseline)
    baseline = committed_metrics(revision)
    write_json(REPORTS_DIR / "metrics.json", metrics)
    heads = pd.DataFrame([{"head": head, **{key: metrics[head][key] for key in PLOTTED}} for head in HEAD_NAMES])
    write_text(REPORTS_DIR / "heads.csv", heads.to_csv(index=False))
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    plot_training_curves(PLOTS_DIR / "training_curves.png")
    for head in HEAD_NAMES:
        plot_confusion_matrix(head, PLOTS_DIR / f"confusion_{head}.png")
    plot_params_vs_accuracy(metrics, PLOTS_DIR / "params_vs_accuracy.png")
    finetuned = {head: _read_json(FINETUNE_REPORTS_DIR / head / "metrics.json") for head in HEAD_NAMES}
    predictions = {head: pd.read_csv(EVAL_REPORTS_DIR / head / "predictions.csv") for head in HEAD_NAMES}
    for head in HEAD_NAMES:
        plot_top_losses(predictions[head], RAW_DIR, head, PLOTS_DIR / f"top_losses_{head}.png")
    plot_disagreements(predictions, RAW_DIR, PLOTS_DIR / "disagreements.png")
    comparison = comparison_markdown(config, features, metrics, revision, baseline, finetuned)
    sections = [*robustness_markdown(_read_json(ROBUSTNESS_REPORT)), *mistakes_markdown(predictions)]
    write_text(REPORTS_DIR / "comparison.md", "\n".join([comparison, *sections]))
    print(f"report: {verdict(metrics)}")
    print(f"report: baseline {revision}: " + (f"commit {baseline[0]}" if baseline else "none (no committed reports/metrics.json)"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: missing; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def head_metrics(head: str) -> dict:
    """One head's figures from its training and evaluation outputs, flat, for reports/metrics.json."""
    training = _read_json(TRAIN_REPORTS_DIR / head / "metrics.json")
    evaluation = _read_json(EVAL_REPORTS_DIR / head / "metrics.json")
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
        "test_images": evaluation["test_images"],
        "per_class_f1": {name: round(scores["f1-score"], 4) for name, scores in evaluation["per_class"].items()},
    }


if __name__ == "__main__":
    run_stage(main)
