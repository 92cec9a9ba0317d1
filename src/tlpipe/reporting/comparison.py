"""reports/comparison.md: the two heads side by side, with a one-line verdict at the top,
and each metric's change against a baseline (tlpipe.reporting.baseline)."""

from tlpipe.config import HEAD_NAMES, Config
from tlpipe.stats import ECE_BINS, NOISE_RULE, noise_margin, verdict_line

TITLES = {"flatten": "Flatten", "gap": "GAP"}


def _augmentation(config: Config, features: dict) -> str:
    if not features["augment_views"]:
        return "none (`augment.views: 0`)"
    layers = ", ".join(layer.name for layer in config.augment.layers)
    return f"{features['augment_views']} cached views of each training image ({layers}; seed {config.augment.seed})"


def accuracy_margin(now: dict, before: dict) -> float:
    """NOISE_RULE's margin for the accuracy difference between two heads' figures."""
    return noise_margin(now["accuracy"], now.get("accuracy_std"), now["test_images"],
                        before["accuracy"], before.get("accuracy_std"), before["test_images"])


def verdict(metrics: dict, paired: dict) -> str:
    """What the paired comparison of the two heads supports (tlpipe.stats.verdict_line)."""
    flatten, gap = metrics["flatten"], metrics["gap"]
    return verdict_line(
        flatten["accuracy"], gap["accuracy"], (paired["ci_low"], paired["ci_high"]), paired["mcnemar_p"],
        accuracy_margin(flatten, gap), paired["test_images"], flatten["head_params"] / gap["head_params"],
    )


def _spread(head: dict, key: str, show) -> str:
    if head[f"{key}_std"] is None:
        return "one run"
    return f"{show(head[f'{key}_mean'])} ± {show(head[f'{key}_std'])} ({show(head[f'{key}_low'])} to {show(head[f'{key}_high'])})"


# The comparison's tables: for each section, rows of (label, how to show one head's value).
TABLES = {
    "Quality (test split)": [
        ("accuracy", lambda head: f"{head['accuracy']:.1%}"),
        ("macro-F1", lambda head: f"{head['macro_f1']:.3f}"),
        ("best validation accuracy (epoch)", lambda head: f"{head['best_val_accuracy']:.1%} ({head['best_epoch']})"),
        ("saved run (median validation loss)", lambda head: f"{head['saved_run']} of {head['runs']}"),
        ("accuracy over the runs: mean ± std (95% t-interval)", lambda head: _spread(head, "accuracy", lambda v: f"{v:.1%}")),
        ("macro-F1 over the runs: mean ± std (95% t-interval)", lambda head: _spread(head, "macro_f1", lambda v: f"{v:.3f}")),
    ],
    f"Calibration (test split; ECE over {ECE_BINS} equal-width bins of the top-class probability)": [
        ("expected calibration error", lambda head: f"{head['ece']:.3f}"),
        ("Brier score (summed over classes)", lambda head: f"{head['brier']:.3f}"),
        ("log loss", lambda head: f"{head['log_loss']:.3f}"),
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
        ("head training, all runs (wall time)", lambda head: f"{head['train_seconds']:.1f} s ({head['runs']} runs)"),
        ("epochs run by the saved run (early stopping)", lambda head: f"{head['epochs_run']}"),
        ("inference, full model (img/s)", lambda head: f"{head['inference_images_per_second']:.1f}"),
        ("`tlpipe predict`, image files to classes, decoding included (img/s)",
         lambda head: f"{head['predict_images_per_second']:.1f}"),
    ],
}


# Metrics compared with the baseline: (key, label, how to show a value, how to show a change, judged by NOISE_RULE).
CHANGES = [
    ("accuracy", "accuracy", lambda value: f"{value:.1%}", lambda change: f"{change * 100:+.1f} pts", True),
    ("macro_f1", "macro-F1", lambda value: f"{value:.3f}", lambda change: f"{change:+.3f}", True),
    ("head_params", "head parameters", lambda value: f"{value:,}", lambda change: f"{change:+,}", False),
    ("total_params", "total parameters", lambda value: f"{value:,}", lambda change: f"{change:+,}", False),
]


