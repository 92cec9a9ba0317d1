"""tlpipe.launcher: a stage forked from the stage server runs as `python -m` would run it in a process of its own,
while TensorFlow is imported once. Real servers, real signals; each test's module is a small program of its own."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from builders import REPO
from tlpipe import launcher
from tlpipe.errors import INTERRUPTED

# What a stage sees of its process, as JSON on stdout; with `wait`, it says "ready" and sleeps until stopped.
PROBE = """
import json, os, sys, time
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "variable": os.environ.get("PROBE_VARIABLE"),
                  "umask": os.umask(0o022), "pid": os.getpid(), "ppid": os.getppid(), "version": VERSION,
                  "tensorflow": "tensorflow" in sys.modules, "tlpipe": "tlpipe" in sys.modules}), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1:2] == ["wait"]:
    try:
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
if sys.argv[1:2] == ["fail"]:
    raise ValueError("the stage failed")
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("modules")
    write_probe(folder, 1)
    return folder


def write_probe(folder: Path, version: int) -> None:
    path = folder / "probe.py"
    path.write_text(f"VERSION = {version}\n" + PROBE)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + version))  # a new mtime, for the bytecode cache


@pytest.fixture(scope="module")
def environment(modules) -> dict[str, str]:
    """The callers' environment: this module's own server, the probe and tlpipe importable."""
    return {**os.environ, "TLPIPE_STAGE_SERVER_TAG": f"test-launcher-{os.getpid()}",
            "PYTHONPATH": os.pathsep.join([str(modules), str(REPO / "src")])}


@pytest.fixture(scope="module", autouse=True)
def stop_servers(environment):
    yield
    for tag in ("", "-other", "-idle"):
        subprocess.run([sys.executable, "-m", "tlpipe.launcher", "--stop"], capture_output=True,
                       env={**environment, "TLPIPE_STAGE_SERVER_TAG": environment["TLPIPE_STAGE_SERVER_TAG"] + tag})


def launch(environment: dict, *arguments: str, cwd: Path = REPO, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlpipe.launcher", "probe", *arguments], cwd=cwd,
                          env={**environment, **variables}, capture_output=True, text=True, timeout=120)


def seen(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.splitlines()[0])


