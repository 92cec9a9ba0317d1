"""Writing outputs so that a failure never leaves a half-written file or folder behind."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary name next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8") as file:
        file.write(text)
    os.chmod(file.name, 0o644)  # temporary files are created private; a report is for every reader
    os.replace(file.name, path)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def temporary_dir_for(target: Path) -> tempfile.TemporaryDirectory:
    """A scratch folder beside `target` (same file system, so a rename into place is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-")


def replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` in place of `target`; until the last rename the previous copy stays whole."""
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    new.chmod(0o755)  # temporary folders are created private
    new.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def save_atomically(path: Path, save) -> None:
    """Call save(temporary_path) with a name ending like `path` (Keras checks it), then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
