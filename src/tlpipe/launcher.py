"""Run a stage module as `python -m` would, the TensorFlow stages forked from a server that holds TensorFlow imported.

`import tensorflow, keras` costs about 4.5 s per process, and a `dvc repro` runs at least three
TensorFlow stages (features, one train stage per head), each in a process of its own. So, like the
Gradle daemon or the Bazel server, the first TensorFlow stage starts a stage server: a process that
imports TensorFlow and Keras once, then forks one child per stage, which runs the stage with the
caller's arguments, working directory, environment, umask, CPU affinity, sys.path and stdin/stdout/
stderr (passed over a Unix socket). The caller waits for the child, forwards its signals to it (Ctrl-C
stops the stage as it stops a plain process) and exits with its status.

What stays the same as a plain process: the stage's own modules (tlpipe included) are imported afresh
in each child from the caller's sys.path, so an edited source file counts at once; only third-party
modules are preloaded. A server serves only callers that would import the same ones: same Python,
same cgroup (a batch job's), the same variables those modules read when imported (TF_*, KERAS_*,
CUDA_*, PYTHON*, locale...). It stops itself when a preloaded module's file changes on disk (an
upgrade), and after TLPIPE_STAGE_SERVER_IDLE seconds (default 600) without a stage.

TLPIPE_STAGE_SERVER=off runs every stage in its own process, as before. Linux only (elsewhere the
stages always run in their own process): it needs fork and abstract Unix sockets. Stop a server now
with `python -m tlpipe.launcher --stop`.
"""

import atexit
import gc
import hashlib
import importlib
import importlib.machinery
import io
import json
import os
import runpy
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from tlpipe.errors import EXIT_INTERRUPTED, INTERRUPTED

SWITCH = "TLPIPE_STAGE_SERVER"  # "off": no server
TAG = "TLPIPE_STAGE_SERVER_TAG"  # any value: a server apart from the others (the tests', the benchmark's)
IDLE = "TLPIPE_STAGE_SERVER_IDLE"  # seconds a server waits for a stage before it stops
DEFAULT_IDLE_S = 600

# The data stages need no TensorFlow: they run in this process. Where they run, TensorFlow stages
# follow (a new dataset is split, then featurised), so fetch and split start the server for them.
IN_PROCESS = ("tlpipe.stages.source", "tlpipe.stages.fetch", "tlpipe.stages.split")
STARTS_THE_SERVER = ("tlpipe.stages.fetch", "tlpipe.stages.split")

# What the TensorFlow stages import but tlpipe. Once TensorFlow and Keras are in, the rest costs about
# 0.5 s, most of it dvc.repo (which DVCLive imports to find the repo).
PRELOADED = ("tensorflow", "keras", "pandas", "pydantic", "yaml", "PIL.Image", "sklearn.metrics", "scipy.stats",
             "dvclive", "dvc.repo")

# The environment a preloaded module may read when imported: a server serves only callers that agree on it.
KEY_PREFIXES = ("TF_", "KERAS_", "CUDA_", "XLA_", "NVIDIA_", "OMP_", "OPENBLAS_", "MKL_", "KMP_", "ONEDNN_",
                "DNNL_", "MALLOC_", "LD_", "LC_", "MPL", "PYTHON", "TLPIPE_STAGE_SERVER")
KEY_NAMES = ("HOME", "LANG", "LANGUAGE", "TMPDIR")
NOT_KEY = ("PYTHONPATH", "PYTHONUNBUFFERED")  # the child takes sys.path and buffering from its caller
UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class ServerUnavailable(Exception):
    """No server could take the stage: it runs in the caller's process instead."""


def enabled() -> bool:
    return sys.platform == "linux" and os.environ.get(SWITCH, "on").lower() not in ("off", "0", "false", "no")


