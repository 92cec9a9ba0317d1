"""Decoding batches of image files in worker processes, the pixels handed back through shared memory.

Pillow holds the GIL for much of each image (opening, EXIF, mode conversions), so decoding
threads do not scale: measured on 2 cores, 64 px PNGs, one numpy_function per image in
tf.data decoded at a quarter of one core's serial rate. Worker processes do scale, but
pickling the pixels back through a pipe costs the parent more than decoding them at
224 px; so each worker writes its batch into a shared-memory block that the parent copies
out. The blocks are the parent's, made once and reused: a new block per batch had every
page of it faulted in and zeroed twice, once in each process (measured at 224 px, 2 cores:
8 ms of each 23 ms batch; batches from 2 threads 2,100-2,700 img/s, with reused blocks
3,500-3,800, one core's serial rate being 2,200). The workers run
tlpipe.data.images.load_listed_rgb (load_rgb, the decoder the split stage validated with):
the pixels are the same as decoding in the parent.
"""

import atexit
import ctypes
import math
import multiprocessing
import os
import queue
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from tlpipe.data.images import load_listed_rgb
from tlpipe.data.shifts import shift_image
from tlpipe.errors import UserError

_pool: ProcessPoolExecutor | None = None
_free_blocks: queue.SimpleQueue = queue.SimpleQueue()  # the parent's blocks that no batch is using
_blocks: dict[str, SharedMemory] = {}  # every block the parent made, by name; unlinked at exit
_attached: dict[str, SharedMemory] = {}  # in a worker: the parent's blocks it has mapped, by name
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def usable_cores() -> int:
    """The cores this process may run on (its affinity), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_workers() -> None:
    """Start the worker processes now, from the calling (main) thread, not from a tf.data thread
    on the first batch: a forked worker's parent-death signal follows the thread that forked it."""
    _workers().submit(int).result()  # a fork-context pool forks all its workers on the first task


def decode_batch(root: Path, paths: list[str], size: int, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The images root/<path> as one uint8 array (n, size, size, 3), decoded by the worker processes;
    each moved by `shift` (dx, dy) pixels where it is not (0, 0) (tlpipe.data.shifts.shift_image)."""
    shape = (len(paths), size, size, 3)
    workers = _workers()  # first: it starts the resource tracker that the new block registers with
    block = _take_block(math.prod(shape))
    try:
        # With the working directory: the workers keep the one they were started in.
        workers.submit(_decode_into_shared_memory, os.getcwd(), str(root), paths, size, shift, block.name).result()
        return np.ndarray(shape, np.uint8, buffer=block.buf).copy()
    finally:
        _free_blocks.put(block)  # only now may another batch use it: a block serves one batch at a time


def _take_block(size: int) -> SharedMemory:
    """A block of at least `size` bytes that no batch is using: a free one, else a new one."""
    try:
        block = _free_blocks.get_nowait()
    except queue.Empty:
        block = None
    if block is not None and block.size < size:  # made for smaller batches
        del _blocks[block.name]
        block.unlink()
        block = None
    if block is None:
        block = _new_block(size)
        _blocks[block.name] = block
    return block


def _new_block(size: int) -> SharedMemory:
    """A new shared-memory block of `size` bytes, its memory reserved now: a tmpfs (/dev/shm) grows
    page by page as the block is written, and a page that no longer fits kills its writer (SIGBUS)."""
    block = SharedMemory(create=True, size=size)
    if hasattr(os, "posix_fallocate"):  # Linux; the block's file descriptor is SharedMemory's own
        try:
            os.posix_fallocate(block._fd, 0, size)
        except OSError as error:
            block.close()
            block.unlink()
            raise UserError(f"/dev/shm: no room for a batch of decoded images ({size / 2**20:.1f} MiB; "
                            f"{os.strerror(error.errno)}): lower trunk.batch_size or trunk.image_size, or give "
                            "this machine or container more shared memory (docker run --shm-size=1g)") from None
    return block


@atexit.register
def _unlink_blocks() -> None:
    for block in list(_blocks.values()):
        block.unlink()  # the name only: a tf.data thread still reading a block keeps its mapping
    _blocks.clear()


def _forget_the_parents_blocks() -> None:
    """In a forked child (a worker among them): the blocks are the parent's to use and unlink."""
    global _free_blocks
    _blocks.clear()
    _free_blocks = queue.SimpleQueue()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents_blocks)


def _workers() -> ProcessPoolExecutor:
    """One pool per process, of one worker per usable core, started on first use."""
    global _pool
    if _pool is None:
        # fork where it is safe (Linux): the workers start at once, with the modules loaded.
        # Elsewhere spawn, which imports the stage's main module (and TensorFlow) in each worker.
        method = "fork" if sys.platform == "linux" else "spawn"
        # A worker that maps one of the parent's blocks registers it with a resource tracker, which
        # unlinks what it holds when it ends: that must be the parent's own (which also unlinks the
        # blocks should the parent be killed), not one of the worker's, started before the workers.
        # Quietly: its warning about blocks it freed would follow a stopped stage's one error line.
        previous = os.environ.get("PYTHONWARNINGS")
        os.environ["PYTHONWARNINGS"] = "ignore::UserWarning:multiprocessing.resource_tracker"
        try:
            resource_tracker.ensure_running()
        finally:
            if previous is None:
                del os.environ["PYTHONWARNINGS"]
            else:
                os.environ["PYTHONWARNINGS"] = previous
        _pool = ProcessPoolExecutor(usable_cores(), mp_context=multiprocessing.get_context(method),
                                    initializer=_start_worker, initargs=(os.getpid(),))
        atexit.register(_pool.shutdown, cancel_futures=True)
    return _pool


def _start_worker(parent: int) -> None:
    """In a worker: Ctrl-C is the parent's to handle, and the worker dies with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        # A forked worker holds the pool's pipes open itself, so it would never see the parent go
        # (killed, or ended by os._exit) and would keep the parent's stdout open for ever.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)


def _decode_into_shared_memory(directory: str, root: str, paths: list[str], size: int, shift: tuple[int, int],
                               block_name: str) -> None:
    """In a worker: decode the batch, root/<path> in `directory`, shifted by `shift`, into the parent's block `block_name`."""
    os.chdir(directory)  # root relative, as a bad image's error names it
    if block_name not in _attached:
        _attached[block_name] = SharedMemory(name=block_name)
    images = np.ndarray((len(paths), size, size, 3), np.uint8, buffer=_attached[block_name].buf)
    for index, path in enumerate(paths):
        image = load_listed_rgb(Path(root) / path, size)
        images[index] = shift_image(image, *shift) if shift != (0, 0) else image
