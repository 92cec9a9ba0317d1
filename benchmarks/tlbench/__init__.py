"""The benchmark (`make bench`, `python -m benchmarks.tlbench`): one trunk pass against the pipeline.

  cli        options -> params of a temporary git + DVC project copy (tlpipe.testing) -> results
  synthetic  the generated dataset (--generate N)
  commands   commands in the copy, timed line by line, with their peak RSS
  measure    the measurements: pipeline, no-op, one-head change, floor, usual approach, peak RSS
  machine    what it ran on: setup, CPU, versions
  targets    the issue's targets, pass or fail
  markdown   benchmark.md
"""
