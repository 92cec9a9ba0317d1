"""The split manifest (data/split/manifest.csv): one row per image, its class and its split."""

import numpy as np
import pandas as pd

from tlpipe.config import MANIFEST
from tlpipe.errors import UserError
from tlpipe.files import write_text

SPLITS = ("train", "val", "test")
COLUMNS = ["path", "label", "split", "sha256"]


def write_manifest(manifest: pd.DataFrame) -> None:
    write_text(MANIFEST, manifest[COLUMNS].to_csv(index=False))


def read_manifest() -> pd.DataFrame:
    if not MANIFEST.is_file():
        raise UserError(f"{MANIFEST}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(MANIFEST, keep_default_na=False)


def class_names(manifest: pd.DataFrame) -> list[str]:
    """The classes in output order: a class's index is its label's place in sorted order."""
    return sorted(manifest["label"].unique())


def split_rows(manifest: pd.DataFrame, split: str, classes: list[str]) -> tuple[pd.Series, np.ndarray]:
    """A split's image paths and int32 class indices, in manifest order."""
    rows = manifest[manifest["split"] == split]
    return rows["path"], rows["label"].map(classes.index).to_numpy(np.int32)
