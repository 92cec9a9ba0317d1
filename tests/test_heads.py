"""Head parameter counts against the closed form, on real trunk output shapes."""

import pytest

from tlpipe.config import HeadConfig, TrunkConfig
from tlpipe.model.heads import assemble, build_head
from tlpipe.model.trunks import build_trunk


def closed_form(head: str, feature_shape: tuple[int, int, int], num_classes: int, hidden: list[int]) -> int:
    """Flatten feeds H*W*C values to the first Dense layer, GAP feeds C; each Dense(k) on n inputs has n*k + k."""
    height, width, channels = feature_shape
    inputs = height * width * channels if head == "flatten" else channels
    total = 0
    for units in [*hidden, num_classes]:
        total += inputs * units + units
        inputs = units
    return total


def head_config(hidden: list[int]) -> HeadConfig:
    return HeadConfig(hidden=hidden, dropout=0.2, learning_rate=1e-3, epochs=1, batch_size=8)


def test_vgg16_at_224_px_with_5_classes():
    trunk = build_trunk(TrunkConfig(name="vgg16", weights="none", image_size=224))
    feature_shape = trunk.output_shape[1:]
    assert feature_shape == (7, 7, 512)
    assert build_head("flatten", feature_shape, 5, head_config([])).count_params() == 125_445
    assert build_head("gap", feature_shape, 5, head_config([])).count_params() == 2_565


@pytest.mark.parametrize("head", ["flatten", "gap"])
@pytest.mark.parametrize(
    ("trunk_name", "image_size", "output_layer", "num_classes", "hidden"),
    [
        ("vgg16", 64, "block4_pool", 10, [256]),
        ("vgg16", 96, "", 3, [128, 64]),
        ("mobilenet", 128, "", 7, []),
        ("mobilenet_v2", 96, "", 4, [32]),
    ],
)
def test_head_params_equal_the_closed_form(head, trunk_name, image_size, output_layer, num_classes, hidden):
    trunk = build_trunk(TrunkConfig(name=trunk_name, weights="none", image_size=image_size, output_layer=output_layer))
    feature_shape = trunk.output_shape[1:]
    model = build_head(head, feature_shape, num_classes, head_config(hidden))
    assert model.count_params() == closed_form(head, feature_shape, num_classes, hidden)


def test_the_full_model_trains_only_the_head():
    trunk = build_trunk(TrunkConfig(name="mobilenet_v2", weights="none", image_size=32))
    head = build_head("gap", trunk.output_shape[1:], 3, head_config([16]))
    model = assemble(trunk, head)
    trainable = sum(int(weight.numpy().size) for weight in model.trainable_weights)
    assert trainable == head.count_params()
    assert model.count_params() == trunk.count_params() + head.count_params()
