"""Stage `split`: data/raw/ -> data/split/manifest.csv (path, label, split, sha256).

Each class is a top-level folder of data/raw/; images in nested folders count
for the class folder they sit in. Every file is decoded, so a file that is not
a readable image is skipped with its reason, whatever its extension.

An image's split is decided by a hash of its content and the seed, as in
TensorFlow's retrain.py: identical files always land in the same split (no
leakage), and adding images never moves existing ones between splits, so a
scheduled retraining keeps a comparable test set. The fractions hold per class
in expectation; the stage prints how far each class is from them.
"""

import hashlib
from pathlib import Path

import pandas as pd

from tlpipe.config import MANIFEST, RAW_DIR, SplitConfig, load_config
from tlpipe.errors import UserError, run_stage
from tlpipe.files import sha256_of, write_text
from tlpipe.images import open_rgb

SPLITS = ("train", "val", "test")


def main() -> None:
    config = load_config()
    images, skipped = scan(RAW_DIR)
    for path, reason in skipped:
        print(f"split: skipped {path}: {reason}")
    manifest = assign_splits(images, config.split, config.seed)
    check_every_split_has_every_class(manifest)
    write_text(MANIFEST, manifest.to_csv(index=False))
    print(split_summary(manifest, config.split))


def scan(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every readable image under root's class folders, and the files skipped with why."""
    if not root.is_dir():
        raise UserError(f"{root}: missing; run the fetch stage first (dvc repro fetch)")
    rows, skipped = [], []
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not _is_hidden(path))
    for class_dir in class_dirs:
        for path in sorted(class_dir.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file():
                continue
            if _is_hidden(path.relative_to(root)):
                skipped.append((relative, "hidden or macOS metadata file"))
                continue
            try:
                open_rgb(path)
            except Exception as error:  # Pillow raises many types for unreadable files
                skipped.append((relative, f"not a readable image ({type(error).__name__})"))
                continue
            rows.append({"path": relative, "label": class_dir.name, "sha256": sha256_of(path)})
    if len(class_dirs) < 2:
        raise UserError(f"{root}: found {len(class_dirs)} class folder(s); an image-folder dataset needs at least 2")
    return pd.DataFrame(rows, columns=["path", "label", "sha256"]), skipped


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith((".", "__MACOSX")) or part == "Thumbs.db" for part in relative.parts)


def assign_splits(images: pd.DataFrame, fractions: SplitConfig, seed: int) -> pd.DataFrame:
    """Add the `split` column: test if u < test, val if u < test + val, else train, u from the content hash."""
    position = images["sha256"].map(lambda sha: _unit_interval(f"{seed}:{sha}"))
    split = pd.Series("train", index=images.index)
    split[position < fractions.test + fractions.val] = "val"
    split[position < fractions.test] = "test"
    return images.assign(split=split)[["path", "label", "split", "sha256"]]


def _unit_interval(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def check_every_split_has_every_class(manifest: pd.DataFrame) -> None:
    counts = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=list(SPLITS), fill_value=0)
    for label, row in counts.iterrows():
        if (row == 0).any():
            raise UserError(
                f"{RAW_DIR / str(label)}: class {label!r} has {row.sum()} images, too few to appear in every split "
                f"({', '.join(f'{split} {row[split]}' for split in SPLITS)}); add images or lower split.val/split.test"
            )


def split_summary(manifest: pd.DataFrame, fractions: SplitConfig) -> str:
    counts = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=list(SPLITS), fill_value=0)
    target = {"train": 1 - fractions.val - fractions.test, "val": fractions.val, "test": fractions.test}
    worst = max(abs(counts[split] / counts.sum(axis=1) - target[split]).max() for split in SPLITS)
    totals = ", ".join(f"{split} {counts[split].sum()}" for split in SPLITS)
    return f"split: {len(manifest)} images in {len(counts)} classes: {totals}; largest class deviation from the target fractions {worst:.1%}"


if __name__ == "__main__":
    run_stage(main)
