"""Exports of a trained classifier for serving and mobile, and runners that load them back.

Each format comes from Keras' own `model.export` (TensorFlow 2.21, Keras 3.15; the ONNX one
through tf2onnx), and takes what the Keras model takes: float32 RGB images, 0-255, at the
model's size, preprocessing inside.

  saved_model/           TensorFlow SavedModel; serving signature `serving_default`
  model.tflite           LiteRT (TFLite) flatbuffer, float32
  model_float16.tflite   the same with float16 weights (export.tflite_float16): half the size;
                         tf.lite.TFLiteConverter, which Keras' litert export does not expose
  model.onnx             ONNX, for onnxruntime
  labels.txt             the class names (tlpipe.data.labels), written by the caller

`runner` loads an export with its own runtime (tf.saved_model, the LiteRT interpreter,
onnxruntime), for the checks against the Keras model.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from tlpipe.errors import UserError
from tlpipe.files import replace_dir, save_atomically, temporary_dir_for

FORMATS = ("saved_model", "tflite", "onnx")
KERAS_FORMATS = {"saved_model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
FILE_NAMES = {"saved_model": "saved_model", "tflite": "model.tflite", "tflite_float16": "model_float16.tflite",
              "onnx": "model.onnx"}
EXTRA = "pip install --constraint requirements.lock -e '.[export]'"

Runner = Callable[[np.ndarray], np.ndarray]


def export_model(model: keras.Model, directory: Path, fmt: str, tflite_float16: bool = False) -> dict[str, Path]:
    """Write `model` in format `fmt` into `directory`; return {variant: path} (tflite may bring tflite_float16)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAMES[fmt]
    try:
        if fmt == "saved_model":
            with temporary_dir_for(path) as work:
                model.export(str(Path(work) / path.name), format=KERAS_FORMATS[fmt], verbose=False)
                replace_dir(Path(work) / path.name, path)
        else:
            save_atomically(path, lambda partial: model.export(str(partial), format=KERAS_FORMATS[fmt], verbose=False))
    except ImportError as error:
        raise UserError(f"export format {fmt} needs the export extra ({error.name or error}): {EXTRA}") from None
    written = {fmt: path}
    if fmt == "tflite" and tflite_float16:
        written["tflite_float16"] = _write_tflite_float16(model, directory / FILE_NAMES["tflite_float16"])
    return written


def _write_tflite_float16(model: keras.Model, path: Path) -> Path:
    """TFLite with float16 weights (float32 compute), converted from a SavedModel of `model`."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as work:
        model.export(work, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(work)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    save_atomically(path, lambda partial: partial.write_bytes(flatbuffer))
    return path


def size_bytes(path: Path) -> int:
    """A file's size, or a folder's (SavedModel) files added up."""
    return path.stat().st_size if path.is_file() else sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def runner(path: Path, variant: str) -> Runner:
    """A function from a float32 image batch to probabilities, through the export at `path` and its own runtime."""
    try:
        if variant == "saved_model":
            return _saved_model_runner(path)
        if variant in ("tflite", "tflite_float16"):
            return _litert_runner(path)
        return _onnx_runner(path)
    except ImportError as error:
        raise UserError(f"running a {variant} export needs the export extra ({error.name or error}): {EXTRA}") from None


def _saved_model_runner(path: Path) -> Runner:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(images: np.ndarray) -> np.ndarray:
        (probabilities,) = serve(tf.constant(images, tf.float32)).values()
        return probabilities.numpy()

    return run


def _litert_runner(path: Path) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (image_input,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(images: np.ndarray) -> np.ndarray:
        # The flatbuffer's batch dimension is 1 (-1 in its signature): resize to each new batch shape.
        if tuple(interpreter.get_input_details()[0]["shape"]) != images.shape:
            interpreter.resize_tensor_input(image_input["index"], images.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(image_input["index"], np.asarray(images, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(output["index"])

    interpreter.allocate_tensors()
    return run


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: np.asarray(images, np.float32)})[0]
