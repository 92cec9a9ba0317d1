"""Trunk precision: the auto choice from given timings, and bf16 features close to float32 ones."""

import keras
import numpy as np
import pytest

from tlpipe.config import TrunkConfig
from tlpipe.model.precision import build_with_precision, candidates, choose, cpu_flags, decided, dtype_policy, in_float32
from tlpipe.model.trunks import build_trunk


def test_choose_keeps_float32_unless_the_mixed_policy_wins_by_more_than_10_percent():
    assert choose({"float32": 1.0, "mixed_bfloat16": 0.5}) == "mixed_bfloat16"
    assert choose({"float32": 1.0, "mixed_bfloat16": 0.95}) == "float32"
    assert choose({"float32": 1.0, "mixed_bfloat16": 1.5}) == "float32"
    assert choose({"float32": 1.0}) == "float32"


def test_one_timing_each_decides_only_a_clear_case():
    assert decided({"float32": 1.0, "mixed_bfloat16": 0.5})  # VGG16 on a CPU with bf16
    assert decided({"float32": 1.0, "mixed_bfloat16": 1.6})  # slower by as much
    assert not decided({"float32": 1.0, "mixed_bfloat16": 0.8})  # close: time again
    assert not decided({"float32": 1.0, "mixed_bfloat16": 1.2})
    assert decided({"float32": 1.0})  # nothing to compare


def test_auto_times_each_candidate_and_keeps_the_chosen_model():
    config = TrunkConfig(name="mobilenet_v2", weights="none", image_size=32)
    batch = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    trunk, chosen, trials = build_with_precision(lambda: build_trunk(config), "auto", False, batch)
    assert set(trials) == set(candidates(False, cpu_flags())) and all(seconds > 0 for seconds in trials.values())
    assert chosen == choose(trials)
    assert {layer.dtype_policy.name for layer in trunk.layers if layer.weights} == {chosen}
    assert keras.config.dtype_policy().name == "float32"


def test_candidates_follow_the_device():
    assert candidates(on_gpu=True, flags=set()) == ["float32", "mixed_float16"]
    assert candidates(on_gpu=False, flags={"avx2", "amx_bf16"}) == ["float32", "mixed_bfloat16"]
    assert candidates(on_gpu=False, flags={"avx2", "avx512f"}) == ["float32"]


def test_a_fixed_setting_builds_under_that_policy_and_leaves_the_global_policy_alone():
    config = TrunkConfig(name="mobilenet_v2", weights="none", image_size=32)
    trunk, chosen, trials = build_with_precision(lambda: build_trunk(config), "mixed_bfloat16", False, None)
    assert (chosen, trials) == ("mixed_bfloat16", {})
    assert {layer.dtype_policy.name for layer in trunk.layers if layer.weights} == {"mixed_bfloat16"}
    assert keras.config.dtype_policy().name == "float32"


def test_bfloat16_vgg16_features_agree_with_float32_ones():
    # Measured on HED weights at 64 px: 0.39% mean relative difference. Random weights with
    # a fixed seed keep the test offline; bf16 keeps 8 bits of mantissa (0.4% per rounding).
    config = TrunkConfig(name="vgg16", weights="none", image_size=32, output_layer="block4_pool")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    reference = build_trunk(config)
    with dtype_policy("mixed_bfloat16"):
        mixed = build_trunk(config)
    mixed.set_weights(reference.get_weights())
    expected = reference.predict_on_batch(images)
    actual = np.asarray(mixed.predict_on_batch(images), dtype=np.float32)
    scale = np.abs(expected).mean()
    difference = np.abs(actual - expected) / scale
    assert difference.mean() < 0.01  # over all features
    assert difference.mean(axis=(1, 2, 3)).max() < 0.02  # the worst image


def test_in_float32_gives_the_same_trunk_computing_in_float32():
    config = TrunkConfig(name="vgg16", weights="none", image_size=32, output_layer="block2_pool")
    keras.utils.set_random_seed(0)
    reference = build_trunk(config)
    with dtype_policy("mixed_bfloat16"):
        mixed = build_trunk(config)
    mixed.set_weights(reference.get_weights())
    converted = in_float32(mixed)
    assert {layer.dtype_policy.name for layer in converted.layers} == {"float32"}
    assert [layer.name for layer in converted.layers] == [layer.name for layer in mixed.layers]
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(converted.predict_on_batch(images), reference.predict_on_batch(images), rtol=1e-5, atol=1e-5)
    assert in_float32(reference) is reference
