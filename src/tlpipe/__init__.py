"""tlpipe: a DVC transfer-learning pipeline comparing Flatten and GAP heads on a frozen trunk."""

import os

# Stages run as `python -m tlpipe.<stage>`, which imports this package first: quiet
# TensorFlow's C++ start-up messages before any module imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
