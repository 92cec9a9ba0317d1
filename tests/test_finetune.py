"""The optional fine-tuning phase: what it unfreezes, what it must leave alone, and its stage."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

from builders import REPO, config_error, write_params, write_split_dataset
from tlpipe.stages import finetune
from tlpipe.config import HeadConfig, TrunkConfig, load_config
from tlpipe.errors import UserError
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.saving import load_classifier, save_classifier
from tlpipe.model.trunks import TRUNK_NAME, build_trunk, unfreeze_top

SIZE = 32
FROM_LAYER = "block_16_expand"  # MobileNetV2: 11 top layers, BatchNormalization ones among them
METRIC_KEYS = [
    "enabled", "accuracy", "macro_f1", "test_images", "trainable_params", "frozen_trainable_params",
    "first_unfrozen_layer", "epochs_run", "best_epoch", "best_val_loss", "best_val_accuracy", "train_seconds", "device", "strategy", "replicas",
]


def small_vgg16() -> keras.Model:
    """VGG16's first two blocks: block1_conv1, block1_conv2, block1_pool, block2_conv1, block2_conv2, block2_pool."""
    return build_trunk(TrunkConfig(name="vgg16", weights="none", image_size=SIZE, output_layer="block2_pool"))


@pytest.mark.parametrize("from_layer", [3, "block2_conv1"])
def test_from_layer_unfreezes_it_and_the_layers_above(from_layer):
    trunk = small_vgg16()
    assert unfreeze_top(trunk, from_layer, "vgg16") == "block2_conv1"
    assert [layer.trainable for layer in trunk.layers[2:]] == [False] * 3 + [True] * 3  # after input and preprocessing
    assert {weight.path.split("/")[0] for weight in trunk.trainable_weights} == {"block2_conv1", "block2_conv2"}


@pytest.mark.parametrize(
    ("from_layer", "expected"),
    [
        (7, "finetune.from_layer = 7: the vgg16 trunk has 6 layers"),
        ("block9_conv1", "finetune.from_layer = 'block9_conv1': no such layer in the vgg16 trunk; use a number of top "
                         "layers or a layer name such as block1_conv1, block1_conv2, block1_pool, block2_conv1"),
    ],
)
def test_a_from_layer_outside_the_trunk_fails_in_one_line(from_layer, expected):
    with pytest.raises(UserError, match="^params.yaml: ") as error:
        unfreeze_top(small_vgg16(), from_layer, "vgg16")
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"finetune.epochs": -1}, "finetune.epochs = -1"),
        ({"finetune.from_layer": 0}, "finetune.from_layer = 0"),
        ({"finetune.from_layer": ""}, "finetune.from_layer = ''"),
        ({"finetune.from_layer": 2.5}, "finetune.from_layer = 2.5: must be the name of the first trunk layer to unfreeze"),
        ({"finetune.learning_rate": 0}, "finetune.learning_rate = 0"),
        ({"finetune.batch_size": 0}, "finetune.batch_size = 0"),
        ({"finetune.augment": "maybe"}, "finetune.augment = 'maybe'"),
        ({"finetune.epochs": 3, "augment.layers": []}, "finetune.augment = true: needs at least one entry in augment.layers"),
    ],
)
def test_a_bad_finetune_param_fails_in_one_line(tmp_path, overrides, expected):
    message = config_error(tmp_path, **overrides)
    assert expected in message and "\n" not in message


def test_the_default_keeps_fine_tuning_off_and_no_frozen_stage_reads_its_params_or_outputs():
    assert load_config(REPO / "params.yaml").finetune.epochs == 0
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("fetch", "split", "features", "train"):
        stage = stages[name].get("do", stages[name])
        assert not any(str(param).startswith("finetune") for param in stage.get("params", [])), name
        assert not any("finetune" in str(dep) for dep in stage.get("deps", [])), name
    assert stages["finetune"]["foreach"] == ["flatten", "gap"]


def test_off_the_stage_copies_the_trained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/gap.keras").write_bytes(b"the trained model")
    (tmp_path / "models/gap.labels.txt").write_text("red\ngreen\n")
    monkeypatch.setattr(sys, "argv", ["finetune", "gap"])
    finetune.main()
    assert (tmp_path / "models/gap-finetuned.keras").read_bytes() == b"the trained model"
    assert (tmp_path / "models/gap-finetuned.labels.txt").read_text() == "red\ngreen\n"
    assert json.loads((tmp_path / "reports/finetune/gap/metrics.json").read_text()) == {"enabled": False}


