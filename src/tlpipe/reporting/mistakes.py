"""What each head gets wrong, from reports/eval/<head>/predictions.csv (path, actual, predicted,
probability of the prediction, probability of the true class): the most confused class pairs,
a grid of the test images with the highest loss (as fastai's plot_top_losses), and where the two
heads disagree, counts each way with a grid of examples."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: files only, no display or global state

from tlpipe.data.images import open_rgb
from tlpipe.reporting.plots import save_png

TOP_PAIRS = 5
GRID_IMAGES = 9


def confused_pairs(predictions: pd.DataFrame, top: int = TOP_PAIRS) -> pd.DataFrame:
    """The `top` (actual, predicted) pairs of wrong predictions, most frequent first."""
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    counts = wrong.groupby(["actual", "predicted"]).size().rename("count").reset_index()
    return counts.sort_values(["count", "actual", "predicted"], ascending=[False, True, True]).head(top)


def top_losses(predictions: pd.DataFrame, count: int = GRID_IMAGES) -> pd.DataFrame:
    """The `count` test images with the highest cross-entropy loss, -log p(true class)."""
    loss = -np.log(np.clip(predictions["true_probability"], 1e-12, 1))
    return predictions.assign(loss=loss).sort_values("loss", ascending=False).head(count)


def disagreements(first: pd.DataFrame, second: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Test images the first head gets right and the second wrong, and the other way round (same rows)."""
    right_first = (first["predicted"] == first["actual"]).to_numpy()
    right_second = (second["predicted"] == second["actual"]).to_numpy()
    return {"first": first[right_first & ~right_second], "second": second[right_second & ~right_first]}


def plot_image_grid(rows: pd.DataFrame, raw_dir: Path, captions: list[str], title: str, path: Path) -> None:
    columns = min(3, max(len(rows), 1))
    lines = max(math.ceil(len(rows) / columns), 1)
    figure = Figure(figsize=(3 * columns, 3.2 * lines))
    axes = figure.subplots(lines, columns, squeeze=False)
    for axis in axes.flat:
        # No ticks, as well as no axis: matplotlib places an axis' ticks even when it is off, to fit the title.
        axis.set(xticks=[], yticks=[])
        axis.axis("off")
    for axis, image_path, caption in zip(axes.flat, rows["path"], captions):
        axis.imshow(open_rgb(raw_dir / image_path))
        axis.set_title(caption, fontsize=8)
    figure.suptitle(title)
    save_png(figure, path)


def plot_top_losses(predictions: pd.DataFrame, raw_dir: Path, head: str, path: Path) -> None:
    rows = top_losses(predictions)
    captions = [f"{row.predicted} / {row.actual}\nloss {row.loss:.2f}, p {row.probability:.2f}" for row in rows.itertuples()]
    plot_image_grid(rows, raw_dir, captions, f"{head}: highest test loss (predicted / actual, p of predicted)", path)


def plot_disagreements(heads: dict[str, pd.DataFrame], raw_dir: Path, path: Path) -> None:
    (first_name, first), (second_name, second) = heads.items()
    split = disagreements(first, second)
    per_way = GRID_IMAGES // 2 + 1
    ways = [(first_name, split["first"].head(per_way), second_name, second),
            (second_name, split["second"].head(per_way), first_name, first)]
    captions = []
    for right_name, rows_right, wrong_name, wrong in ways:
        wrong_predicted = wrong.set_index("path")["predicted"]
        captions += [f"{right_name} right: {row.actual}\n{wrong_name}: {wrong_predicted[row.path]}"
                     for row in rows_right.itertuples()]
    rows = pd.concat([rows_right for _, rows_right, _, _ in ways])
    plot_image_grid(rows, raw_dir, captions, f"Where {first_name} and {second_name} disagree", path)


def mistakes_markdown(heads: dict[str, pd.DataFrame]) -> list[str]:
    """comparison.md's section on what each head gets wrong (the plots are in reports/plots/)."""
    (first_name, first), (second_name, second) = heads.items()
    lines = ["## What each head gets wrong", ""]
    for head, predictions in heads.items():
        pairs = confused_pairs(predictions)
        lines += [f"**{head}**: most confused pairs (actual → predicted, test images)", "",
                  *[f"- {row.actual} → {row.predicted}: {row.count}" for row in pairs.itertuples()], "",
                  f"![{head} highest-loss test images](plots/top_losses_{head}.png)", ""]
    split = disagreements(first, second)
    lines += [f"Where the heads disagree: {len(split['first'])} test images {first_name} gets right and "
              f"{second_name} wrong, {len(split['second'])} the other way.", "",
              "![where the heads disagree](plots/disagreements.png)", ""]
    return lines
