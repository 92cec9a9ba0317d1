"""reports/data.md: what the split stage found, for a reviewer: images per class and split,
image sizes, files left out, skipped or converted, duplicates and label conflicts."""

import pandas as pd

from tlpipe.config import DATA_FILES, RAW_DIR, SplitConfig
from tlpipe.data.manifest import SPLITS
from tlpipe.data.splitting import Skips, deviations, targets

EXAMPLES = 5

def data_markdown(counts: pd.DataFrame, images: pd.DataFrame, files: pd.DataFrame, skips: Skips, fractions: SplitConfig) -> str:
    """The data report: split table, image sizes, skipped and converted files, duplicates."""
    sections = [
        "# Data\n\n"
        f"What the split stage found in `{RAW_DIR}/`: {len(images):,} images in {len(counts)} classes. "
        f"Every file left out, skipped, converted, duplicated or in a label conflict is listed with its reason "
        f"in [{DATA_FILES.name}]({DATA_FILES.name}).",
        _split_section(counts, fractions),
        _size_section(images),
        _skipped_section(files, skips, fractions),
        _identical_section(files),
    ]
    return "\n\n".join(sections) + "\n"


def _split_section(counts: pd.DataFrame, fractions: SplitConfig) -> str:
    split_targets = targets(fractions)
    class_deviations = deviations(counts, fractions)
    lines = [
        "## Images per class and split",
        "",
        f"Target fractions: {', '.join(f'{split} {split_targets[split]:.0%}' for split in SPLITS)}. An image's split follows "
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
        "Left out, and skipped without counting, are hidden entries at any depth (names starting with `.`, "
        "`__MACOSX` folders, `Thumbs.db` files) with everything in them, and files beside the class folders. "
        "Converted images are kept.",
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
