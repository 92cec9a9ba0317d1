"""runtime.devices and tf.distribute: the features pass and fine-tuning on several replicas, without a GPU.

The CPU is split into 2 logical devices (tf.config.set_logical_device_configuration) in a
subprocess, where MirroredStrategy runs the stages on 2 replicas; the same split in this
process would last for every later test. Two local worker processes with a TF_CONFIG on
127.0.0.1 run fine-tuning under MultiWorkerMirroredStrategy.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from builders import config_error, write_params, write_split_dataset
from tlpipe import runtime
from tlpipe.config import HeadConfig, TrunkConfig
from tlpipe.errors import UserError
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.saving import save_classifier
from tlpipe.model.trunks import build_trunk
from tlpipe.stages import features

SIZE = 32
# VGG16's first two blocks, random init: a small trunk that still has convolutions and pooling.
TRUNK = TrunkConfig(name="vgg16", weights="none", image_size=SIZE, output_layer="block2_pool", precision="float32",
                    batch_size=5)  # val and test (6 images): batches of 5 and 1, so one replica gets no image
HEAD = HeadConfig(hidden=[8], dropout=0.0, learning_rate=1e-3, epochs=1, batch_size=4)
FINETUNE = {"epochs": 1, "from_layer": 3, "learning_rate": 1e-3, "batch_size": 6, "augment": False}
# `python -m <stage>` on 2 logical CPU devices.
ON_TWO_CPUS = [sys.executable, "-c", (
    "import runpy, sys; import tensorflow as tf; "
    "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0], "
    "[tf.config.LogicalDeviceConfiguration()] * 2); "
    "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')"
)]


def start(project: Path, command: list[str], env: dict | None = None) -> subprocess.Popen:
    # No GPU even where there is one: the subprocesses test the CPU devices they are given.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", **(env or {})}
    return subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny split dataset (4 / 2 / 2 images per class), params for it, and the frozen model fine-tuning starts from."""
    root = tmp_path_factory.mktemp("distribute")
    write_split_dataset(root, {"train": 4, "val": 2, "test": 2}, size=SIZE)
    write_params(root, trunk=TRUNK.model_dump(), **{"heads.gap": HEAD.model_dump()}, finetune=FINETUNE,
                 augment={"views": 0}, runtime={"devices": "all"})
    trunk = build_trunk(TRUNK)
    save_classifier(assemble(trunk, build_head("gap", trunk.output_shape[1:], 3, HEAD)), root / "models/gap.keras",
                    ["blue", "green", "red"])
    return root


def test_mirrored_features_on_two_replicas_match_the_single_device_cache(project, tmp_path, monkeypatch):
    single = tmp_path / "single"
    shutil.copytree(project, single)
    write_params(single, base=project / "params.yaml", **{"runtime.devices": "auto"})
    monkeypatch.chdir(single)
    features.main()  # this process: one CPU device, the default strategy

    finish(start(project, [*ON_TWO_CPUS, "tlpipe.stages.features"]))

    assert {key: read_json(single / "reports/features.json")[key] for key in ("strategy", "replicas")} == {
        "strategy": "DefaultDistributionStrategy", "replicas": 1}
    assert {key: read_json(project / "reports/features.json")[key] for key in ("strategy", "replicas")} == {
        "strategy": "MirroredStrategy", "replicas": 2}
    for split in ("train", "val", "test"):
        mirrored, expected = (np.load(root / f"data/features/{split}_x.npy") for root in (project, single))
        assert mirrored.shape == expected.shape == (12 if split == "train" else 6, 8, 8, 128)
        np.testing.assert_allclose(mirrored.astype(np.float32), expected.astype(np.float32), rtol=1e-2, atol=1e-2)
        assert np.abs(expected).max() > 1  # real feature maps, not zeros


def test_mirrored_fine_tuning_runs_on_two_replicas(project):
    finish(start(project, [*ON_TWO_CPUS, "tlpipe.stages.finetune", "gap"]))
    metrics = read_json(project / "reports/finetune/gap/metrics.json")
    assert (metrics["enabled"], metrics["strategy"], metrics["replicas"], metrics["test_images"]) == (True, "MirroredStrategy", 2, 6)
    frozen, tuned = (keras.models.load_model(project / f"models/{name}.keras") for name in ("gap", "gap-finetuned"))
    assert not np.array_equal(frozen.get_layer("gap_head").get_weights()[0], tuned.get_layer("gap_head").get_weights()[0])


def test_a_finetune_batch_that_does_not_split_evenly_across_the_replicas_fails_in_one_line(project, tmp_path):
    checkout = shutil.copytree(project, tmp_path / "project")
    write_params(checkout, base=project / "params.yaml", **{"finetune.batch_size": 3})
    process = start(checkout, [*ON_TWO_CPUS, "tlpipe.stages.finetune", "gap"])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 2
    assert output.splitlines()[-1] == ("error: params.yaml: finetune.batch_size = 3: the global batch, split across 2 "
                                       "replicas (runtime.devices); make it a multiple of 2")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_fine_tune_one_model_under_multi_worker_mirrored_strategy(project, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):  # each worker in its own checkout, as on separate machines
        checkout = shutil.copytree(project, tmp_path / f"worker{index}")
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = [sys.executable, "-m", "tlpipe.stages.finetune", "gap"]
        workers.append((checkout, start(checkout, command, env={"TF_CONFIG": tf_config})))
    for _, process in workers:
        finish(process)
    models = []
    for checkout, _ in workers:
        metrics = read_json(checkout / "reports/finetune/gap/metrics.json")
        assert (metrics["strategy"], metrics["replicas"], metrics["test_images"]) == ("MultiWorkerMirroredStrategy", 2, 6)
        models.append(keras.models.load_model(checkout / "models/gap-finetuned.keras"))
    # Synchronous training: the gradients are all-reduced, so both workers end with the same weights.
    for first, second in zip(*(model.get_weights() for model in models), strict=True):
        np.testing.assert_array_equal(first, second)
    frozen = keras.models.load_model(project / "models/gap.keras")
    assert not np.array_equal(frozen.get_layer("gap_head").get_weights()[0], models[0].get_layer("gap_head").get_weights()[0])


def test_asking_for_more_devices_than_the_machine_shows_fails_in_one_line():
    visible = len(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))
    with pytest.raises(UserError, match=rf"^params.yaml: runtime.devices = {visible + 1}: this machine shows {visible} "):
        runtime.strategy(visible + 1)


@pytest.mark.parametrize("devices", ["gpu", 0, -1, 1.5])
def test_a_bad_devices_setting_fails_in_one_line(tmp_path, devices):
    message = config_error(tmp_path, **{"runtime.devices": devices})
    assert f"runtime.devices = {devices!r}: must be auto, cpu, all or a number of devices (1 to 1024)" in message
    assert "\n" not in message
