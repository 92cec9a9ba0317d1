"""Head training sped up (fused Adam, one compiled call per epoch) is the same training: same batches, same maths."""

import keras
import numpy as np
import pytest

from tlpipe.cache import MEMORY_BUDGET_BYTES, FeatureBatches, write_feature_maps, write_labels, features_path
from tlpipe.config import HeadConfig
from tlpipe.model.fitting import FusedAdam, fit_classifier
from tlpipe.model.heads import build_head

SHAPE = (2, 2, 8)
CLASSES = 3
EPOCHS = 4
HEAD = HeadConfig(hidden=[16], dropout=0.2, learning_rate=1e-2, epochs=EPOCHS, batch_size=8)


@pytest.fixture
def cache(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in [("train", 45), ("val", 13)]:  # 45 rows: a short last batch
        features = rng.normal(size=(count, *SHAPE)).astype(np.float16)
        write_feature_maps([features], features_path(tmp_path, split), features.shape)
        write_labels(tmp_path, split, rng.integers(0, CLASSES, count).astype(np.int32))
    return tmp_path


class ReadByKeras(keras.utils.PyDataset):
    """FeatureBatches as Keras reads any PyDataset (fit_classifier feeds a FeatureBatches through its tf.data pipeline)."""

    def __init__(self, batches: FeatureBatches):
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()


def trained(cache, steps_per_epoch: bool, seed=3, read_by_keras=False, memory_budget=MEMORY_BUDGET_BYTES):
    keras.utils.set_random_seed(seed)
    batches = FeatureBatches("train", HEAD.batch_size, shuffle_seed=seed, directory=cache, memory_budget=memory_budget)
    val = FeatureBatches("val", HEAD.batch_size, directory=cache, memory_budget=memory_budget)
    if read_by_keras:
        batches, val = ReadByKeras(batches), ReadByKeras(val)
    head = build_head("flatten", SHAPE, CLASSES, HEAD)
    fit = fit_classifier(head, batches, val, learning_rate=HEAD.learning_rate,
                         epochs=EPOCHS, patience=None, steps_per_epoch=len(batches) if steps_per_epoch else None,
                         fused_adam=True, verbose=0)
    return head.get_weights(), fit


def test_fused_adam_updates_as_keras_adam():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5, 4)).astype(np.float32)
    gradients = rng.normal(size=(6, 5, 4)).astype(np.float32)
    results = []
    for optimizer in (keras.optimizers.Adam(1e-2), FusedAdam(1e-2)):
        variable = keras.Variable(start)
        for gradient in gradients:
            optimizer.apply_gradients([(gradient, variable)])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(results[1], start)


def test_one_compiled_call_per_epoch_trains_as_one_per_step(cache):
    per_step, per_step_fit = trained(cache, steps_per_epoch=False)
    per_epoch, per_epoch_fit = trained(cache, steps_per_epoch=True)
    for step_weight, epoch_weight in zip(per_step, per_epoch):
        np.testing.assert_array_equal(epoch_weight, step_weight)
    assert per_epoch_fit.best_val_loss == per_step_fit.best_val_loss


@pytest.mark.parametrize("memory_budget", [MEMORY_BUDGET_BYTES, 0], ids=["held", "from_disk"])
def test_feature_batches_train_as_keras_reading_them_would(cache, memory_budget):
    # fit_classifier feeds them through FeatureBatches.dataset: the same batches in the same order, epoch by epoch.
    by_keras, by_keras_fit = trained(cache, steps_per_epoch=True, read_by_keras=True)
    by_dataset, by_dataset_fit = trained(cache, steps_per_epoch=True, memory_budget=memory_budget)
    for keras_weight, dataset_weight in zip(by_keras, by_dataset):
        np.testing.assert_array_equal(dataset_weight, keras_weight)
    assert by_dataset_fit.best_val_loss == by_keras_fit.best_val_loss
