"""Stage `split`: data/raw/ -> data/split/manifest.csv (path, label, split, sha256),
reports/data.md and reports/data_files.csv.

Each class is a top-level folder of data/raw/; images in nested folders count
for the class folder they sit in. Every file is decoded, so a file that is not
a readable image is skipped with its reason, whatever its extension; so is an
image of more than dataset.max_pixels pixels (a decompression bomb), judged from
its header before decoding. If more than split.max_skipped_fraction of the files
are skipped (hidden and macOS metadata files aside), the stage fails rather than
train on what is left.

An image's split is decided by a hash of its content and the seed, as in
TensorFlow's retrain.py: identical files always land in the same split (no
leakage), and adding images never moves existing ones between splits, so a
scheduled retraining keeps a comparable test set. The fractions hold per class
in expectation; the stage prints how far each class is from them.

Identical files (same bytes, by sha256) in one class are kept and reported as
duplicates; identical files in different classes cannot be labelled, so every
copy is dropped and reported as a label conflict. reports/data_files.csv lists
every file skipped, converted, duplicated or in conflict, with its reason.
"""

import hashlib
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from tlpipe.config import MANIFEST, RAW_DIR, REPORTS_DIR, SplitConfig, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.files import sha256_of, write_text
from tlpipe.images import TooManyPixels, decode_rgb

SPLITS = ("train", "val", "test")
DATA_REPORT = REPORTS_DIR / "data.md"
DATA_FILES = REPORTS_DIR / "data_files.csv"
FILE_COLUMNS = ["path", "action", "reason"]
ACTIONS = ("skipped", "converted", "duplicate", "label_conflict")
HIDDEN_FILE = "hidden or macOS metadata file"
EXAMPLES = 5


def main() -> None:
    config = load_config()
    class_dirs = class_folders(RAW_DIR)
    images, outcomes = scan(class_dirs, config.dataset.max_pixels)
    files = pd.DataFrame(outcomes + identical_files(images), columns=FILE_COLUMNS)
    files = files.sort_values(["path", "action"], ignore_index=True)
    for row in files[files["action"] == "skipped"].itertuples():
        print(f"split: skipped {row.path}: {row.reason}")
    skips = count_skips(files, len(images))
    check_skipped_fraction(skips, config.split.max_skipped_fraction)

    conflicting = files.loc[files["action"] == "label_conflict", "path"]
    images = images[~images["path"].isin(conflicting)]
    manifest = assign_splits(images, config.split, config.seed)
    counts = class_counts(manifest, [path.name for path in class_dirs])
    check_every_split_has_every_class(counts)
    write_text(MANIFEST, manifest.to_csv(index=False))

    write_text(DATA_FILES, files.to_csv(index=False))
    write_text(DATA_REPORT, data_markdown(counts, images, files, skips, config.split))
    print(split_summary(counts, config.split))
    print(files_summary(files))


def class_folders(root: Path) -> list[Path]:
    """The class folders of root, sorted; hidden folders (.git, __MACOSX) are no classes."""
    if not root.is_dir():
        raise UserError(f"{root}: missing; run the fetch stage first (dvc repro fetch)")
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not _is_hidden(path.relative_to(root)))
    if len(class_dirs) < 2:
        raise UserError(f"{root}: found {len(class_dirs)} class folder(s); an image-folder dataset needs at least 2")
    return class_dirs


def scan(class_dirs: list[Path], max_pixels: int) -> tuple[pd.DataFrame, list[dict]]:
    """Every readable image in the class folders (path, label, sha256, width, height), and a
    row (path, action, reason) for each file skipped or converted; paths relative to data/raw."""
    images, outcomes = [], []
    for class_dir in class_dirs:
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(class_dir.parent)
            name = relative.as_posix()
            if _is_hidden(relative):
                outcomes.append(_outcome(name, "skipped", HIDDEN_FILE))
                continue
            try:
                image, conversions = decode_rgb(path, max_pixels)
            except Exception as error:  # Pillow raises many types for unreadable files
                outcomes.append(_outcome(name, "skipped", _skip_reason(error)))
                continue
            if conversions:
                outcomes.append(_outcome(name, "converted", "; ".join(conversions)))
            width, height = image.size
            images.append({"path": name, "label": class_dir.name, "sha256": sha256_of(path), "width": width, "height": height})
    return pd.DataFrame(images, columns=["path", "label", "sha256", "width", "height"]), outcomes


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith((".", "__MACOSX")) or part == "Thumbs.db" for part in relative.parts)


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
    # Hidden and macOS metadata files are not images anyone meant to train on: they do not count.
    count = int(((files["action"] == "skipped") & (files["reason"] != HIDDEN_FILE)).sum())
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
    return (shares - pd.Series(_targets(fractions))).abs().max(axis=1)


