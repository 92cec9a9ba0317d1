"""The comparison's PNG plots: training curves, confusion matrices, parameters vs accuracy, reliability diagram."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: files only, no display or global state

from tlpipe.config import EVAL_REPORTS_DIR, HEAD_NAMES, TRAIN_REPORTS_DIR
from tlpipe.files import save_atomically
from tlpipe.reporting import fonts  # noqa: F401  (the plots' fonts: class names in any script)
from tlpipe.reporting.comparison import TITLES


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
    save_png(figure, path)


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
    save_png(figure, path)


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
    save_png(figure, path)


def plot_reliability(metrics: dict, path: Path) -> None:
    """Accuracy against confidence per bin of the top-class probability, both heads: the diagonal is perfect calibration."""
    figure = Figure(figsize=(5, 5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    for head, color in zip(HEAD_NAMES, ("tab:blue", "tab:orange")):
        bins = metrics[head]["reliability"]
        axis.plot(bins["confidence"], bins["accuracy"], "o-", color=color, label=f"{TITLES[head]} (ECE {metrics[head]['ece']:.3f})")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-class probability)", ylabel="accuracy",
             title="Reliability diagram (test split)")
    axis.grid(alpha=0.3)
    axis.legend()
    save_png(figure, path)


def save_png(figure: Figure, path: Path) -> None:
    """Lay the figure out tight and write it, at 100 dpi."""
    figure.tight_layout()
    # tight_layout leaves a placeholder layout engine set, for which savefig lays the whole figure out
    # once more (every text measured again) before it draws: the same pixels without it.
    figure.set_layout_engine(None)
    save_atomically(path, lambda partial: figure.savefig(partial, dpi=100))
