"""reports/comparison.md: the two heads side by side, with a one-line verdict at the top,
and each metric's change against a baseline (tlpipe.reporting.baseline)."""

from tlpipe.config import HEAD_NAMES, Config

TITLES = {"flatten": "Flatten", "gap": "GAP"}


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
        ("overfitting gap: train − val accuracy at the best epoch (epochs to it)",
         lambda head: f"{head['overfitting_gap'] * 100:+.1f} pts ({head['best_epoch']})"),
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
