"""The inference engine: image files in, class probabilities out, through a trained classifier.

`tlpipe predict` and the train stage's evaluation (its img/s) both run images through
this one path: the pipeline's own decoder (tlpipe.data.images: EXIF orientation, CMYK,
16-bit, grayscale -> RGB, squashed to the model's square size), batches decoded in
parallel threads, and the model on each batch, on the GPU when TensorFlow sees one.
A file that does not decode is skipped with its reason; the others are still predicted.
"""

import glob
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from tlpipe.data.images import load_rgb
from tlpipe.errors import UserError

# Fewer images than this finish too soon for a progress bar to help.
PROGRESS_MIN_IMAGES = 300


def image_files(arguments: Sequence[str]) -> list[Path]:
    """The files that PATH arguments name: a file as given, a folder's image files (by suffix, hidden ones
    left out) found recursively, a glob's matches (either kind); each file once, in argument order."""
    suffixes = set(Image.registered_extensions())
    files = {}
    for argument in arguments:
        matches = [argument] if Path(argument).exists() else sorted(glob.glob(argument, recursive=True))
        if not matches:
            raise UserError(f"{argument}: no such file or folder (nor files matching it as a glob)")
        for match in map(Path, matches):
            if match.is_dir():
                found = sorted(path for path in match.rglob("*") if path.is_file() and path.suffix.lower() in suffixes
                               and not any(part.startswith(".") for part in path.relative_to(match).parts))
                files.update(dict.fromkeys(found))
            else:
                files[match] = None
    return list(files)


@dataclass
class Predictions:
    """What a run over files gave: the paths that decoded, their probabilities, and the skipped files."""

    paths: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    model_seconds: float = 0.0  # the part of the run spent in the model (the rest: decoding, batching)


class Predictor:
    """A classifier (RGB images 0-255 -> probabilities) with its class names, run batch by batch."""

    def __init__(self, model: keras.Model, classes: list[str], batch_size: int = 32):
        self.model = model
        self.classes = classes
        self.batch_size = batch_size
        self.image_size = model.input_shape[1]
        self.model.compile(jit_compile=False)  # as for the trunk pass: XLA slows the trunk on CPU
        # Pillow releases the GIL while it decodes: threads decode a batch in parallel.
        self.decoders = ThreadPoolExecutor(max_workers=os.cpu_count())

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """One batch of (n, size, size, 3) RGB images, 0-255, to (n, classes) probabilities."""
        return np.asarray(self.model.predict_on_batch(np.asarray(images, dtype=np.float32)))

    def load(self, paths: Sequence[str | Path]) -> tuple[list, list]:
        """Decode `paths` at the model's size in parallel: (decoded (path, image) pairs, skipped (path, reason) pairs)."""
        decoded, skipped = [], []
        for path, result in zip(paths, self.decoders.map(self._decode, paths)):
            (skipped if isinstance(result, str) else decoded).append((str(path), result))
        return decoded, skipped

    def _decode(self, path: str | Path) -> np.ndarray | str:
        try:
            return load_rgb(path, self.image_size)
        except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError... for a bad file
            reason = " ".join(str(error).split())
            return f"{type(error).__name__}: {reason}" if reason else type(error).__name__

    def predict_files(self, paths: Sequence[str | Path], progress: bool | None = None) -> Predictions:
        """Every file's probabilities, batch by batch; a progress bar on stderr beyond PROGRESS_MIN_IMAGES files."""
        result, batches = Predictions(), []
        show = len(paths) >= PROGRESS_MIN_IMAGES if progress is None else progress
        with tqdm(total=len(paths), unit="img", disable=not show) as bar:
            for start in range(0, len(paths), self.batch_size):
                decoded, skipped = self.load(paths[start:start + self.batch_size])
                result.skipped += skipped
                if decoded:
                    result.paths += [path for path, _ in decoded]
                    images = np.stack([image for _, image in decoded])
                    before_model = time.perf_counter()
                    batches.append(self.probabilities(images))
                    result.model_seconds += time.perf_counter() - before_model
                bar.update(len(decoded) + len(skipped))
        result.probabilities = np.concatenate(batches) if batches else np.zeros((0, len(self.classes)), np.float32)
        return result

    def top_k(self, predictions: Predictions, k: int) -> pd.DataFrame:
        """One row per predicted file: path, then class_1, probability_1, ... class_k, probability_k."""
        k = min(k, len(self.classes))
        best = np.argsort(-predictions.probabilities, axis=1, kind="stable")[:, :k]
        table = pd.DataFrame({"path": predictions.paths})
        for rank in range(k):
            table[f"class_{rank + 1}"] = np.array(self.classes)[best[:, rank]]
            table[f"probability_{rank + 1}"] = np.take_along_axis(predictions.probabilities, best[:, rank:rank + 1], axis=1)[:, 0].round(4)
        return table
