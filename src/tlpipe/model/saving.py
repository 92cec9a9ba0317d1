"""Saving and loading the trained classifier, with its class names.

models/<head>.keras       the full model: RGB images (0-255) -> class probabilities; its
                          metadata.json also holds "class_names" (Keras writes that file and
                          never reads it back, so the extra key is safe)
models/<head>.labels.txt  the class names (tlpipe.data.labels): for tools that do not
                          open a .keras archive

`load_classifier` checks what it loads, so that a wrong file fails in one line that
says what to do rather than giving wrong answers.
"""

import json
import os
import zipfile
from pathlib import Path

import keras

from tlpipe.data.labels import labels_path, read_labels, write_labels
from tlpipe.errors import UserError, summary
from tlpipe.files import save_atomically
from tlpipe.model.loading import load_model_file
from tlpipe.model.trunks import PREPROCESSING_NAME, TRUNK_NAME

METADATA_FILE = "metadata.json"  # inside a .keras archive
CLASS_NAMES_KEY = "class_names"


def save_classifier(model: keras.Model, path: Path, classes: list[str]) -> None:
    """Save `model` at `path` (.keras) with the class names in its metadata, and the labels file beside it."""

    def save(partial: Path) -> None:
        model.save(partial)
        _add_class_names(partial, classes)

    save_atomically(path, save)
    write_labels(labels_path(path), classes)


def _add_class_names(archive: Path, classes: list[str]) -> None:
    """Rewrite the .keras archive with "class_names" added to its metadata.json (zip members cannot be edited in place)."""
    rewritten = archive.with_name(f"{archive.name}.rewrite")
    try:
        with zipfile.ZipFile(archive) as source, zipfile.ZipFile(rewritten, "w") as target:
            for member in source.infolist():
                data = source.read(member)
                if member.filename == METADATA_FILE:
                    data = json.dumps({**json.loads(data), CLASS_NAMES_KEY: classes}).encode()
                target.writestr(member, data)
        os.replace(rewritten, archive)
    finally:
        rewritten.unlink(missing_ok=True)


def class_names_of(path: Path) -> list[str] | None:
    """The class names in a .keras archive's metadata, None if it has none."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(METADATA_FILE)).get(CLASS_NAMES_KEY)


def load_classifier(path: Path, image_size: int | None = None,
                    remedy: str = "give a models/<head>.keras file") -> tuple[keras.Model, list[str]]:
    """The model at `path` and its class names; with `image_size`, check that the model takes images of that size.
    `remedy` says what to do about a file that cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model; train one first (make run, or dvc repro) or give another with --model")
    model = load_model_file(path, remedy)
    try:
        classes = class_names_of(path)
    except Exception as error:  # zipfile.BadZipFile, KeyError, ValueError...: Keras read it, so rarely
        raise UserError(f"{path}: no readable metadata ({summary(error)}); {remedy}") from None
    if classes is None and labels_path(path).is_file():
        classes = read_labels(labels_path(path))
    if classes is None:
        raise UserError(f"{path}: no class names in the model or in {labels_path(path)}; re-run dvc repro to save them")
    if TRUNK_NAME not in [layer.name for layer in model.layers] or PREPROCESSING_NAME not in [
            layer.name for layer in model.get_layer(TRUNK_NAME).layers]:
        raise UserError(f"{path}: saved before the trunk's preprocessing moved inside the model (it expects "
                        "preprocessed images); re-run dvc repro to save it again")
    _, height, width, _ = model.input_shape
    if image_size is not None and (height, width) != (image_size, image_size):
        raise UserError(f"{path}: takes {height}x{width} images, not {image_size}x{image_size} (params.yaml "
                        f"trunk.image_size); re-run dvc repro to train it at {image_size} px")
    if model.output_shape[-1] != len(classes):
        raise UserError(f"{path}: {model.output_shape[-1]} outputs but {len(classes)} class names; re-run dvc repro")
    return model, classes