def _noise_mark(key: str, now: dict, then: dict, change: float, show_change) -> str:
    margin = noise_margin(now[key], now.get(f"{key}_std"), now["test_images"], then[key], then.get(f"{key}_std"), then["test_images"])
    return f" ({'beyond' if abs(change) > margin else 'within'} ±{show_change(margin).lstrip('+')})"


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _dataset_difference(now: dict, then: dict) -> str | None:
    """How the baseline's dataset differs from this run's (tlpipe.reporting.baseline.measured_on), if it does."""
    if now["dataset"]["content_sha256"] == then["dataset"]["content_sha256"]:
        return None
    url = then["dataset"]["url"]
    return f"another dataset (`{url}`)" if url != now["dataset"]["url"] else f"another version of `{url}`"


def _differences(now: dict, then: dict, test_images_now: int, test_images_then: int) -> list[str]:
    """What makes the baseline's figures not comparable: other classes or another test split
    (with the dataset difference behind them, if any). Other training data alone is comparable."""
    differences = []
    if now["classes"] != then["classes"]:
        if len(now["classes"]) != len(then["classes"]):
            differences.append(f"other classes ({len(then['classes'])} vs {len(now['classes'])})")
        else:
            then_only = sorted(set(then["classes"]) - set(now["classes"]))
            now_only = sorted(set(now["classes"]) - set(then["classes"]))
            differences.append(f"other classes ({', '.join(then_only)} instead of {', '.join(now_only)})")
    if now["test_split_sha256"] != then["test_split_sha256"]:
        differences.append(f"another test split ({test_images_then} test images then, {test_images_now} now)")
    dataset = _dataset_difference(now, then)
    return [dataset, *differences] if differences and dataset else differences


def _trunk(trunk: dict) -> str:
    return f"{trunk['name']} at {trunk['image_size']} px"


def changes_markdown(metrics: dict, measured_on: dict, revision: str, baseline: tuple[str, dict] | None) -> list[str]:
    """For each head and metric: the value now, the baseline's, and the change, quality changes
    marked within or beyond the noise (NOISE_RULE); no changes where the baseline measured
    something else (its classes or test split differ, or it does not say)."""
    if baseline is None:
        return [f"No baseline: `{revision}` has no committed `reports/metrics.json`."]
    commit, before = baseline
    then = before.get("measured_on")
    if then is None:
        return [f"Against `{revision}` (commit `{commit}`): its `reports/metrics.json` does not record what it was measured on "
                "(dataset, classes, test split), so it cannot be compared: no deltas shown."]
    first = HEAD_NAMES[0]  # both heads are evaluated on the same test split
    differences = _differences(measured_on, then, metrics[first]["test_images"], before[first]["test_images"])
    if differences:
        return [f"Against `{revision}` (commit `{commit}`): the baseline was measured on {_listed(differences)}: no deltas shown."]
    # Another trunk, or other training data on the same test split, is an experiment the deltas measure; the line says so.
    context = "" if then["trunk"] == measured_on["trunk"] else f"; trunk {_trunk(then['trunk'])} then, {_trunk(measured_on['trunk'])} now"
    dataset = _dataset_difference(measured_on, then)
    context += f"; the baseline trained on {dataset}, tested on the same test split" if dataset else ""
    header = "| metric | " + " | ".join(f"{TITLES[head]} | baseline | change" for head in HEAD_NAMES) + " |"
    lines = [f"Against `{revision}` (commit `{commit}`{context}). {NOISE_RULE} Timings: `reports/cost.json` and the Cost table.",
             "", header, "|---|" + "---:|---:|---:|" * len(HEAD_NAMES)]
    for key, label, show, show_change, judged in CHANGES:
        cells = []
        for head in HEAD_NAMES:
            now, then = metrics[head], before.get(head, {})
            if then.get(key) is None:
                cells += [show(now[key]), "–", "–"]
                continue
            change = now[key] - then[key]
            cells += [show(now[key]), show(then[key]), show_change(change) + (_noise_mark(key, now, then, change, show_change) if judged else "")]
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


