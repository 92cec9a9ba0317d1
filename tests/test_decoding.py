"""tlpipe.data.decoding: the parent's shared-memory blocks, reused batch after batch, are gone once it has ended,
however it ended, and a forked child leaves them to the parent. Real processes, real /dev/shm."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from builders import REPO, make_image_folder
from tlpipe.data.decoding import decode_batch
from tlpipe.data.images import load_rgb

SIZE = 24
SHM = Path("/dev/shm")
# The decoding processes' environment: this checkout's tlpipe; unshare, sh and mount for the small /dev/shm.
ENVIRONMENT = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}

# Decodes two batches of different sizes, prints its blocks' names; then forks a child that runs the module's
# exit handler (sys.exit would also run multiprocessing's, which fails in a fork of a pool's parent), or waits
# to be killed.
DECODER = """
import json, os, sys, time
from pathlib import Path
from tlpipe.data import decoding

root, paths, then = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
decoding.decode_batch(root, paths, 24)
decoding.decode_batch(root, paths[:2], 24)
print(json.dumps(sorted(decoding._blocks)), flush=True)
if then == "fork":
    child = os.fork()
    if child == 0:
        decoding._unlink_blocks()
        os._exit(0)
    os.waitpid(child, 0)
    print(json.dumps(all(Path("/dev/shm", name).exists() for name in decoding._blocks)), flush=True)
    decoding.decode_batch(root, paths, 24)  # the blocks still serve the parent
if then == "wait":
    time.sleep(120)
"""

pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="POSIX shared memory in /dev/shm (Linux)")


@pytest.fixture
def images(tmp_path) -> tuple[Path, list[str]]:
    return tmp_path, make_image_folder(tmp_path, {"a": 3, "b": 2}, size=13)


def start_decoder(images, then: str) -> tuple[subprocess.Popen, list[str]]:
    root, paths = images
    process = subprocess.Popen([sys.executable, "-c", DECODER, str(root), json.dumps(paths), then],
                               env=ENVIRONMENT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    blocks = json.loads(process.stdout.readline())
    assert blocks and all((SHM / name).exists() for name in blocks)
    return process, blocks


def test_batches_decoded_in_turn_each_hold_their_own_pixels(images):
    # One block serves them in turn: the reversed batch overwrites the first, the short one only part of it.
    root, paths = images
    expected = np.stack([load_rgb(root / path, SIZE) for path in paths])

    first, second, short = decode_batch(root, paths, SIZE), decode_batch(root, paths[::-1], SIZE), decode_batch(root, paths[:2], SIZE)

    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected[::-1])
    np.testing.assert_array_equal(short, expected[:2])


def test_the_blocks_are_gone_after_a_normal_exit_and_a_forked_child_leaves_them_alone(images):
    process, blocks = start_decoder(images, "fork")
    stdout, stderr = process.communicate(timeout=60)

    assert (process.returncode, stdout, stderr) == (0, "true\n", "")  # no handler failed to unlink a block
    assert not any((SHM / name).exists() for name in blocks)


def test_the_blocks_are_gone_after_the_process_is_killed(images):
    process, blocks = start_decoder(images, "wait")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)

    deadline = time.monotonic() + 30  # the resource tracker unlinks them once the workers, too, have died
    while any((SHM / name).exists() for name in blocks):
        assert time.monotonic() < deadline, f"left in {SHM}: {blocks}"
        time.sleep(0.05)



# A stage that decodes one batch of its images, twice over, at 256 px: 1.9 MiB.
BIG_BATCH = """
import json, sys
from pathlib import Path
from tlpipe.data.decoding import decode_batch
from tlpipe.errors import run_stage

run_stage(lambda: decode_batch(Path(sys.argv[1]), json.loads(sys.argv[2]) * 2, 256))
"""


def can_mount_a_small_shm() -> bool:
    return subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount_a_small_shm(), reason="needs unshare --mount (root) for a 1 MiB /dev/shm")
def test_no_room_in_dev_shm_for_a_batch_is_one_line_naming_what_to_change(images):
    root, paths = images
    # In a mount namespace of its own, a 1 MiB /dev/shm: a container's is small too (Docker: 64 MiB).
    in_small_shm = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$@"', "sh"]
    result = subprocess.run([*in_small_shm, sys.executable, "-c", BIG_BATCH, str(root), json.dumps(paths)],
                            env=ENVIRONMENT, capture_output=True, text=True, timeout=60)

    assert (result.returncode, result.stderr) == (2, (
        "error: /dev/shm: no room for a batch of decoded images (1.9 MiB; No space left on device): lower "
        "trunk.batch_size or trunk.image_size, or give this machine or container more shared memory "
        "(docker run --shm-size=1g)\n"))
