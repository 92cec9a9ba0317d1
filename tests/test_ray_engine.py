"""features.engine: ray: the trunk pass on a real (local) Ray gives the local engine's cache."""

import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import ray

from builders import REPO, config_error, write_params, write_split_dataset
from tlpipe.cache import load_meta, load_split
from tlpipe.config import RayConfig
from tlpipe.errors import UserError
from tlpipe.ray_features import RayTrunkPass, Rows, import_ray, pool_size
from tlpipe.stages import features

SIZE = 32
# Batches of 4 over splits of 9, 6 and 6 rows: Ray's batches straddle the splits' boundaries.
PARAMS = {"trunk.name": "vgg16", "trunk.weights": "none", "trunk.image_size": SIZE, "trunk.output_layer": "block3_pool",
          "trunk.batch_size": 4, "trunk.precision": "float32"}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_ray_engine_writes_the_local_engines_cache(tmp_path, monkeypatch, local_ray):
    monkeypatch.chdir(tmp_path)
    write_split_dataset(tmp_path, {"train": 3, "val": 2, "test": 2}, size=SIZE)
    write_params(tmp_path, **PARAMS)
    features.main()
    local = {split: tuple(np.array(part) for part in load_split(split)) for split in ("train", "val", "test")}

    write_params(tmp_path, **PARAMS, **{"features.engine": "ray", "features.ray.actors": 1})
    features.main()
    for split, (local_x, local_y) in local.items():
        ray_x, ray_y = load_split(split)
        assert ray_x.dtype == np.float16 and ray_x.shape == local_x.shape
        np.testing.assert_allclose(ray_x.astype(np.float32), local_x.astype(np.float32), rtol=1e-2, atol=1e-3)
        np.testing.assert_array_equal(ray_y, local_y)
    assert not np.array_equal(local["val"][0], local["test"][0])  # distinct images: a mix-up would show
    meta = load_meta()
    assert meta["engine"] == "ray" and meta["device"].startswith("Ray: 1 trunk actors")
    assert json.loads((tmp_path / "reports/features.json").read_text())["trunk_images"] == 21


def test_decoding_runs_in_its_own_tasks_ahead_of_the_trunk(tmp_path, local_ray):
    manifest = write_split_dataset(tmp_path, {"train": 2}, size=SIZE)
    trunk = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 1)])
    ray_pass = RayTrunkPass(trunk, tmp_path / "data/raw", SIZE, 4, RayConfig(actors=1), seed=0)
    stats = ray_pass.dataset(manifest["path"]).materialize().stats()
    assert "MapBatches(decode_images)" in stats and "decode_images)->" not in stats  # not fused into the actors


def test_an_image_that_no_longer_decodes_is_one_line_naming_it(tmp_path, local_ray):
    manifest = write_split_dataset(tmp_path, {"train": 3}, size=SIZE)
    damaged = tmp_path / "data/raw" / manifest["path"].iloc[5]
    damaged.write_bytes(b"not an image")
    trunk = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 1)])
    ray_pass = RayTrunkPass(trunk, tmp_path / "data/raw", SIZE, 4, RayConfig(actors=1), seed=0)
    with pytest.raises(UserError) as error:
        list(ray_pass.feature_maps(manifest["path"]).take(len(manifest)))
    assert str(error.value).startswith(f"{damaged}: no longer a readable image (UnidentifiedImageError)")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_ray_address_fails_in_one_line_and_quickly(tmp_path):
    write_split_dataset(tmp_path, {"train": 1, "val": 1, "test": 1}, size=SIZE)
    write_params(tmp_path, **PARAMS, **{"features.engine": "ray"})
    address = f"127.0.0.1:{closed_port()}"
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tlpipe.stages.features"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: RAY_ADDRESS = '{address}': no Ray cluster answers there") and "unset RAY_ADDRESS" in last
    assert seconds < 60  # ray.init alone would retry for minutes


def test_a_missing_ray_fails_in_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what Python does for a package that is not installed
    with pytest.raises(UserError, match=r"^features\.engine = ray: Ray is not installed; pip install .*'\.\[ray\]'$"):
        import_ray()


@pytest.mark.parametrize(
    ("resources", "nodes", "settings", "expected"),
    [
        ({"CPU": 32, "GPU": 4}, 2, {}, (4, 1, 1)),                       # one actor per GPU
        ({"CPU": 32, "GPU": 4}, 2, {"gpus_per_actor": 0.5}, (8, 1, 0.5)),  # two per GPU
        ({"CPU": 48}, 3, {}, (3, 1, 0)),                                  # no GPUs: one per node
        ({"CPU": 2}, 1, {"actors": 2, "cpus_per_actor": 0.5}, (2, 0.5, 0)),
    ],
)
def test_the_actor_pool_follows_the_cluster(resources, nodes, settings, expected):
    assert pool_size(resources, nodes, RayConfig(**settings)) == expected


@pytest.mark.parametrize(
    ("resources", "settings", "message"),
    [
        ({"CPU": 32, "GPU": 2}, {"actors": 3}, "features.ray.actors = 3 x gpus_per_actor = 1: the Ray cluster has 2 GPUs"),
        ({"CPU": 2}, {"actors": 2}, "features.ray.actors = 2 x cpus_per_actor = 1: the Ray cluster has 2 CPUs and decoding needs some"),
    ],
)
def test_a_pool_the_cluster_cannot_hold_is_refused_in_one_line(resources, settings, message):
    with pytest.raises(UserError, match="^" + message.replace(".", r"\.")):
        pool_size(resources, 1, RayConfig(**settings))


def test_rows_are_taken_split_by_split_across_batch_boundaries():
    rows = Rows(iter(np.split(np.arange(10), [4, 8])))
    assert [np.concatenate(list(rows.take(count))).tolist() for count in (3, 5, 2)] == [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9]]


def test_the_ray_engine_refuses_augmented_views_in_one_line(tmp_path):
    message = config_error(tmp_path, **{"features.engine": "ray", "augment.views": 2})
    assert "features.engine = ray: needs augment.views = 0 (it is 2)" in message and "\n" not in message
