"""The labels file: a model's class names, one a line, in output order (so a prediction reads "sandal", not "5").

Written beside every saved model (models/<head>.labels.txt) and export (labels.txt); no
TensorFlow here, so that the export stage's off path stays light.
"""

from pathlib import Path

from tlpipe.files import write_text

EXPORT_LABELS_FILE = "labels.txt"  # in an export folder, beside the exported formats


def labels_path(model_path: Path) -> Path:
    """models/gap.keras -> models/gap.labels.txt"""
    return model_path.with_suffix(".labels.txt")


def write_labels(path: Path, classes: list[str]) -> None:
    write_text(path, "".join(f"{name}\n" for name in classes))


def read_labels(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()