def start(environment: dict, *arguments: str) -> tuple[subprocess.Popen, dict]:
    """A waiting probe, once it is ready, and what it saw."""
    process = subprocess.Popen([sys.executable, "-m", "tlpipe.launcher", "probe", "wait", *arguments],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = json.loads(process.stdout.readline())
    assert process.stdout.readline() == "ready\n"
    return process, probe


def test_a_served_stage_sees_what_a_process_of_its_own_would(environment, tmp_path):
    served = launch(environment, "3", "an argument", cwd=tmp_path, PROBE_VARIABLE="a value")
    alone = launch(environment, "3", "an argument", cwd=tmp_path, PROBE_VARIABLE="a value", TLPIPE_STAGE_SERVER="off")
    assert (served.returncode, alone.returncode) == (3, 3)
    served_saw, alone_saw = seen(served), seen(alone)
    assert served_saw["ppid"] != alone_saw["ppid"]  # forked by the server, not by its caller
    assert not served_saw["tlpipe"]  # the stage imports tlpipe afresh, from its own sys.path
    for probe in (served_saw, alone_saw):
        del probe["pid"], probe["ppid"], probe["tensorflow"], probe["tlpipe"]
    assert served_saw == alone_saw == {"argv": ["3", "an argument"], "cwd": str(tmp_path), "variable": "a value",
                                       "umask": 0o022, "version": 1}
    assert served.stderr.endswith("to stderr\n")


def test_the_server_holds_tensorflow_imported_and_forks_a_new_process_per_stage(environment):
    first, second = seen(launch(environment)), seen(launch(environment))
    assert first["tensorflow"] and second["tensorflow"]
    assert first["ppid"] == second["ppid"] and first["pid"] != second["pid"]
    assert not seen(launch(environment, TLPIPE_STAGE_SERVER="off"))["tensorflow"]


def test_an_edited_module_runs_as_edited(environment, modules):
    assert seen(launch(environment))["version"] == 1
    write_probe(modules, 2)
    try:
        assert seen(launch(environment))["version"] == 2
    finally:
        write_probe(modules, 1)


def test_an_uncaught_error_prints_its_traceback_and_fails_as_python_does(environment):
    served = launch(environment, "fail")
    assert served.returncode == 1
    assert served.stderr.rstrip().splitlines()[-1] == "ValueError: the stage failed"
    assert "Traceback (most recent call last):" in served.stderr


def test_ctrl_c_reaches_the_stage(environment):
    process, _ = start(environment)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    assert (process.returncode, stdout) == (130, "interrupted\n")


def test_a_signal_that_kills_the_stage_kills_its_caller_alike(environment):
    process, probe = start(environment)
    os.kill(probe["pid"], signal.SIGTERM)  # the stage itself, not its caller
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM


def test_a_killed_caller_takes_its_stage_with_it(environment):
    process, probe = start(environment)
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{probe['pid']}").exists():
        assert time.monotonic() < deadline, "the stage outlived its caller"
        time.sleep(0.05)


def test_a_ctrl_c_before_a_stale_server_answers_ends_the_caller_in_one_line(environment, tmp_path):
    # The caller's working directory, first on its sys.path, holds a yaml package of its own: not the one the
    # server preloaded, so the server answers "stale" and stops, and the stage would run in the caller instead.
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "__init__.py").write_text("")
    server = seen(launch(environment))["ppid"]
    os.kill(server, signal.SIGSTOP)  # the caller connects (the listen backlog), then waits for an answer
    try:
        process = subprocess.Popen([sys.executable, "-m", "tlpipe.launcher", "probe"], cwd=tmp_path, env=environment,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until_it_catches(process.pid, signal.SIGTERM)  # its forwarding handlers are set: it holds signals
        process.send_signal(signal.SIGINT)
    finally:
        os.kill(server, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout, stderr) == (130, "", f"error: {INTERRUPTED}\n")


def wait_until_it_catches(pid: int, number: int) -> None:
    """Until process `pid` has a handler for signal `number` (its SigCgt mask in /proc)."""
    deadline = time.monotonic() + 30
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (number - 1)):
            return
        assert time.monotonic() < deadline, f"process {pid} set no handler for signal {number}"
        time.sleep(0.01)


def test_another_environment_gets_another_server(environment):
    one = seen(launch(environment))["ppid"]
    other = seen(launch(environment, TLPIPE_STAGE_SERVER_TAG=environment["TLPIPE_STAGE_SERVER_TAG"] + "-other"))["ppid"]
    ignored = seen(launch(environment, PROBE_VARIABLE="not read on import"))["ppid"]
    assert one != other and one == ignored


def test_an_idle_server_stops_itself(environment):
    idle = {**environment, "TLPIPE_STAGE_SERVER_TAG": environment["TLPIPE_STAGE_SERVER_TAG"] + "-idle",
            "TLPIPE_STAGE_SERVER_IDLE": "1"}
    server = seen(launch(idle))["ppid"]
    deadline = time.monotonic() + 60
    while Path(f"/proc/{server}").exists():
        assert time.monotonic() < deadline, "the idle server did not stop"
        time.sleep(0.1)
    stopped = subprocess.run([sys.executable, "-m", "tlpipe.launcher", "--stop"], env=idle, capture_output=True, text=True)
    assert stopped.stdout == "no stage server runs for this environment\n"


def test_a_changed_preloaded_package_is_stale(tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    preloaded = {"package": (str(package / "__init__.py"), launcher._file_stamp(str(package / "__init__.py")))}
    assert launcher.stale_reason(preloaded, [str(tmp_path)]) is None
    assert launcher.stale_reason(preloaded, [str(tmp_path / "elsewhere")]) == (
        f"package would be imported from nowhere, not {package / '__init__.py'}")
    os.utime(package / "__init__.py", ns=(0, 0))
    assert launcher.stale_reason(preloaded, [str(tmp_path)]) == f"{package / '__init__.py'} changed since the server imported it"
