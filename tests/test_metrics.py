"""Inference timing (tlpipe.metrics): whole batches, until the time budget has passed."""

import keras

from builders import png_bytes
from tlpipe import metrics
from tlpipe.predictor import Predictor


def test_throughput_stops_after_the_batch_that_reaches_the_time_budget(monkeypatch):
    done = []
    monkeypatch.setattr(metrics, "TIMING_SECONDS", 0.0)
    results, seconds = metrics._time_batches(lambda batch: done.append(batch) or len(batch), [[1] * 32, [2] * 32, [3] * 7])
    assert done == [[1] * 32] and results == [32] and seconds > 0


def test_throughput_runs_every_batch_within_the_time_budget(monkeypatch):
    done = []
    monkeypatch.setattr(metrics, "TIMING_SECONDS", 60.0)
    results, _ = metrics._time_batches(lambda batch: done.append(batch) or len(batch), [[1] * 32, [2] * 32, [3] * 7])
    assert [len(batch) for batch in done] == [32, 32, 7] and results == [32, 32, 7]


def test_one_timed_run_gives_the_model_rate_and_the_files_to_classes_rate(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    images = keras.Input((8, 8, 3))
    model = keras.Model(images, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(images)))
    paths = [tmp_path / f"{index}.png" for index in range(5)]
    for index, path in enumerate(paths):
        path.write_bytes(png_bytes(index))
    predictor = Predictor(model, ["a", "b"], batch_size=2)
    monkeypatch.setattr(metrics, "TIMING_SECONDS", 60.0)
    model_rate, predict_rate = metrics.inference_throughput(predictor, paths)
    assert model_rate > predict_rate > 0  # the model's share of the same timed run: fewer seconds