def test_off_the_stage_does_not_import_tensorflow(tmp_path):
    # It runs for every head on every full run; importing TensorFlow alone takes about 8 s on 2 cores.
    write_params(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/flatten.keras").write_bytes(b"the trained model")
    (tmp_path / "models/flatten.labels.txt").write_text("red\ngreen\n")
    script = "import sys; from tlpipe.stages import finetune; finetune.main(); print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script, "flatten"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "models/flatten-finetuned.keras").read_bytes() == b"the trained model"


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> dict:
    """A fine-tuning run of the stage on a tiny colour dataset: MobileNetV2 (random init, 32 px) under a GAP head."""
    tmp_path = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["finetune", "gap"])
        return _fine_tune(tmp_path)


def _fine_tune(tmp_path) -> dict:
    write_split_dataset(tmp_path, {"train": 4, "val": 2, "test": 2}, size=SIZE)
    trunk_config = TrunkConfig(name="mobilenet_v2", weights="none", image_size=SIZE)
    head_config = HeadConfig(hidden=[16], dropout=0.2, learning_rate=1e-3, epochs=1, batch_size=8)
    write_params(tmp_path, trunk=trunk_config.model_dump(), **{"heads.gap": head_config.model_dump()}, finetune={
        "epochs": 2, "from_layer": FROM_LAYER, "learning_rate": 1e-3, "batch_size": 8, "augment": True,
    })
    trunk = build_trunk(trunk_config)
    model = assemble(trunk, build_head("gap", trunk.output_shape[1:], 3, head_config))
    (tmp_path / "models").mkdir()
    save_classifier(model, tmp_path / "models/gap.keras", ["blue", "green", "red"])
    finetune.main()
    return {
        "frozen": keras.models.load_model(tmp_path / "models/gap.keras"),
        "finetuned": keras.models.load_model(tmp_path / "models/gap-finetuned.keras"),
        "metrics": json.loads((tmp_path / "reports/finetune/gap/metrics.json").read_text()),
        "classes": load_classifier(tmp_path / "models/gap-finetuned.keras")[1],
    }


def test_the_finetuned_model_keeps_its_class_names(finetuned):
    assert finetuned["classes"] == ["blue", "green", "red"]


def test_fine_tuning_leaves_the_layers_below_from_layer_and_batchnorm_as_they_were(finetuned):
    frozen, tuned = (finetuned[name].get_layer(TRUNK_NAME) for name in ("frozen", "finetuned"))
    names = [layer.name for layer in frozen.layers]
    first = names.index(FROM_LAYER)
    for index, name in enumerate(names):
        before, after = frozen.get_layer(name).get_weights(), tuned.get_layer(name).get_weights()
        if index < first or isinstance(frozen.get_layer(name), keras.layers.BatchNormalization):
            # Bit for bit: the layers below, and every BatchNormalization layer's gamma, beta and moving statistics.
            for expected, actual in zip(before, after, strict=True):
                np.testing.assert_array_equal(actual, expected, err_msg=name)
    for name in (FROM_LAYER, "Conv_1"):
        assert not np.array_equal(frozen.get_layer(name).get_weights()[0], tuned.get_layer(name).get_weights()[0]), name


def test_fine_tuning_reports_both_phases(finetuned):
    metrics = finetuned["metrics"]
    assert list(metrics) == METRIC_KEYS
    assert metrics["enabled"] is True
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert metrics["test_images"] == 6
    assert metrics["frozen_trainable_params"] == finetuned["frozen"].get_layer("gap_head").count_params()
    trunk = finetuned["frozen"].get_layer(TRUNK_NAME)
    names = [layer.name for layer in trunk.layers]
    unfrozen = [layer for layer in trunk.layers[names.index(FROM_LAYER):] if not isinstance(layer, keras.layers.BatchNormalization)]
    assert metrics["trainable_params"] == metrics["frozen_trainable_params"] + sum(layer.count_params() for layer in unfrozen)
    assert metrics["first_unfrozen_layer"] == FROM_LAYER
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 2
    assert metrics["train_seconds"] > 0
