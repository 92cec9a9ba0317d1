"""What each head gets wrong: confused pairs, highest losses, disagreements, and their grids."""

import pandas as pd

from builders import make_image_folder
from tlpipe.reporting.mistakes import (
    confused_pairs, disagreements, mistakes_markdown, plot_disagreements, plot_top_losses, top_losses,
)


def predictions(paths: list[str], actual: list[str], predicted: list[str], true_probability: list[float]) -> pd.DataFrame:
    probability = [p if a == b else 1 - p for a, b, p in zip(actual, predicted, true_probability)]
    return pd.DataFrame({"path": paths, "actual": actual, "predicted": predicted,
                         "probability": probability, "true_probability": true_probability})


def test_pairs_losses_disagreements_and_their_grids(tmp_path):
    paths = make_image_folder(tmp_path / "raw", {"red": 3, "blue": 3})
    actual = ["red"] * 3 + ["blue"] * 3
    first = predictions(paths, actual, ["blue", "blue", "red", "blue", "blue", "red"], [0.1, 0.3, 0.9, 0.8, 0.7, 0.4])
    second = predictions(paths, actual, ["red", "blue", "red", "blue", "red", "red"], [0.6, 0.2, 0.9, 0.8, 0.3, 0.2])

    assert confused_pairs(first).values.tolist() == [["red", "blue", 2], ["blue", "red", 1]]
    assert top_losses(first, count=2)["path"].tolist() == [paths[0], paths[1]]   # p(true) 0.1, then 0.3
    split = disagreements(first, second)
    assert split["first"]["path"].tolist() == [paths[4]]    # first right, second wrong
    assert split["second"]["path"].tolist() == [paths[0]]

    plot_top_losses(first, tmp_path / "raw", "flatten", tmp_path / "plots/top_losses_flatten.png")
    plot_disagreements({"flatten": first, "gap": second}, tmp_path / "raw", tmp_path / "plots/disagreements.png")
    assert (tmp_path / "plots/top_losses_flatten.png").stat().st_size > 0
    assert (tmp_path / "plots/disagreements.png").stat().st_size > 0
    markdown = "\n".join(mistakes_markdown({"flatten": first, "gap": second}))
    assert "- red → blue: 2" in markdown
    assert "1 test images flatten gets right and gap wrong, 1 the other way" in markdown
