"""Data: the split manifest, image decoding, the tf.data image input, augmentation, and the fetch and split logic."""
