"""The features stage's Ray engine (features.engine: ray): the trunk pass spread over a Ray cluster.

Ray Data streams the images through two steps, as Ray's batch-inference guide lays
them out: decoding, in Ray tasks on any CPU of the cluster, and the trunk, in a pool
of actors that each load it once (ActorPoolStrategy), with their own GPU where the
cluster has GPUs. Decoding runs ahead of inference, so the two overlap.

The actors run the very trunk the stage built (weights, output layer, precision):
its .keras file travels through Ray's object store, and tlpipe's own code through
the job's runtime environment, so the workers need neither. They do need the images:
each worker reads root/<path> itself, so root must be the same path on every worker.
Rows carry their manifest index, and come back in that order (checked), for
tlpipe.cache to write exactly what the local engine writes.
"""

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras
import numpy as np

import tlpipe
from tlpipe import runtime
from tlpipe.config import RayConfig
from tlpipe.data.images import load_listed_rgb
from tlpipe.errors import UserError

INSTALL_RAY = "pip install --constraint requirements.lock -e '.[ray]'"
CONNECT_TIMEOUT_S = 5
ROWS_PER_BLOCK_IN_BATCHES = 4  # decoding tasks take this many trunk batches of paths each


class RayTrunkPass:
    """The trunk over lists of image paths on a Ray cluster, feature maps back in the paths' order."""

    def __init__(self, trunk, root: Path, size: int, batch_size: int, settings: RayConfig, seed: int):
        ray = import_ray()
        connect(ray)
        self.ray = ray
        # Ray workers run in their own directories: the images by absolute path.
        self.root, self.size, self.batch_size, self.seed = str(Path(root).resolve()), size, batch_size, seed
        self.actors, self.cpus_per_actor, self.gpus_per_actor = pool_size(
            ray.cluster_resources(), sum(node["Alive"] for node in ray.nodes()), settings,
        )
        with tempfile.TemporaryDirectory() as directory:
            trunk_path = Path(directory) / "trunk.keras"
            trunk.save(trunk_path)
            self.trunk_file = trunk_path.read_bytes()
        # Rows stream out in the order they went in: the cache's rows are the manifest's.
        ray.data.DataContext.get_current().execution_options.preserve_order = True

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        gpus = f", {self.gpus_per_actor:g} GPU each" if self.gpus_per_actor else ""
        return (f"Ray: {self.actors} trunk actors{gpus} on a cluster of "
                f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs")

    def feature_maps(self, paths: Sequence[str]) -> "Rows":
        """The float16 feature maps of root/<path> for each path, in order, to take split by split.

        One pass over every path, rather than one per split: each pass starts the actors anew.
        """
        return Rows(self._batches(paths))

    def dataset(self, paths: Sequence[str]):
        """The Ray Dataset of the paths' feature maps: decoding tasks, then the trunk actors."""
        rows = [{"index": index, "path": str(path)} for index, path in enumerate(paths)]
        blocks = max(1, -(-len(rows) // (self.batch_size * ROWS_PER_BLOCK_IN_BATCHES)))
        return (
            self.ray.data.from_items(rows, override_num_blocks=blocks)
            .map_batches(
                decode_images, fn_kwargs={"root": self.root, "size": self.size}, batch_format="numpy",
                # With the same resources as the actors, Ray would fuse decoding into them, one batch
                # after the other; it never fuses an operator that has a ray_remote_args_fn.
                ray_remote_args_fn=dict,
            )
            .map_batches(
                TrunkActor,
                fn_constructor_kwargs={"trunk_file": self.trunk_file, "seed": self.seed},
                compute=self.ray.data.ActorPoolStrategy(size=self.actors),
                batch_size=self.batch_size,
                batch_format="numpy",
                num_cpus=self.cpus_per_actor,
                num_gpus=self.gpus_per_actor or None,
            )
        )

    def _batches(self, paths: Sequence[str]) -> Iterator[np.ndarray]:
        expected = 0
        for batch in self.dataset(paths).iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            indices = batch["index"]
            if not np.array_equal(indices, np.arange(expected, expected + len(indices))):
                raise RuntimeError(f"Ray returned rows {indices[:3]}... where row {expected} was due")
            expected += len(indices)
            failed = [error for error in batch["error"] if error]
            if failed:
                raise UserError(failed[0])
            yield batch["features"]


class Rows:
    """A stream of row batches, taken `count` rows at a time (a split), whatever the batches' sizes."""

    def __init__(self, batches: Iterator[np.ndarray]):
        self.batches = batches
        self.left_over = None  # rows of the last batch read that belong to the next take

    def take(self, count: int) -> Iterator[np.ndarray]:
        while count > 0:
            batch = self.left_over if self.left_over is not None else next(self.batches, None)
            if batch is None:
                return
            self.left_over = batch[count:] if len(batch) > count else None
            yield batch[:count]
            count -= min(count, len(batch))


def decode_images(batch: dict[str, np.ndarray], root: str, size: int) -> dict[str, np.ndarray]:
    """A Ray Data batch of paths -> the same rows' uint8 RGB images, decoded as the local engine decodes them.

    An image that no longer decodes becomes a black one plus its one-line error, which the driver
    raises: raised here, Ray Data would hand the driver its own traceback instead of the line.
    """
    images, errors = [], []
    for path in batch["path"]:
        try:
            images.append(load_listed_rgb(Path(root) / path, size))
            errors.append("")
        except UserError as error:
            images.append(np.zeros((size, size, 3), np.uint8))
            errors.append(str(error))
    return {"index": batch["index"], "image": np.stack(images), "error": np.array(errors)}


class TrunkActor:
    """One actor of the pool: loads the trunk once, then runs it on every batch it is given."""

    def __init__(self, trunk_file: bytes, seed: int):
        runtime.setup(seed)  # GPU memory as needed: actors may share a GPU (gpus_per_actor < 1)
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "trunk.keras"
            path.write_bytes(trunk_file)
            self.trunk = keras.models.load_model(path)
        self.trunk.compile(jit_compile=False)  # as the local engine: XLA slows the trunk pass on CPU

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        features = self.trunk.predict_on_batch(batch["image"].astype(np.float32))
        return {"index": batch["index"], "features": np.asarray(features, dtype=np.float16), "error": batch["error"]}


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray.data is a subpackage: imported for its attribute)
    except ImportError:
        raise UserError(f"features.engine = ray: Ray is not installed; {INSTALL_RAY}") from None
    return ray


def connect(ray) -> None:
    """Join the cluster at $RAY_ADDRESS, or start a Ray on this machine when it is unset.

    An address nothing answers at fails here in one line: ray.init itself retries for minutes.
    """
    if ray.is_initialized():  # a Ray this process has joined already (a test's local one)
        return
    address = os.environ.get("RAY_ADDRESS", "")
    runtime_env = {"py_modules": [tlpipe]}  # the workers run this checkout's tlpipe
    if not address:
        ray.init(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
        return
    if address not in ("auto", "local"):
        check_reachable(address)
    ray.init(runtime_env=runtime_env, log_to_driver=False)


def check_reachable(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"RAY_ADDRESS = {address!r}: not host:port (or ray://host:port, auto); fix it or unset it")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise UserError(
            f"RAY_ADDRESS = {address!r}: no Ray cluster answers there ({error.strerror or error}); "
            "start one (ray start --head) or unset RAY_ADDRESS to run Ray on this machine"
        ) from None


def pool_size(resources: dict[str, float], nodes: int, settings: RayConfig) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for this cluster; refuses a pool it cannot hold.

    Without GPUs, one actor per node by default: TensorFlow already spreads one trunk over a node's cores.
    """
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    gpus_per_actor = settings.gpus_per_actor if gpus else 0
    actors = settings.actors or (int(gpus // gpus_per_actor) if gpus else nodes)
    if actors * gpus_per_actor > gpus:
        raise UserError(f"features.ray.actors = {actors} x gpus_per_actor = {gpus_per_actor:g}: "
                        f"the Ray cluster has {gpus:g} GPUs; lower either")
    if actors * settings.cpus_per_actor >= cpus:
        raise UserError(f"features.ray.actors = {actors} x cpus_per_actor = {settings.cpus_per_actor:g}: "
                        f"the Ray cluster has {cpus:g} CPUs and decoding needs some; lower either")
    return actors, settings.cpus_per_actor, gpus_per_actor
