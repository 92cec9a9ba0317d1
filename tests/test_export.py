"""Each export format loads with its own runtime, runs on raw images and agrees with the Keras model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tlpipe.config import HeadConfig, TrunkConfig
from tlpipe.exporter import FORMATS, export_model, runner
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.trunks import build_trunk

SIZE = 32
# Float32 exports compute what Keras computes, in another order; float16 weights round each weight.
TOLERANCE = {"saved_model": 1e-5, "tflite": 1e-4, "onnx": 1e-4, "tflite_float16": 2e-2}


@pytest.fixture(scope="module")
def model() -> keras.Model:
    # MobileNetV2 (depthwise convolutions, batch normalization, ReLU6) keeps the exports small and quick.
    keras.utils.set_random_seed(0)
    trunk = build_trunk(TrunkConfig(name="mobilenet_v2", weights="none", image_size=SIZE))
    head = build_head("gap", trunk.output_shape[1:], 4, HeadConfig(hidden=[], dropout=0, learning_rate=1e-3, epochs=1, batch_size=8))
    return assemble(trunk, head)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.integers(0, 256, (8, 1, 1, 3)) + rng.integers(-40, 41, (8, SIZE, SIZE, 3)), 0, 255).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_loads_runs_on_raw_images_and_agrees_with_keras(fmt, model, images, tmp_path):
    written = export_model(model, tmp_path, fmt, tflite_float16=True)
    assert set(written) == ({"tflite", "tflite_float16"} if fmt == "tflite" else {fmt})
    expected = model.predict(images, verbose=0)
    for variant, path in written.items():
        actual = runner(path, variant)(images)
        assert actual.shape == expected.shape, variant
        np.testing.assert_allclose(actual, expected, atol=TOLERANCE[variant], err_msg=variant)
        assert (actual.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.99, variant
    if fmt == "tflite":
        assert written["tflite_float16"].stat().st_size < 0.6 * written["tflite"].stat().st_size


def test_the_saved_model_signature_takes_raw_images(model, tmp_path):
    path = export_model(model, tmp_path, "saved_model")["saved_model"]
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32


def test_the_export_report_has_a_row_per_format_and_says_when_it_is_off():
    from tlpipe.reporting.export_report import export_markdown

    assert "Off (`export.formats: []`)" in export_markdown({"flatten": {"enabled": False}, "gap": {"enabled": False}})
    gap = {"enabled": True, "test_images": 300, "device": "CPU (2 cores)",
           "keras": {"file": "models/gap.keras", "bytes": 3 * 2**20, "latency_ms": 12.5},
           "formats": {"onnx": {"file": "models/export/gap/model.onnx", "bytes": 2**20, "latency_ms": 4.25,
                                "top1_agreement": 0.9967, "max_abs_difference": 2.5e-6}}}
    report = export_markdown({"flatten": {"enabled": False}, "gap": gap})
    assert "## GAP (`models/gap.keras`), 300 test images, CPU (2 cores)" in report
    assert "| ONNX (onnxruntime) | `models/export/gap/model.onnx` | 1.0 MiB | 4.25 | 99.67% | 2.5e-06 |" in report
    assert "Flatten" not in report
