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
from matplotlib.figure import Figure  # no pyplot: files only, no display or global state

from tlpipe.baseline import committed_metrics, resolve_revision
from tlpipe.config import EVAL_REPORTS_DIR, FINETUNE_REPORTS_DIR, HEAD_NAMES, PLOTS_DIR, REPORTS_DIR, TRAIN_REPORTS_DIR, Config, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.files import save_atomically, write_json, write_text

TITLES = {"flatten": "Flatten", "gap": "GAP"}
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
    write_text(REPORTS_DIR / "comparison.md", comparison_markdown(config, features, metrics, revision, baseline, finetuned))
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


def _history(head: str, split: str, metric: str) -> pd.DataFrame:
    """A per-epoch curve logged by DVCLive (split 'train' or 'eval')."""
    return pd.read_csv(TRAIN_REPORTS_DIR / head / "plots" / "metrics" / split / f"{metric}.tsv", sep="\t")


def plot_training_curves(path: Path) -> None:
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for head, color in zip(HEAD_NAMES, ("tab:blue", "tab:orange")):
            for split, style in (("train", "--"), ("eval", "-")):
                curve = _history(head, split, metric)
                label = f"{TITLES[head]} {'validation' if split == 'eval' else 'train'}"
                axis.plot(curve["step"] + 1, curve[metric], style, color=color, label=label)
        axis.set(title=metric, xlabel="epoch")
        axis.grid(alpha=0.3)
    axes[1].legend()
    _save(figure, path)


def plot_confusion_matrix(head: str, path: Path) -> None:
    matrix = pd.read_csv(EVAL_REPORTS_DIR / head / "confusion_matrix.csv", index_col=0)
    size = max(4.0, 0.5 * len(matrix) + 2)
    figure = Figure(figsize=(size + 1, size))
    axis = figure.subplots()
    image = axis.imshow(matrix.to_numpy(), cmap="Blues")
    axis.set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right")
    axis.set_yticks(range(len(matrix)), matrix.index)
    axis.set(xlabel="predicted", ylabel="actual", title=f"{TITLES[head]} head: test confusion matrix")
    threshold = matrix.to_numpy().max() / 2
    for (row, column), count in pd.DataFrame(matrix.to_numpy()).stack().items():
        axis.text(column, row, count, ha="center", va="center", color="white" if count > threshold else "black", fontsize=8)
    figure.colorbar(image, ax=axis)
    _save(figure, path)


