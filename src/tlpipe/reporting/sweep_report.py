"""The Markdown and PNG of a parameter sweep (tlpipe.sweep): per head, head parameters and test
accuracy against the swept value, and the trunk pass cost; failed experiments listed as failed.

The closed form checked for an image-size sweep: the Flatten head's parameters grow with the square
of the feature-map side (its first Dense layer sees H·W·C inputs), GAP's stay constant (C inputs).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tlpipe.config import HEAD_NAMES  # noqa: E402
from tlpipe.files import save_atomically, write_text  # noqa: E402
from tlpipe.reporting import fonts  # noqa: E402, F401  (the plots' fonts: class names in any script)


def first_dense_growth(results: list, head: str) -> list[float]:
    """Head parameters above the smallest successful experiment's, per unit of feature-map area
    (side² − side₀²): constant for Flatten (C·hidden₁), zero for GAP, when the closed form holds."""
    done = [result for result in results if result.succeeded]
    base = done[0]
    base_area = _side(base) ** 2
    return [(result.head(head)["head_params"] - base.head(head)["head_params"]) / (_side(result) ** 2 - base_area)
            for result in done[1:] if _side(result) ** 2 != base_area]


def _side(result) -> int:
    return result.features["feature_map"]["height"]


def sweep_markdown(results: list, param: str, png_name: str) -> str:
    lines = [f"# Sweep of `{param}` (DVC experiments)", "",
             f"{sum(r.succeeded for r in results)} of {len(results)} experiments succeeded; "
             "read back through `dvc exp show --json`.", "",
             f"| {param} | experiment | state | feature map | "
             + " | ".join(f"{head} params | {head} test acc. (runs: mean, 95% CI) | {head} train−val acc. | {head} best epoch"
                          for head in HEAD_NAMES)
             + " | trunk s | trunk img/s |",
             "|---" * (4 + 4 * len(HEAD_NAMES) + 2) + "|"]
    for result in results:
        if not result.succeeded:
            lines.append(f"| {result.value} | {result.name} | **{result.state}** |" + " |" * (3 + 4 * len(HEAD_NAMES)))
            continue
        cells = [str(result.value), result.name, result.state,
                 "×".join(str(size) for size in result.features.get("feature_map", {}).values())]
        for head in HEAD_NAMES:
            evaluation, training = result.head(head), result.head_training(head)
            gap = training.get("overfitting_gap")
            cells += [f"{evaluation['head_params']:,}", _accuracy(evaluation, result.head_summary(head)),
                      "" if gap is None else f"{gap:+.3f}", str(training.get("best_epoch", ""))]
        cells += [f"{result.features['seconds']:.1f}", f"{result.features['images_per_second']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if param == "trunk.image_size" and sum(r.succeeded for r in results) >= 2:
        lines += ["", "## Closed form: head parameters against the feature-map side", "",
                  "Parameter increase per unit of feature-map area (side² − smallest side²), between each "
                  "size and the smallest: constant (= channels × first Dense width) for Flatten, 0 for GAP.", ""]
        for head in HEAD_NAMES:
            lines.append(f"- {head}: " + ", ".join(f"{growth:,.1f}" for growth in first_dense_growth(results, head)))
    lines += ["", f"![sweep]({png_name})", ""]
    return "\n".join(lines)


def _accuracy(evaluation: dict, summary: dict) -> str:
    """The saved run's test accuracy and, with train.repeats > 1, the runs' mean and 95% interval."""
    if summary.get("accuracy_std") is None:  # one run: no spread
        return f"{evaluation['accuracy']:.3f}"
    return (f"{evaluation['accuracy']:.3f} (runs {summary['accuracy_mean']:.3f}, "
            f"{summary['accuracy_low']:.3f}–{summary['accuracy_high']:.3f})")


def sweep_figure(results: list, param: str, path: Path) -> None:
    done = [result for result in results if result.succeeded]
    figure, (params_axis, accuracy_axis, trunk_axis) = plt.subplots(1, 3, figsize=(14, 4))
    x = [float(result.value) for result in done]
    if param == "train.fraction":  # the learning curve: against the number of training images
        x = [result.head_training(HEAD_NAMES[0])["train_rows"] for result in done]
    for head in HEAD_NAMES:
        params_axis.plot(x, [result.head(head)["head_params"] for result in done], "o-", label=head)
        accuracy_axis.plot(x, [result.head(head)["accuracy"] for result in done], "o-", label=f"{head} (saved run)")
        spread = [result.head_summary(head) for result in done]
        if all(summary.get("accuracy_std") is not None for summary in spread):  # train.repeats > 1: the runs' 95% interval
            means = [summary["accuracy_mean"] for summary in spread]
            accuracy_axis.errorbar(x, means, fmt="none", capsize=4, color=accuracy_axis.lines[-1].get_color(),
                                   yerr=[[mean - summary["accuracy_low"] for mean, summary in zip(means, spread)],
                                         [summary["accuracy_high"] - mean for mean, summary in zip(means, spread)]])
    trunk_axis.plot(x, [result.features["seconds"] for result in done], "o-", color="gray")
    xlabel = "training images" if param == "train.fraction" else param
    params_axis.set(yscale="log", xlabel=xlabel, ylabel="head parameters")
    accuracy_axis.set(xlabel=xlabel, ylabel="test accuracy (bars: 95% CI over the runs)")
    trunk_axis.set(xlabel=xlabel, ylabel="trunk pass (s)")
    for axis in (params_axis, accuracy_axis):
        axis.legend()
    failed = [str(result.value) for result in results if not result.succeeded]
    figure.suptitle(f"Sweep of {param}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    figure.tight_layout()
    save_atomically(path, lambda partial: figure.savefig(partial, dpi=100))
    plt.close(figure)


def write_sweep_report(results: list, param: str, markdown_path: Path) -> None:
    png = markdown_path.parent / "plots" / f"{markdown_path.stem}.png"
    sweep_figure(results, param, png)
    write_text(markdown_path, sweep_markdown(results, param, f"plots/{png.name}"))
