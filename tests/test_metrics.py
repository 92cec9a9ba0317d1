"""Inference timing (tlpipe.metrics): whole batches, until the time budget has passed."""

from tlpipe import metrics


def test_throughput_stops_after_the_batch_that_reaches_the_time_budget(monkeypatch):
    done = []
    monkeypatch.setattr(metrics, "TIMING_SECONDS", 0.0)
    rate = metrics._images_per_second(lambda batch: done.append(batch) or len(batch), [[1] * 32, [2] * 32, [3] * 7])
    assert done == [[1] * 32] and rate > 0


def test_throughput_runs_every_batch_within_the_time_budget(monkeypatch):
    done = []
    monkeypatch.setattr(metrics, "TIMING_SECONDS", 60.0)
    metrics._images_per_second(lambda batch: done.append(batch) or len(batch), [[1] * 32, [2] * 32, [3] * 7])
    assert [len(batch) for batch in done] == [32, 32, 7]