def plot_params_vs_accuracy(metrics: dict, path: Path) -> None:
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for head, color in zip(HEAD_NAMES, ("tab:blue", "tab:orange")):
        axis.scatter(metrics[head]["head_params"], metrics[head]["accuracy"], s=80, color=color, label=TITLES[head])
        axis.annotate(f"{metrics[head]['head_params']:,}", (metrics[head]["head_params"], metrics[head]["accuracy"]),
                      textcoords="offset points", xytext=(8, -4))
    axis.set(xscale="log", xlabel="trained head parameters (log)", ylabel="test accuracy", title="Head size vs accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    save_atomically(path, lambda partial: figure.savefig(partial, dpi=100))


def _augmentation(config: Config, features: dict) -> str:
    if not features["augment_views"]:
        return "none (`augment.views: 0`)"
    layers = ", ".join(layer.name for layer in config.augment.layers)
    return f"{features['augment_views']} cached views of each training image ({layers}; seed {config.augment.seed})"


def verdict(metrics: dict) -> str:
    """Which head wins on accuracy, and at what parameter cost."""
    flatten, gap = metrics["flatten"], metrics["gap"]
    ratio = flatten["head_params"] / gap["head_params"]
    sizes = f"{flatten['head_params']:,} vs {gap['head_params']:,} head parameters ({ratio:,.1f}x)"
    difference = flatten["accuracy"] - gap["accuracy"]
    if abs(difference) < 0.005:
        return f"Flatten and GAP tie on test accuracy ({flatten['accuracy']:.1%}); Flatten pays {sizes}."
    winner, loser = ("Flatten", "GAP") if difference > 0 else ("GAP", "Flatten")
    return (f"{winner} wins on test accuracy by {abs(difference) * 100:.1f} points "
            f"({max(flatten['accuracy'], gap['accuracy']):.1%} vs {min(flatten['accuracy'], gap['accuracy']):.1%} for {loser}); "
            f"Flatten vs GAP: {sizes}.")


# The comparison's tables: for each section, rows of (label, how to show one head's value).
TABLES = {
    "Quality (test split)": [
        ("accuracy", lambda head: f"{head['accuracy']:.1%}"),
        ("macro-F1", lambda head: f"{head['macro_f1']:.3f}"),
        ("best validation accuracy (epoch)", lambda head: f"{head['best_val_accuracy']:.1%} ({head['best_epoch']})"),
    ],
    "Size": [
        ("trunk parameters (frozen)", lambda head: f"{head['trunk_params']:,}"),
        ("head parameters (trained)", lambda head: f"{head['head_params']:,}"),
        ("total parameters", lambda head: f"{head['total_params']:,}"),
        ("model file", lambda head: f"{head['model_bytes'] / 2**20:.1f} MiB"),
    ],
    "Cost": [
        ("head training (wall time)", lambda head: f"{head['train_seconds']:.1f} s"),
        ("epochs run (early stopping)", lambda head: f"{head['epochs_run']}"),
        ("time per epoch", lambda head: f"{head['train_seconds'] / head['epochs_run']:.2f} s"),
        ("inference, full model (img/s)", lambda head: f"{head['inference_images_per_second']:.1f}"),
    ],
}


# Metrics compared with the baseline: (key, label, how to show a value, how to show a change).
CHANGES = [
    ("accuracy", "accuracy", lambda value: f"{value:.1%}", lambda change: f"{change * 100:+.1f} pts"),
    ("macro_f1", "macro-F1", lambda value: f"{value:.3f}", lambda change: f"{change:+.3f}"),
    ("head_params", "head parameters", lambda value: f"{value:,}", lambda change: f"{change:+,}"),
    ("total_params", "total parameters", lambda value: f"{value:,}", lambda change: f"{change:+,}"),
    ("train_seconds", "head training", lambda value: f"{value:.1f} s", lambda change: f"{change:+.1f} s"),
    ("inference_images_per_second", "inference img/s", lambda value: f"{value:.1f}", lambda change: f"{change:+.1f}"),
]


def changes_markdown(metrics: dict, revision: str, baseline: tuple[str, dict] | None) -> list[str]:
    """For each head and metric: the value now, the baseline's, and the change."""
    if baseline is None:
        return [f"No baseline: `{revision}` has no committed `reports/metrics.json`."]
    commit, before = baseline
    header = "| metric | " + " | ".join(f"{TITLES[head]} | baseline | change" for head in HEAD_NAMES) + " |"
    lines = [f"Against `{revision}` (commit `{commit}`).", "", header, "|---|" + "---:|---:|---:|" * len(HEAD_NAMES)]
    for key, label, show, show_change in CHANGES:
        cells = []
        for head in HEAD_NAMES:
            now, then = metrics[head][key], before.get(head, {}).get(key)
            cells += [show(now), "–", "–"] if then is None else [show(now), show(then), show_change(now - then)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def finetune_markdown(config: Config, metrics: dict, finetuned: dict) -> list[str]:
    """Each head frozen (trunk fixed) and after fine-tuning the top of the trunk, side by side."""
    if not any(result["enabled"] for result in finetuned.values()):
        return ["Off (`finetune.epochs: 0`): the models are the frozen-trunk ones above."]
    header = "| | " + " | ".join(f"{TITLES[head]} frozen | {TITLES[head]} fine-tuned" for head in HEAD_NAMES) + " |"
    rows = [
        ("accuracy", "accuracy", lambda value: f"{value:.1%}"),
        ("macro-F1", "macro_f1", lambda value: f"{value:.3f}"),
        ("trainable parameters", None, None),
        ("wall time", "train_seconds", lambda value: f"{value:.1f} s"),
        ("epochs run", "epochs_run", str),
    ]
    lines = [
        f"Trunk layers from `{next(result['first_unfrozen_layer'] for result in finetuned.values())}` up unfrozen, "
        f"learning rate {config.finetune.learning_rate:g}, augmentation {'on' if config.finetune.augment else 'off'}; "
        "BatchNormalization layers stay frozen.",
        "",
        header,
        "|---|" + "---:|---:|" * len(HEAD_NAMES),
    ]
    for label, key, show in rows:
        cells = []
        for head in HEAD_NAMES:
            frozen, tuned = metrics[head], finetuned[head]
            if key is None:
                cells += [f"{frozen['head_params']:,}", f"{tuned['trainable_params']:,}"]
            else:
                cells += [show(frozen[key]), show(tuned[key])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(rows: list[tuple[str, list[str]]]) -> list[str]:
    """A table with one column per head; rows are (label, one value per head)."""
    lines = ["| | " + " | ".join(TITLES[head] for head in HEAD_NAMES) + " |", "|---|" + "---:|" * len(HEAD_NAMES)]
    return lines + [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]


def comparison_markdown(config: Config, features: dict, metrics: dict, revision: str, baseline, finetuned: dict) -> str:
    heads = [metrics[head] for head in HEAD_NAMES]
    trunk, sizes = config.trunk, features["split_sizes"]
    shape = "×".join(str(size) for size in features["feature_shape"])
    lines = [
        f"# Flatten vs GAP head on a frozen {trunk.name} trunk",
        "",
        f"**{verdict(metrics)}**",
        "",
        "| setting | value |",
        "|---|---|",
        f"| dataset | `{config.dataset.url}` (sha256 `{config.dataset.sha256[:12] or 'not pinned'}`), {len(features['classes'])} classes |",
        f"| images | {sizes['train']:,} train / {sizes['val']:,} validation / {sizes['test']:,} test |",
        f"| trunk | {trunk.name}, weights `{trunk.weights}`, output `{trunk.output_layer or 'last layer'}`, "
        f"{trunk.image_size}×{trunk.image_size} px → feature map {shape} |",
        f"| trunk pass (once, shared by both heads) | {features['trunk_images']:,} images in {features['seconds']:.1f} s "
        f"({features['images_per_second']:.1f} img/s) on {features['device']} |",
        f"| augmentation | {_augmentation(config, features)} |",
        "",
        "## Change against the baseline",
        "",
        *changes_markdown(metrics, revision, baseline),
        "",
        "Data: [data report](data.md).",
    ]
    for section, rows in TABLES.items():
        lines += ["", f"## {section}", "", *markdown_table([(label, [show(head) for head in heads]) for label, show in rows])]
    lines += ["", "## Fine-tuning", "", *finetune_markdown(config, metrics, finetuned)]
    per_class = [(name, [f"{head['per_class_f1'][name]:.3f}" for head in heads]) for name in features["classes"]]
    lines += ["", "## F1 per class", "", *markdown_table(per_class)]
    lines += [
        "",
        "## Plots",
        "",
        "![training curves](plots/training_curves.png)",
        "",
        "![parameters vs accuracy](plots/params_vs_accuracy.png)",
        "",
        *[f"![{TITLES[head]} confusion matrix](plots/confusion_{head}.png)" for head in HEAD_NAMES],
        "",
        f"Models: `models/<head>.keras` (`keras.models.load_model`), input {trunk.image_size}×{trunk.image_size} RGB images "
        f"passed through `keras.applications.{trunk.name}.preprocess_input`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_stage(main)
