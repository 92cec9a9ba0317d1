"""train.fraction: stratified, nested, stable subsets of the training split, and their cache rows."""

import numpy as np
import pandas as pd

from builders import config_error
from tlpipe.cache import training_rows
from tlpipe.data.splitting import nested_subset


def training_images(per_class: dict[str, int]) -> pd.DataFrame:
    labels = [label for label, count in per_class.items() for _ in range(count)]
    return pd.DataFrame({"label": labels, "sha256": [f"{index:064x}" for index in range(len(labels))]})


def test_subsets_are_stratified_nested_and_stable():
    images = training_images({"a": 40, "b": 20, "c": 7})
    subsets = {fraction: nested_subset(images, fraction, seed=42) for fraction in (0.1, 0.25, 0.5, 1.0)}
    assert images[subsets[0.25]]["label"].value_counts().to_dict() == {"a": 10, "b": 5, "c": 2}  # ceil per class
    assert subsets[1.0].all()
    for smaller, larger in [(0.1, 0.25), (0.25, 0.5), (0.5, 1.0)]:
        assert not (subsets[smaller] & ~subsets[larger]).any(), (smaller, larger)
    assert (nested_subset(images, 0.25, seed=42) == subsets[0.25]).all()
    assert not (nested_subset(images, 0.25, seed=7) == subsets[0.25]).all()  # the seed draws another order


def test_subset_follows_content_not_position():
    images = training_images({"a": 30, "b": 30})
    chosen = set(images[nested_subset(images, 0.5, seed=1)]["sha256"])
    shuffled = images.sample(frac=1, random_state=0).reset_index(drop=True)
    assert set(shuffled[nested_subset(shuffled, 0.5, seed=1)]["sha256"]) == chosen


def test_training_rows_take_every_view_of_the_chosen_images():
    assert training_rows(np.array([0, 3]), count=5, views=2).tolist() == [0, 3, 5, 8, 10, 13]


def test_fraction_is_bounded(tmp_path):
    assert "train.fraction" in config_error(tmp_path, **{"train.fraction": 0})
    assert "train.fraction" in config_error(tmp_path, **{"train.fraction": 1.5})
