import os
import subprocess
import sys
from typing import Annotated, Literal, get_args, get_origin

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from builders import REPO, config_error, make_image_folder, tree, write_params
from tlpipe.config import MAX_SEED, Config, load_config
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
        ({"heads.gap.batch_size": 65_537}, "heads.gap.batch_size = 65537"),
        ({"heads.flatten.epochs": 100_001}, "heads.flatten.epochs = 100001"),
        ({"heads.flatten.hidden": [65_537]}, "heads.flatten.hidden.0 = 65537"),
        ({"dataset.max_files": 10**9 + 1}, "dataset.max_files = 1000000001"),
        ({"features.ray.gpus_per_actor": 17}, "features.ray.gpus_per_actor = 17"),
        ({"finetune.from_layer": 1001}, "finetune.from_layer = 1001: must be the name of the first trunk layer"),
        ({"runtime.devices": 1025}, "runtime.devices = 1025: must be auto, cpu, all or a number of devices (1 to 1024)"),
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


def unbounded_numbers(annotation, constraints=(), key="") -> list[str]:
    """The keys under `annotation` (a params.yaml section, or a field's type) whose int or float, also inside
    a list or a union, lacks a lower or an upper bound."""
    if get_origin(annotation) is Annotated:
        inner, *more = get_args(annotation)
        return unbounded_numbers(inner, [*constraints, *more], key)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [found for name, field in annotation.model_fields.items()
                for found in unbounded_numbers(field.annotation, field.metadata, f"{key}.{name}".lstrip("."))]
    if annotation in (int, float):  # not bool
        bounds = {type(bound) for constraint in constraints
                  for bound in (constraint.metadata if isinstance(constraint, FieldInfo) else [constraint])}
        return [] if bounds & {Ge, Gt} and bounds & {Le, Lt} else [key]
    if get_origin(annotation) is Literal:
        return []
    return [found for member in get_args(annotation) for found in unbounded_numbers(member, (), key)]


def test_the_bounds_check_finds_numbers_in_lists_and_unions():
    class Section(BaseModel):
        bounded: Annotated[int, Field(ge=0, le=9)]
        count: int
        sizes: list[Annotated[int, Field(gt=0)]]
        rate: Annotated[float, Field(le=1)] | None = None
        choice: Literal[1, 2] | Annotated[str, Field(min_length=1)] = 1
        flag: bool = False

    class Params(BaseModel):
        section: Section

    assert unbounded_numbers(Params) == ["section.count", "section.sizes", "section.rate"]


def test_every_number_in_the_params_has_a_lower_and_an_upper_bound():
    # A new field must say what its consumer accepts, so a value it refuses fails before any work starts.
    assert unbounded_numbers(Config) == []


@pytest.mark.parametrize("key", ["seed", "augment.seed"])
@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1])
def test_a_seed_outside_what_numpy_and_tensorflow_take_fails_in_one_line(tmp_path, key, seed):
    message = config_error(tmp_path, **{key: seed})
    assert f"{key} = {seed}: " in message and "\n" not in message


@pytest.mark.parametrize("key", ["seed", "augment.seed"])
def test_the_largest_seed_is_valid(tmp_path, key):
    config = load_config(write_params(tmp_path, **{key: MAX_SEED, "train.repeats": 1}))
    assert MAX_SEED in (config.seed, config.augment.seed)


def test_the_largest_seed_is_what_keras_takes():
    import keras

    keras.utils.set_random_seed(MAX_SEED)
    with pytest.raises(ValueError):
        keras.utils.set_random_seed(MAX_SEED + 1)


def test_every_training_run_needs_a_valid_seed(tmp_path):
    # Run r of train.repeats seeds with seed + r.
    assert load_config(write_params(tmp_path, **{"seed": MAX_SEED - 2, "train.repeats": 3})).seed == MAX_SEED - 2
    message = config_error(tmp_path, **{"seed": MAX_SEED - 1, "train.repeats": 3})
    assert f"seed = {MAX_SEED - 1}: with train.repeats = 3 the runs seed up to seed + 2, above {MAX_SEED}" in message


def test_fetch_checks_the_params_before_it_writes_anything(tmp_path):
    make_image_folder(tmp_path / "images", {"cat": 2, "dog": 2})
    write_params(tmp_path, **{"seed": -1, "dataset.url": "images", "dataset.sha256": ""})
    before = tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "tlpipe.stages.fetch"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["error: params.yaml: seed = -1: Input should be greater than or equal to 0"]
    assert tree(tmp_path) == before and not (tmp_path / "data").exists()
