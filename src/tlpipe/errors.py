"""One-line errors for the user, and the entry point wrapper every stage uses."""

import errno
import functools
import gc
import os
import signal
import sys
from collections.abc import Callable

INTERRUPTED = "interrupted; nothing was written; run dvc repro again"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C

# What to do about an OSError, by errno; anything else: check the file.
OS_ERROR_REMEDIES = {
    errno.ENOSPC: "free space on the file system that holds it",
    errno.EDQUOT: "free space within your disk quota there",
    errno.EACCES: "fix its permissions, or those of its folder, for this user",
    errno.EPERM: "fix its permissions, or those of its folder, for this user",
    errno.EROFS: "its file system is mounted read-only: work in a writable copy",
}


class UserError(Exception):
    """A problem the user can fix: bad params, bad input files, no network.

    The message is one line that names the file or parameter and says what to do.
    """


# UserErrors raised inside a function TensorFlow calls (tf.numpy_function in a tf.data map):
# TensorFlow turns any exception there into an UnknownError of its own, text and traceback only.
_raised_inside_tensorflow: list[UserError] = []


def keeping_user_errors(function: Callable) -> Callable:
    """`function`, for TensorFlow to call: a UserError it raises is kept, for run_stage to report in
    place of the error TensorFlow makes of it."""

    @functools.wraps(function)
    def call(*args):
        try:
            return function(*args)
        except UserError as error:
            _raised_inside_tensorflow.append(error)
            raise

    return call


def summary(error: BaseException) -> str:
    """An exception as a short single line: its type and the start of its message."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"


def os_error_line(error: OSError) -> str:
    """One line for an OSError: the file, the system's reason, what to do."""
    where = f"{error.filename}: " if error.filename is not None else ""
    reason = error.strerror or str(error)
    remedy = OS_ERROR_REMEDIES.get(error.errno, "check it")
    return f"{where}{reason}; {remedy}, then run dvc repro again"


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(). A UserError, a Ctrl-C (KeyboardInterrupt) or an OSError (disk full,
    permissions) becomes one `error:` line on stderr and exit status 2 (130 for Ctrl-C)."""
    interrupts = []

    def interrupt(signum, frame):
        interrupts.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        main()
        # The interpreter's last garbage collection, over all that TensorFlow and Keras allocated, took
        # 1.2-1.6 s of every stage's exit (2 cores); frozen, those objects are freed by the process's end.
        gc.freeze()
    except BaseException as error:
        # After a Ctrl-C, whatever surfaces is its doing: inside some C code it arrives as another
        # exception (numpy.fromfile: TypeError), which a loader may even report as a corrupt file.
        if interrupts or isinstance(error, KeyboardInterrupt):
            _exit(f"error: {INTERRUPTED}", EXIT_INTERRUPTED)
        if _raised_inside_tensorflow:
            _exit(f"error: {_raised_inside_tensorflow[0]}", 2)
        if isinstance(error, UserError):
            _exit(f"error: {error}", 2)
        if isinstance(error, OSError):
            _exit(f"error: {os_error_line(error)}", 2)
        raise


def _exit(line: str, status: int) -> None:
    print(line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: TensorFlow's and Keras' exit handlers can print tracebacks of their own
    # (threads stopped midway), burying the one line. Each `with` above has cleaned up by now.
    os._exit(status)