def calibration_sentence(metrics: dict) -> str:
    """Which head is better calibrated (lower ECE), and what temperature scaling changes where it ran."""
    flatten, gap = metrics["flatten"], metrics["gap"]
    better = "Flatten" if flatten["ece"] < gap["ece"] else "GAP"
    sentence = f"{better} is the better calibrated head (ECE {min(flatten['ece'], gap['ece']):.3f} vs {max(flatten['ece'], gap['ece']):.3f})."
    for head in HEAD_NAMES:
        scaling = metrics[head].get("temperature_scaling")
        if scaling:
            sentence += (f" {TITLES[head]}, temperature {scaling['temperature']:.2f} fitted on validation: "
                         f"ECE {metrics[head]['ece']:.3f} → {scaling['ece']:.3f}.")
    return sentence


def comparison_markdown(config: Config, features: dict, metrics: dict, measured_on: dict, paired: dict, revision: str, baseline,
                        finetuned: dict) -> str:
    heads = [metrics[head] for head in HEAD_NAMES]
    trunk, sizes = config.trunk, features["split_sizes"]
    shape = "×".join(str(size) for size in features["feature_shape"])
    lines = [
        f"# Flatten vs GAP head on a frozen {trunk.name} trunk",
        "",
        f"**{verdict(metrics, paired)}**",
        "",
        f"{NOISE_RULE} The verdict says significant only when McNemar's exact test on the saved models gives p < 0.05 "
        f"and the difference is beyond that noise.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| dataset | `{config.dataset.url}` (sha256 `{config.dataset.sha256[:12] or 'not pinned'}`), {len(features['classes'])} classes |",
        f"| images | {sizes['train']:,} train / {sizes['val']:,} validation / {sizes['test']:,} test |",
        f"| trunk | {trunk.name}, weights `{trunk.weights}`, output `{trunk.output_layer or 'last layer'}`, "
        f"{trunk.image_size}×{trunk.image_size} px → feature map {shape} |",
        f"| trunk pass (once, shared by both heads) | {features['trunk_images']:,} images in {features['seconds']:.1f} s "
        f"({features['images_per_second']:.1f} img/s) on {features['device']} |",
        f"| trunk precision | {_precision(features)} |",
        f"| augmentation | {_augmentation(config, features)} |",
        "",
        "## Change against the baseline",
        "",
        *changes_markdown(metrics, measured_on, revision, baseline),
        "",
        "Data: [data report](data.md).",
    ]
    for section, rows in TABLES.items():
        lines += ["", f"## {section}", "", *markdown_table([(label, [show(head) for head in heads]) for label, show in rows])]
    lines += ["", calibration_sentence(metrics), "", "![reliability diagram](plots/reliability.png)"]
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
        f"Models: `models/<head>.keras` (`keras.models.load_model`), input {trunk.image_size}×{trunk.image_size} RGB images, "
        f"0-255 (the trunk's preprocessing is inside the model); class names in `models/<head>.labels.txt`; `tlpipe predict`.",
        "",
    ]
    return "\n".join(lines)


def _precision(features: dict) -> str:
    """The trunk's dtype policy; with `auto`, the trial timings it was chosen by: a change of machine can change it."""
    chosen = f"`{features['precision']}`"
    if features["precision_setting"] != "auto":
        return chosen
    trials = ", ".join(f"{policy} {seconds * 1000:.0f} ms" for policy, seconds in features["precision_trials"].items())
    return f"{chosen}, chosen by `trunk.precision: auto` (one batch: {trials})"
