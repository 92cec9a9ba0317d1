import pytest

from builders import REPO, write_params
from tlpipe.config import load_config
from tlpipe.errors import UserError


def test_the_repo_params_are_valid():
    config = load_config(REPO / "params.yaml")
    assert config.trunk.name in ("vgg16", "mobilenet", "mobilenet_v2")
    assert config.head("flatten").epochs > 0 and config.head("gap").epochs > 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"heads.gap.dropout": 1.5}, "heads.gap.dropout = 1.5"),
        ({"trunk.name": "resnet50"}, "trunk.name = 'resnet50'"),
        ({"trunk.weights": "weights.bin"}, "trunk.weights = 'weights.bin'"),
        ({"trunk.name": "mobilenet_v2", "trunk.weights": "hed"}, "HED weights exist for vgg16 only"),
        ({"trunk.image_size": 16}, "trunk.image_size = 16"),
        ({"split.val": 0.5, "split.test": 0.5}, "split.val + split.test = 1"),
        ({"dataset.sha256": "abc"}, "dataset.sha256 = 'abc'"),
        ({"dataset.max_pixels": 0}, "dataset.max_pixels = 0"),
        ({"split.max_skipped_fraction": 1.5}, "split.max_skipped_fraction = 1.5"),
        ({"heads.flatten.hidden": [256, -1]}, "heads.flatten.hidden.1 = -1"),
        ({"heads.flatten.learning_rat": 0.1}, "heads.flatten.learning_rat: unknown key"),
        ({"seed": "forty-two"}, "seed = 'forty-two'"),
    ],
)
def test_a_bad_value_fails_in_one_line_naming_key_and_value(tmp_path, overrides, expected):
    path = write_params(tmp_path, **overrides)
    with pytest.raises(UserError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_a_missing_key_is_named(tmp_path):
    path = write_params(tmp_path)
    path.write_text(path.read_text().replace("  test: 0.15\n", ""))
    with pytest.raises(UserError, match=r"split\.test: missing"):
        load_config(path)


def test_a_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(UserError, match="not found; run from the project root"):
        load_config(tmp_path / "params.yaml")