def _targets(fractions: SplitConfig) -> dict[str, float]:
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


# --- reports/data.md --------------------------------------------------------------


def data_markdown(counts: pd.DataFrame, images: pd.DataFrame, files: pd.DataFrame, skips: Skips, fractions: SplitConfig) -> str:
    """The data report: split table, image sizes, skipped and converted files, duplicates."""
    sections = [
        "# Data\n\n"
        f"What the split stage found in `{RAW_DIR}/`: {len(images):,} images in {len(counts)} classes. "
        f"Every file skipped, converted, duplicated or in a label conflict is listed with its reason "
        f"in [{DATA_FILES.name}]({DATA_FILES.name}).",
        _split_section(counts, fractions),
        _size_section(images),
        _skipped_section(files, skips, fractions),
        _identical_section(files),
    ]
    return "\n\n".join(sections) + "\n"


def _split_section(counts: pd.DataFrame, fractions: SplitConfig) -> str:
    targets = _targets(fractions)
    class_deviations = deviations(counts, fractions)
    lines = [
        "## Images per class and split",
        "",
        f"Target fractions: {', '.join(f'{split} {targets[split]:.0%}' for split in SPLITS)}. An image's split follows "
        "from a hash of its content, so each class lands near the targets, not on them; *deviation* is the class's "
        "largest gap from a target.",
        "",
        f"| class | {' | '.join(SPLITS)} | total | deviation |",
        "|---|" + "---:|" * (len(SPLITS) + 2),
    ]
    for label, row in counts.iterrows():
        cells = " | ".join(f"{row[split]:,} ({row[split] / row.sum():.1%})" for split in SPLITS)
        lines.append(f"| {_cell(label)} | {cells} | {row.sum():,} | {class_deviations[label]:.1%} |")
    lines.append(f"| **all** | {' | '.join(f'{counts[split].sum():,}' for split in SPLITS)} | {counts.to_numpy().sum():,} | |")
    return "\n".join(lines)


def _size_section(images: pd.DataFrame) -> str:
    sizes = images["width"].astype(str) + " × " + images["height"].astype(str)
    common = sizes.value_counts().head(EXAMPLES)
    lines = [
        "## Image sizes",
        "",
        "Decoded sizes in pixels (after EXIF orientation); the trunk sees every image resized to `trunk.image_size`.",
        "",
        "| | min | median | max |",
        "|---|---:|---:|---:|",
        *(f"| {side} | {images[side].min()} | {images[side].median():g} | {images[side].max()} |" for side in ("width", "height")),
        "",
        "| most common sizes | images |",
        "|---|---:|",
        *(f"| {size} | {count:,} ({count / len(images):.1%}) |" for size, count in common.items()),
    ]
    return "\n".join(lines)


def _skipped_section(files: pd.DataFrame, skips: Skips, fractions: SplitConfig) -> str:
    changed = files[files["action"].isin(["skipped", "converted"])]
    by_reason = changed.groupby(["action", "reason"]).size().sort_values(ascending=False)
    lines = [
        "## Skipped and converted files",
        "",
        f"{skips}; the stage fails above `split.max_skipped_fraction` = {fractions.max_skipped_fraction:g}. "
        "Hidden and macOS metadata files are skipped too but not counted. Converted images are kept.",
    ]
    if len(by_reason):
        lines += ["", "| action | reason | files |", "|---|---|---:|"]
        lines += [f"| {action} | {_cell(reason)} | {count:,} |" for (action, reason), count in by_reason.items()]
    return "\n".join(lines)


def _identical_section(files: pd.DataFrame) -> str:
    lines = [
        "## Duplicates and label conflicts",
        "",
        "Duplicates are detected by identical bytes (sha256): re-encoded or resized copies are not caught. Identical "
        "files always land in the same split. Duplicates within a class are kept; identical files in different classes "
        "are label conflicts, and every copy is dropped from the manifest (no label can be trusted).",
    ]
    titles = {"duplicate": "duplicates within a class (kept)", "label_conflict": "label conflicts (dropped)"}
    # All copies of one content share a reason, which names their sha256.
    groups = {action: files[files["action"] == action].groupby("reason", sort=False)["path"] for action in titles}
    lines += ["", "| | files | groups of identical files |", "|---|---:|---:|"]
    lines += [f"| {titles[action]} | {paths.size().sum():,} | {paths.ngroups:,} |" for action, paths in groups.items()]
    examples = [
        f"- {action}: {' = '.join(f'`{path}`' for path in group)}"
        for action, paths in groups.items()
        for _, group in list(paths)[:EXAMPLES]
    ]
    if examples:
        lines += ["", "Examples, identical files joined by `=`:", "", *examples]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` would end the cell."""
    return str(text).replace("|", "\\|")


if __name__ == "__main__":
    run_stage(main)