def address() -> str:
    """The server's abstract socket name (no file to go stale): this user's, for this Python and environment."""
    environment = {name: value for name, value in os.environ.items()
                   if (name.startswith(KEY_PREFIXES) or name in KEY_NAMES) and name not in NOT_KEY}
    with open("/proc/self/cgroup", encoding="utf-8") as cgroup:
        key = {"python": os.path.realpath(sys.executable), "version": sys.version, "environment": environment,
               "cgroup": cgroup.read(), "server": _file_stamp(__file__)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return f"\0tlpipe-stage-server-{os.getuid()}-{digest}"


def _file_stamp(path: str) -> list[int]:
    status = os.stat(path)
    return [status.st_mtime_ns, status.st_size]


# --- the caller -----------------------------------------------------------------------------------------

def launch(module: str, arguments: list[str]) -> int:
    """Run `module` with `arguments` as `python -m` would; its exit status."""
    if enabled() and module not in IN_PROCESS:
        try:
            return _run_served(module, arguments)
        except ServerUnavailable as why:
            print(f"note: {why}; {module} runs in a process of its own", file=sys.stderr, flush=True)
    elif enabled() and module in STARTS_THE_SERVER:
        _start_server_unless_running()
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


def _run_served(module: str, arguments: list[str]) -> int:
    connection = _connect(start=True)
    # The caller's signals go to the stage; those that come before the server says which process it is, on its word.
    child, held = None, []

    def forward(number, frame):
        if child is None:
            held.append(number)
        else:
            os.kill(child, number)

    for number in FORWARDED:
        signal.signal(number, forward)
    with connection:
        umask = os.umask(0)
        os.umask(umask)
        request = {"module": module, "arguments": arguments, "cwd": os.getcwd(), "environment": dict(os.environ),
                   "path": sys.path, "umask": umask, "affinity": sorted(os.sched_getaffinity(0))}
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        replies = connection.makefile("rb")
        try:
            started = _reply(replies)
            if "stale" in started:
                raise ServerUnavailable(f"the stage server stopped: {started['stale']}")
        except ServerUnavailable:  # the stage runs here after all: its signals too
            if signal.SIGINT in held:  # a Ctrl-C came first: the stage never starts, and says so as a stage would
                print(f"error: {INTERRUPTED}", file=sys.stderr, flush=True)
                sys.exit(EXIT_INTERRUPTED)
            _default_signal_handlers()
            for number in held:
                os.kill(os.getpid(), number)
            raise
        child = started["pid"]
        for number in held:
            os.kill(child, number)
        try:
            status = _reply(replies)["status"]
        except ServerUnavailable:
            return _lost(module, child)
    if os.WIFSIGNALED(status):  # die of the same signal, as the stage did
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


def _default_signal_handlers() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in FORWARDED[1:]:
        signal.signal(number, signal.SIG_DFL)


def _lost(module: str, child: int) -> int:
    """The server went (killed) while its child ran the stage: wait for the child, whose status is lost."""
    try:
        select.select([os.pidfd_open(child)], [], [])
    except ProcessLookupError:
        pass
    print(f"error: the stage server stopped while {module} ran (pid {child}), so its exit status is unknown: "
          f"run dvc repro again", file=sys.stderr, flush=True)
    return 1


def _reply(replies: io.BufferedReader) -> dict:
    line = replies.readline()
    if not line:
        raise ServerUnavailable("the stage server closed the connection (it failed to start, or was stopped)")
    return json.loads(line)


def _connect(start: bool) -> socket.socket:
    """A connection to this environment's server, started first where `start` and none runs."""
    name = address()
    deadline = None
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(name)
        except ConnectionRefusedError:
            connection.close()
            if not start:
                raise ServerUnavailable("no stage server runs") from None
            if deadline is None:
                _spawn_server()
                deadline = time.monotonic() + 30
            elif time.monotonic() > deadline:
                raise ServerUnavailable("the stage server did not start within 30 s") from None
            time.sleep(0.01)
            continue
        _check_same_user(connection)
        return connection


def _start_server_unless_running() -> None:
    try:
        _connect(start=False).close()  # the server ignores a connection that sends nothing
    except ServerUnavailable:
        _spawn_server()


def _spawn_server() -> None:
    # Its own session, no terminal and none of the caller's pipes: it outlives the caller, and whoever reads
    # the caller's output (DVC, a test) must not wait for it. cwd "/": it must not hold a project's folder.
    subprocess.Popen([sys.executable, "-m", "tlpipe.launcher", "--serve"], cwd="/", start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"tlpipe: started a stage server holding TensorFlow imported for the next stages; it stops after "
          f"{_idle_seconds():g} s unused ({SWITCH}=off: none)", file=sys.stderr, flush=True)


def _check_same_user(connection: socket.socket) -> None:
    """Abstract sockets have no file permissions: serve, and be served by, this user only."""
    _, uid, _ = UCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
    if uid != os.getuid():
        connection.close()
        raise ServerUnavailable(f"the stage server's socket is held by user {uid}")


def _idle_seconds() -> float:
    return float(os.environ.get(IDLE, DEFAULT_IDLE_S))


def server_pid() -> int | None:
    """The process id of this environment's server, if one runs."""
    try:
        connection = _connect(start=False)
    except ServerUnavailable:
        return None
    with connection:
        pid, _, _ = UCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
    return pid


def stop() -> bool:
    """Stop this environment's server; whether one ran."""
    try:
        connection = _connect(start=False)
    except ServerUnavailable:
        return False
    with connection:
        connection.sendall(json.dumps({"stop": True}).encode() + b"\n")
        connection.recv(1)  # until it closes
    return True


# --- the server -----------------------------------------------------------------------------------------

class Server:
    """Accepts stages, forks a child for each, reports each child's exit status to its caller."""

    def __init__(self, name: str):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(name)  # OSError (address in use) where another server won the race
        self.listener.listen(64)
        self.idle_seconds = _idle_seconds()
        self.children: dict[int, socket.socket | None] = {}  # pid -> its caller's connection, None once it closed
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        # SIGCHLD wakes the selector, so that an exit status reaches its caller at once.
        self.wakeup, wakeup_writer = socket.socketpair()
        self.wakeup_writer = wakeup_writer
        for end in (self.wakeup, wakeup_writer):
            end.setblocking(False)
        signal.set_wakeup_fd(wakeup_writer.fileno())
        signal.signal(signal.SIGCHLD, lambda number, frame: None)
        self.selector.register(self.wakeup, selectors.EVENT_READ)
        self.preloaded: dict[str, tuple[str, list[int]]] = {}  # top-level package -> its file, stamp
        self.accepting = True

    def preload(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except Exception:  # the stage that needs it will say what is wrong, in its caller's terminal
            return
        package = module.partition(".")[0]
        origin = sys.modules[package].__file__
        self.preloaded[package] = (origin, _file_stamp(origin))

    def serve(self) -> dict | None:
        """Serve until idle or stopped (None), or, in a forked child, the request it is to run."""
        idle_since = time.monotonic()
        while True:
            timeout = None if self.children else max(0.0, idle_since + self.idle_seconds - time.monotonic())
            events = self.selector.select(timeout)
            if not events:  # idle for idle_seconds
                return None
            for key, _ in events:
                if key.fileobj is self.listener:
                    request = self.accept()
                    if request is not None:
                        return request  # in the child
                    if not self.accepting and not self.children:
                        return None
                elif key.fileobj is self.wakeup:
                    self.reap()
                else:
                    self.caller_gone(key.fileobj)
            if not self.children:
                if not self.accepting:
                    return None
                idle_since = time.monotonic()

    def stop_accepting(self) -> None:
        """Take no more stages; those running finish, and report to their callers."""
        self.accepting = False
        self.selector.unregister(self.listener)
        self.listener.close()

    def accept(self) -> dict | None:
        """Take one connection: in a forked child, its request; else None."""
        connection, _ = self.listener.accept()
        try:
            _check_same_user(connection)
            connection.settimeout(10)
            message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
            while message and not message.endswith(b"\n"):
                message += connection.recv(1 << 20)
        except (ServerUnavailable, OSError):
            connection.close()
            return None
        if not message:  # a probe: is a server running?
            connection.close()
            return None
        request = json.loads(message)
        stale = None if request.get("stop") else stale_reason(self.preloaded, request["path"])
        if request.get("stop") or stale:
            for fd in fds:
                os.close(fd)
            if stale:
                connection.sendall(json.dumps({"stale": stale}).encode() + b"\n")
            connection.close()
            self.stop_accepting()
            return None
        gc.freeze()  # the child's collections then leave the server's objects, and their shared pages, alone
        pid = os.fork()
        if pid == 0:
            self.close_in_child()
            connection.close()
            request["fds"] = fds
            return request
        for fd in fds:
            os.close(fd)
        connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        connection.setblocking(False)
        self.children[pid] = connection
        self.selector.register(connection, selectors.EVENT_READ, pid)
        return None

    def reap(self) -> None:
        try:
            while self.wakeup.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            if connection is not None:  # None: its caller is gone
                self.selector.unregister(connection)
                try:
                    connection.setblocking(True)
                    connection.sendall(json.dumps({"status": status}).encode() + b"\n")
                except OSError:
                    pass  # its caller is gone
                connection.close()

    def caller_gone(self, connection: socket.socket) -> None:
        """The caller closed its end before its child exited (killed): stop the child, as a plain stage dies with it."""
        pid = self.selector.get_key(connection).data
        self.selector.unregister(connection)
        connection.close()
        self.children[pid] = None  # reaped later, as any child
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close_in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for connection in self.children.values():
            if connection is not None:
                connection.close()
        self.selector.close()
        for end in (self.listener, self.wakeup, self.wakeup_writer):
            end.close()  # the listener may be closed already: closing again does nothing


def stale_reason(preloaded: dict[str, tuple[str, list[int]]], path: list[str]) -> str | None:
    """Why the `preloaded` packages (name -> file, stamp) are not those a caller with sys.path `path` would import."""
    for name, (origin, stamp) in preloaded.items():
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin != origin:
            return f"{name} would be imported from {spec.origin if spec else 'nowhere'}, not {origin}"
        try:
            if _file_stamp(origin) != stamp:
                return f"{origin} changed since the server imported it"
        except OSError:
            return f"{origin} is gone"
    return None


def run_request(request: dict) -> None:
    """In a forked child: become the caller's process, run its module as `python -m` would, and exit."""
    for target, fd in enumerate(request["fds"]):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.sched_setaffinity(0, request["affinity"])
    os.environ.clear()
    os.environ.update(request["environment"])
    _reopen_standard_streams(unbuffered=bool(os.environ.get("PYTHONUNBUFFERED")))
    sys.path[:] = request["path"]
    _default_signal_handlers()
    if "numpy" in sys.modules:  # a fresh process's global generator is seeded from the OS, not inherited
        sys.modules["numpy"].random.seed()
    sys.argv = [request["module"], *request["arguments"]]
    interrupted = False
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException as error:  # as the interpreter reports an uncaught one
        sys.excepthook(type(error), error, error.__traceback__)
        interrupted, status = isinstance(error, KeyboardInterrupt), 1
    # Python's own shutdown up to the flush of stdout and stderr: non-daemon threads joined, atexit
    # handlers run. Then no teardown of every module TensorFlow loaded: about 0.35 s a stage, for nothing.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # die of SIGINT, as the interpreter does after an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def _exit_status(code: object) -> int:
    """SystemExit's code as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _reopen_standard_streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr on the caller's descriptors, buffered as Python buffers them at start-up."""
    encoding = sys.stdout.encoding
    sys.stdin = sys.__stdin__ = open(0, "r", encoding=encoding, closefd=False)
    output = io.open(1, "wb", buffering=0 if unbuffered else -1, closefd=False)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(output, encoding=encoding, line_buffering=os.isatty(1),
                                                   write_through=unbuffered)
    errors = io.open(2, "wb", buffering=0 if unbuffered else -1, closefd=False)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(errors, encoding=encoding, errors="backslashreplace",
                                                   line_buffering=True, write_through=unbuffered)


def serve() -> None:
    try:
        server = Server(address())
    except OSError:
        return  # another server took the address first
    for module in PRELOADED:
        server.preload(module)
    # The stages import tlpipe afresh from their caller's sys.path (it may be another checkout, or edited).
    for name in [name for name in sys.modules if name == "tlpipe" or name.startswith("tlpipe.")]:
        del sys.modules[name]
    request = server.serve()
    if request is not None:
        run_request(request)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    elif sys.argv[1:] == ["--stop"]:
        print("stopped the stage server" if stop() else "no stage server runs for this environment")
    else:
        sys.exit(launch(sys.argv[1], sys.argv[2:]))
