"""Stage `split`: data/raw/ -> data/split/manifest.csv (path, label, split, sha256),
reports/data.md and reports/data_files.csv.

Hidden entries and files beside the class folders are left out (tlpipe.data.layout).
Every other file is decoded; unreadable files and decompression bombs are skipped with
their reason, and the stage fails rather than train on what is left when more than
split.max_skipped_fraction of the files are skipped. Identical files in different
classes are dropped as label conflicts. An image's split follows from a hash of its
content (tlpipe.data.splitting). reports/data_files.csv lists every file skipped,
left out, converted, duplicated or in conflict, with its reason.
"""

import pandas as pd

from tlpipe.config import DATA_FILES, DATA_REPORT, RAW_DIR, load_config
from tlpipe.data.layout import left_out_note
from tlpipe.data.manifest import write_manifest
from tlpipe.data.splitting import (
    FILE_COLUMNS,
    assign_splits,
    check_every_split_has_every_class,
    check_skipped_fraction,
    class_counts,
    class_folders,
    count_skips,
    files_summary,
    identical_files,
    scan,
    split_summary,
)
from tlpipe.errors import run_stage
from tlpipe.files import write_text
from tlpipe.reporting.data_report import data_markdown

SKIPPED_LINES = 10


def main() -> None:
    config = load_config()
    class_dirs, left_out = class_folders(RAW_DIR)
    images, outcomes = scan(RAW_DIR, config.dataset.max_pixels)
    files = pd.DataFrame(outcomes + identical_files(images), columns=FILE_COLUMNS)
    files = files.sort_values(["path", "action"], ignore_index=True)
    _print_skipped(files[files["action"] == "skipped"])
    skips = count_skips(files, len(images))
    check_skipped_fraction(skips, config.split.max_skipped_fraction)

    conflicting = files.loc[files["action"] == "label_conflict", "path"]
    images = images[~images["path"].isin(conflicting)]
    manifest = assign_splits(images, config.split, config.seed)
    counts = class_counts(manifest, [path.name for path in class_dirs])
    check_every_split_has_every_class(counts)
    write_manifest(manifest)

    write_text(DATA_FILES, files.to_csv(index=False))
    write_text(DATA_REPORT, data_markdown(counts, images, files, skips, config.split))
    print(split_summary(counts, config.split) + left_out_note(left_out))
    print(files_summary(files))


def _print_skipped(skipped: pd.DataFrame) -> None:
    """A line per skipped file, up to SKIPPED_LINES: a .git or __MACOSX tree would flood the log."""
    for row in skipped.head(SKIPPED_LINES).itertuples():
        print(f"split: skipped {row.path}: {row.reason}")
    if len(skipped) > SKIPPED_LINES:
        print(f"split: skipped {len(skipped) - SKIPPED_LINES} more files, each listed with its reason in {DATA_FILES}")


if __name__ == "__main__":
    run_stage(main)
