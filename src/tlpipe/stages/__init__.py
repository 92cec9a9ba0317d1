"""The pipeline's stages, one module each, run as `python -m tlpipe.stages.<stage>` (or `tlpipe <stage>`).

A stage only orchestrates: it reads params through tlpipe.config, calls the library
(tlpipe.data, tlpipe.model, tlpipe.cache, tlpipe.metrics, tlpipe.reporting) and writes
the outputs dvc.yaml declares. No stage imports another.
"""
