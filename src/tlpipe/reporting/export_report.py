"""reports/export.md: each head's exports (stage export@<head>) against its Keras model."""

from tlpipe.reporting.comparison import TITLES

NAMES = {"saved_model": "SavedModel", "tflite": "TFLite (LiteRT), float32", "tflite_float16": "TFLite, float16 weights",
         "onnx": "ONNX (onnxruntime)"}


def export_markdown(reports: dict[str, dict]) -> str:
    """The Markdown report from each head's reports/export/<head>.json."""
    lines = ["# Exports", ""]
    if not any(report["enabled"] for report in reports.values()):
        return "\n".join([*lines, "Off (`export.formats: []`): set it in params.yaml, e.g. `[saved_model, tflite, onnx]`.", ""])
    lines += [
        "Each export takes what `models/<head>.keras` takes (RGB images, 0-255, float32, preprocessing inside) and is "
        "run by its own runtime (`tf.saved_model.load`, the LiteRT interpreter, onnxruntime) on the test split: "
        "top-1 agreement with the Keras model, and the largest absolute difference of any class probability. "
        "Latency: one image per call, the median of 20 calls after 20 untimed ones.",
    ]
    for head, report in reports.items():
        if not report["enabled"]:
            continue
        keras_model = report["keras"]
        lines += [
            "", f"## {TITLES[head]} (`{keras_model['file']}`), {report['test_images']} test images, {report['device']}", "",
            "| format | file | size | latency (ms) | top-1 agreement | max abs prob diff |",
            "|---|---|---:|---:|---:|---:|",
            f"| Keras | `{keras_model['file']}` | {_size(keras_model['bytes'])} | {keras_model['latency_ms']:.2f} | | |",
        ]
        for variant, figures in report["formats"].items():
            lines.append(f"| {NAMES[variant]} | `{figures['file']}` | {_size(figures['bytes'])} | {figures['latency_ms']:.2f} | "
                         f"{figures['top1_agreement']:.2%} | {figures['max_abs_difference']:.1e} |")
    return "\n".join([*lines, ""])


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
