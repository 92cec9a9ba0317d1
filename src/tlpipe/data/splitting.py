"""How the split stage reads data/raw/ and splits it.

Each class is a top-level folder; images in nested folders count for the class
folder they sit in. Hidden entries and files beside the class folders are left out and
listed with their reason (tlpipe.data.layout); they do not count toward
split.max_skipped_fraction. Every other file is decoded, so a file that is not a readable image
is skipped with its reason, whatever its extension; so is an image of more than
dataset.max_pixels pixels (a decompression bomb), judged from its header.

An image's split is decided by a hash of its content and the seed, as in
TensorFlow's retrain.py: identical files always land in the same split (no
leakage), and adding images never moves existing ones between splits.
Identical files (same bytes) in one class are duplicates; in different classes,
label conflicts.
"""

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tlpipe.config import DATA_REPORT, RAW_DIR, SplitConfig
from tlpipe.data.images import TooManyPixels, decode_rgb
from tlpipe.data.layout import left_out_reason, top_level
from tlpipe.data.manifest import SPLITS
from tlpipe.errors import UserError
from tlpipe.files import sha256_of

FILE_COLUMNS = ["path", "action", "reason"]
ACTIONS = ("skipped", "converted", "duplicate", "label_conflict")



def class_folders(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """The class folders of root, sorted, and its other entries with the reason each is left out."""
    if not root.is_dir():
        raise UserError(f"{root}: missing; run the fetch stage first (dvc repro fetch)")
    class_dirs, left_out = top_level(root)
    if len(class_dirs) < 2:
        raise UserError(f"{root}: found {len(class_dirs)} class folder(s); an image-folder dataset needs at least 2")
    return class_dirs, left_out


def scan(root: Path, max_pixels: int) -> tuple[pd.DataFrame, list[dict]]:
    """Every readable image in root's class folders (path, label, sha256, width, height), and a row
    (path, action, reason) for each file under root left out, skipped or converted; paths relative to root."""
    images, outcomes = [], []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root)
        name = relative.as_posix()
        left_out = left_out_reason(relative, is_dir=False)
        if left_out is not None:
            outcomes.append(_outcome(name, "skipped", left_out))
            continue
        try:
            image, conversions = decode_rgb(path, max_pixels)
        except Exception as error:  # Pillow raises many types for unreadable files
            outcomes.append(_outcome(name, "skipped", _skip_reason(error)))
            continue
        if conversions:
            outcomes.append(_outcome(name, "converted", "; ".join(conversions)))
        width, height = image.size
        images.append({"path": name, "label": relative.parts[0], "sha256": sha256_of(path), "width": width, "height": height})
    return pd.DataFrame(images, columns=["path", "label", "sha256", "width", "height"]), outcomes


def _outcome(path: str, action: str, reason: str) -> dict:
    return {"path": path, "action": action, "reason": reason}


def _skip_reason(error: Exception) -> str:
    if isinstance(error, TooManyPixels):
        width, height = error.size
        return f"decompression bomb: {width}×{height} pixels > dataset.max_pixels"
    return f"not a readable image ({type(error).__name__})"


def identical_files(images: pd.DataFrame) -> list[dict]:
    """A row (path, action, reason) for each file whose bytes (sha256) another file repeats:
    a duplicate where all copies share a class, a label conflict where they do not."""
    outcomes = []
    copies = images[images.duplicated("sha256", keep=False)]
    for sha256, group in copies.groupby("sha256", sort=False):
        labels = sorted(set(group["label"]))
        action = "duplicate" if len(labels) == 1 else "label_conflict"
        reason = f"sha256 {sha256[:12]}: {len(group)} identical files labelled {', '.join(labels)}"
        outcomes += [_outcome(path, action, reason) for path in group["path"]]
    return outcomes


class Skips(NamedTuple):
    """The skipped files that count toward split.max_skipped_fraction, of all files counted."""

    count: int
    total: int

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.count:,} of {self.total:,} files skipped ({self.fraction:.2%})"


def count_skips(files: pd.DataFrame, readable: int) -> Skips:
    # Files left out (hidden, or beside the class folders) are not images anyone meant to train on: they do not count.
    meant_as_images = files["path"].map(lambda path: left_out_reason(Path(path), is_dir=False) is None)
    count = int(((files["action"] == "skipped") & meant_as_images).sum())
    return Skips(count, count + readable)


def check_skipped_fraction(skips: Skips, limit: float) -> None:
    if skips.fraction > limit:
        raise UserError(
            f"{RAW_DIR}: {skips}, more than split.max_skipped_fraction = {limit:g}; "
            "fix or remove the files listed above, or raise split.max_skipped_fraction"
        )


def assign_splits(images: pd.DataFrame, fractions: SplitConfig, seed: int) -> pd.DataFrame:
    """Add the `split` column: test if u < test, val if u < test + val, else train, u from the content hash."""
    position = images["sha256"].map(lambda sha: _unit_interval(f"{seed}:{sha}"))
    split = pd.Series("train", index=images.index)
    split[position < fractions.test + fractions.val] = "val"
    split[position < fractions.test] = "test"
    return images.assign(split=split)[["path", "label", "split", "sha256"]]


def nested_subset(images: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified `fraction` of `images` (columns label, sha256): per class, the
    ceil(fraction * n) images first in the order of their content hash. The order does not depend on
    the fraction, so a smaller subset lies inside a larger one, and the same images give the same subset."""
    position = images["sha256"].map(lambda sha: _unit_interval(f"{seed}:subset:{sha}"))
    rank = position.groupby(images["label"]).rank(method="first")
    size = images.groupby("label")["label"].transform("size")
    return (rank <= np.ceil(fraction * size)).to_numpy()


def _unit_interval(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def class_counts(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Images per class (rows, every class folder, even one left empty) and split (columns)."""
    counts = pd.crosstab(manifest["label"], manifest["split"])
    return counts.reindex(index=classes, columns=list(SPLITS), fill_value=0)


def check_every_split_has_every_class(counts: pd.DataFrame) -> None:
    for label, row in counts.iterrows():
        if (row == 0).any():
            raise UserError(
                f"{RAW_DIR / str(label)}: class {label!r} has {row.sum()} images, too few to appear in every split "
                f"({', '.join(f'{split} {row[split]}' for split in SPLITS)}); add images or lower split.val/split.test"
            )


def deviations(counts: pd.DataFrame, fractions: SplitConfig) -> pd.Series:
    """Per class, the largest gap between a split's share of the class and its target fraction."""
    shares = counts.div(counts.sum(axis=1), axis=0)
    return (shares - pd.Series(targets(fractions))).abs().max(axis=1)


def targets(fractions: SplitConfig) -> dict[str, float]:
    return {"train": 1 - fractions.val - fractions.test, "val": fractions.val, "test": fractions.test}


def split_summary(counts: pd.DataFrame, fractions: SplitConfig) -> str:
    totals = ", ".join(f"{split} {counts[split].sum()}" for split in SPLITS)
    return (
        f"split: {counts.to_numpy().sum()} images in {len(counts)} classes: {totals}; "
        f"largest class deviation from the target fractions {deviations(counts, fractions).max():.1%}"
    )


def files_summary(files: pd.DataFrame) -> str:
    tally = files["action"].value_counts().reindex(ACTIONS, fill_value=0)
    return (
        f"split: {tally['skipped']} files skipped, {tally['converted']} converted, {tally['duplicate']} duplicates kept, "
        f"{tally['label_conflict']} label conflicts dropped; see {DATA_REPORT}"
    )
