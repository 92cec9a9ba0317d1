"""The whole session's stage server (tlpipe.launcher) is its own: not one a user's `dvc repro` started, nor
left to them. Every stage the tests run through scripts/stage shares it; it is stopped at the end."""

import os

import pytest

from tlpipe import launcher


@pytest.fixture(scope="session", autouse=True)
def own_stage_server():
    os.environ[launcher.TAG] = f"tests-{os.getpid()}"
    yield
    launcher.stop()
