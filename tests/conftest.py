"""The whole session's stage server (tlpipe.launcher) is its own: not one a user's `dvc repro` started, nor
left to them. Every stage the tests run through scripts/stage shares it; it is stopped at the end.

A session may start more than one: a server serves only one environment, and the session's changes during
its run (imported libraries set KMP_* and TF_CPP_MIN_LOG_LEVEL, a test sets TLPIPE_STAGE_SERVER) give
later stages another. So at the end every server with the session's tag is stopped, not only the one the
final environment reaches."""

import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from tlpipe import launcher


@pytest.fixture(scope="session", autouse=True)
def own_stage_server():
    tag = f"tests-{os.getpid()}"
    os.environ[launcher.TAG] = tag
    yield
    launcher.stop()
    for pid in _servers_tagged(tag):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile (the one launcher.stop() stopped)
            os.kill(pid, signal.SIGTERM)


def _servers_tagged(tag: str) -> list[int]:
    """The stage servers running with `tag`, by their command lines and environments."""
    servers = []
    for process in Path("/proc").iterdir() if sys.platform == "linux" else ():  # servers run on Linux only
        try:
            serving = b"tlpipe.launcher\0--serve" in (process / "cmdline").read_bytes()
            tagged = f"{launcher.TAG}={tag}".encode() in (process / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, one that ended, or another user's
            continue
        if serving and tagged:
            servers.append(int(process.name))
    return servers
