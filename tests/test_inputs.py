"""tlpipe.data.inputs: batches decoded in worker processes hold the pixels the split stage validated, in order."""

import numpy as np

from builders import make_image_folder
from tlpipe.data.images import load_rgb
from tlpipe.data.inputs import image_batches
from tlpipe.data.shifts import shift_image

SIZE = 24


def test_batches_hold_the_serially_decoded_pixels_in_the_given_order(tmp_path):
    # 37 images in batches of 8: a short last batch; sizes and modes differ from SIZE and RGB.
    paths = make_image_folder(tmp_path, {"a": 20, "b": 17}, size=13)[::-1]
    expected = np.stack([load_rgb(tmp_path / path, SIZE) for path in paths]).astype(np.float32)

    batches = [batch.numpy() for batch in image_batches(paths, tmp_path, SIZE, 8)]

    assert [len(batch) for batch in batches] == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate(batches), expected)


def test_shifted_batches_hold_the_decoded_pixels_shifted(tmp_path):
    paths = make_image_folder(tmp_path, {"a": 5, "b": 4}, size=13)
    expected = np.stack([shift_image(load_rgb(tmp_path / path, SIZE), -3, 0) for path in paths]).astype(np.float32)

    shifted = np.concatenate([batch.numpy() for batch in image_batches(paths, tmp_path, SIZE, 4, shift=(-3, 0))])

    np.testing.assert_array_equal(shifted, expected)
    assert not np.array_equal(shifted, np.concatenate([batch.numpy() for batch in image_batches(paths, tmp_path, SIZE, 4)]))


def test_shuffled_batches_keep_each_image_with_its_label_and_reshuffle_each_pass(tmp_path):
    paths = make_image_folder(tmp_path, {"a": 12, "b": 12}, size=SIZE)
    labels = np.arange(len(paths))
    by_label = {label: load_rgb(tmp_path / path, SIZE) for label, path in zip(labels, paths)}
    dataset = image_batches(paths, tmp_path, SIZE, 5, labels=labels, shuffle_seed=3)

    orders = []
    for _ in range(2):
        order = []
        for images, batch_labels in dataset:
            for image, label in zip(images.numpy(), batch_labels.numpy()):
                np.testing.assert_array_equal(image, by_label[label])
                order.append(int(label))
        orders.append(order)
    assert sorted(orders[0]) == labels.tolist()
    assert orders[0] != orders[1] != labels.tolist()
    again = [int(label) for _, batch_labels in image_batches(paths, tmp_path, SIZE, 5, labels=labels, shuffle_seed=3)
             for label in batch_labels.numpy()]
    assert again == orders[0]  # the same order on every run


def test_a_relative_root_is_read_from_the_callers_working_directory(tmp_path, monkeypatch):
    # The worker processes started earlier (another test, another folder) keep their own working directory.
    first, second = tmp_path / "first", tmp_path / "second"
    make_image_folder(first, {"a": 2}, size=SIZE, first_seed=0)
    paths = make_image_folder(second, {"a": 2}, size=SIZE, first_seed=100)
    monkeypatch.chdir(first)
    next(iter(image_batches(["img_00000.png"], "a", SIZE, 1)))
    monkeypatch.chdir(second)

    decoded = next(iter(image_batches(paths, ".", SIZE, 2))).numpy()

    np.testing.assert_array_equal(decoded, np.stack([load_rgb(second / path, SIZE) for path in paths]))
